"""Deterministic Verilog export of the IMNPU blocks for the named configurations.

``python -m imnpu_sim.export [--config NAME ...] [--block tile]`` writes
``build/verilog/<config>/<block>.v``. A file is rewritten only when the RTL
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


#: block name -> (Verilog module name, constructor from a config)
BLOCKS = {
    "tile": ("dimc_tile", _tile),
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
    from amaranth.back import verilog
    from imnpu_hw import get_config

    config = get_config(config_name)
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; choose one of {', '.join(BLOCKS)}")
    module, build = BLOCKS[block]
    variant = config_name if fault is None else f"{config_name}-fault-{fault}"
    out_dir = Path(out_dir) if out_dir else VERILOG / variant
    path = out_dir / f"{module}.v"
    stamp = path.with_suffix(".sha256")
    key = hashlib.sha256(repr((rtl_fingerprint(), config.as_dict(), block, fault))
                         .encode()).hexdigest()
    if path.exists() and stamp.exists() and stamp.read_text() == key:
        return path
    log(f"[export] {block} ({variant}) -> {path}")
    text = verilog.convert(build(config, fault), name=module, emit_src=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp.write_text(key)
    return path


def main(argv=None):
    from imnpu_hw import CONFIGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--block", nargs="+", default=list(BLOCKS), choices=list(BLOCKS))
    args = parser.parse_args(argv)
    for config in args.config:
        for block in args.block:
            print(export(config, block))
    return 0


if __name__ == "__main__":
    sys.exit(main())
