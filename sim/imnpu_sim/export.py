"""Deterministic Verilog export of the IMNPU blocks for the named configurations.

``python -m imnpu_sim.export [--config NAME ...] [--block tile]`` writes
``build/verilog/<config>/<block>.v``; ``--layouts`` prints every port and
the bit fields of its packed payload instead. A file is rewritten only when the RTL
sources or the parameters changed (a hash is kept beside it), so simulator
builds stay up to date without rebuilding.
"""

import argparse
import hashlib
import sys
from pathlib import Path

from .paths import VERILOG

__all__ = ["BLOCKS", "export", "rtl_fingerprint"]


def _tile(config, fault=None):
    from imnpu_hw.macro import DIMCTile
    return DIMCTile(**config.tile_params(), _fault=fault)


def _cluster(config, fault=None):
    from imnpu_hw.cluster.cluster import Cluster
    if fault is not None:
        raise ValueError("the cluster has no fault variants")
    return Cluster(tiles=config.T, rows=config.R, width=config.W, parallel=config.P,
                   act_bytes=config.A, act_word=32, tile_depth=config.pipeline_depth)


#: Verilog module of the clusters inside the exported top level
TOP_CLUSTER_MODULE = "imnpu_cluster"
#: the line between the cluster's Verilog and the top level's in ``imnpu.v``
TOP_MARKER = "\n// ---- IMNPU top level: instantiates imnpu_cluster C times ----\n"


def _top(config, fault=None):
    from imnpu_hw.top import IMNPU
    if fault is not None:
        raise ValueError("the top level has no fault variants")
    return IMNPU(config, cluster_module=TOP_CLUSTER_MODULE)


def _convert(block, config, fault, module):
    """Verilog text of ``block``. The top level instantiates one cluster module
    ``C`` times: the cluster is elaborated once and its Verilog put first."""
    from amaranth.back import verilog
    top = BLOCKS[block][1](config, fault)
    text = verilog.convert(top, name=module, emit_src=False)
    if block == "top":
        cluster = verilog.convert(top.new_cluster(), name=TOP_CLUSTER_MODULE, emit_src=False)
        text = cluster + TOP_MARKER + text
    return text


#: block name -> (Verilog module name, constructor from a config)
BLOCKS = {
    "tile": ("dimc_tile", _tile),
    "cluster": ("cluster", _cluster),
    "top": ("imnpu", _top),
}


#: configurations exported by default: the seed cluster (64 tiles' worth of
#: datapath) takes minutes to elaborate; export it by naming it (--config seed)
DEFAULT_CONFIGS = {
    "tile": ("tiny", "fpga", "seed"),
    "cluster": ("tiny", "fpga"),
    "top": ("tiny", "fpga"),
}


def rtl_fingerprint():
    """Hash of every RTL source file: a changed file means a new export."""
    import imnpu_hw
    root = Path(imnpu_hw.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def export(config_name, block="tile", fault=None, out_dir=None, log=print):
    """Write the Verilog of ``block`` in configuration ``config_name``; return its path.

    ``fault`` builds a deliberately broken tile (mutation checks only); its
    Verilog goes to ``build/verilog/<config>-fault-<fault>/``.
    """
    from imnpu_hw import get_config

    config = get_config(config_name)
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; choose one of {', '.join(BLOCKS)}")
    module, build = BLOCKS[block]
    variant = config_name if fault is None else f"{config_name}-fault-{fault}"
    out_dir = Path(out_dir) if out_dir else VERILOG / variant
    path = out_dir / f"{module}.v"
    stamp = path.with_suffix(".sha256")
    # this file decides how blocks are converted: it is part of the key too
    key = hashlib.sha256(repr((rtl_fingerprint(), Path(__file__).read_bytes(), config.as_dict(),
                               block, fault)).encode()).hexdigest()
    if path.exists() and stamp.exists() and stamp.read_text() == key:
        return path
    log(f"[export] {block} ({variant}) -> {path}")
    text = _convert(block, config, fault, module)
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp.write_text(key)
    return path


def port_layouts(config_name, block="tile"):
    """Text table of every packed payload port of ``block``: field, bit offset, width."""
    from amaranth.lib import data
    from amaranth.lib.wiring import In
    from imnpu_hw import get_config

    component = BLOCKS[block][1](get_config(config_name))
    lines = [f"{BLOCKS[block][0]} ({config_name}): packed payload ports"]
    for path, member, value in component.signature.flatten(component):
        name = "__".join(map(str, path))
        direction = "input " if member.flow == In else "output"
        if isinstance(value, data.View):
            layout = value.shape()
            lines.append(f"  {direction} {name} [{layout.size - 1}:0]")
            for field_name, field in layout:
                lo, hi = field.offset, field.offset + field.width - 1
                lines.append(f"      [{hi:>4d}:{lo:<4d}] {field_name}: {field.shape!r}")
        else:
            lines.append(f"  {direction} {name} [{len(value) - 1}:0]")
    return "\n".join(lines)


def descriptor_table():
    """Markdown table of the layer descriptor: word, bits, field, meaning of codes."""
    from amaranth.lib import data
    from imnpu_hw.cluster.descriptor import Descriptor

    rows = ["| word | bits | field |", "| --- | --- | --- |"]

    def walk(layout, base, prefix):
        for name, field in layout:
            if name.startswith("_"):
                continue
            shape = field.shape
            offset = base + field.offset
            if isinstance(shape, data.StructLayout) or hasattr(shape, "_AggregateMeta__layout"):
                walk(data.Layout.cast(shape), offset, f"{prefix}{name}.")
                continue
            width = field.width
            word, lo = divmod(offset, 32)
            hi = lo + width - 1
            kind = getattr(shape, "__name__", "")
            rows.append(f"| {word} | {hi}:{lo} | `{prefix}{name}`{f' ({kind})' if kind else ''} |")

    walk(Descriptor, 0, "")
    return "\n".join(rows)


def main(argv=None):
    from imnpu_hw import CONFIGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", choices=list(CONFIGS),
                        help="configurations (default: each block's DEFAULT_CONFIGS)")
    parser.add_argument("--block", nargs="+", default=list(BLOCKS), choices=list(BLOCKS))
    parser.add_argument("--layouts", action="store_true",
                        help="print the ports and their payload bit fields instead")
    parser.add_argument("--descriptor", action="store_true",
                        help="print the layer descriptor format (Markdown) instead")
    args = parser.parse_args(argv)
    if args.descriptor:
        print(descriptor_table())
        return 0
    if args.layouts:
        for block in args.block:
            for config in args.config or DEFAULT_CONFIGS[block]:
                print(port_layouts(config, block))
        return 0
    for block in args.block:
        for config in args.config or DEFAULT_CONFIGS[block]:
            print(export(config, block))
    return 0


if __name__ == "__main__":
    sys.exit(main())
