"""Performance report: ``python -m imnpu_sim.perf [--config NAME ...]`` (``make perf``).

Prints, per named configuration, the tile's and the whole IMNPU's peak
multiply-accumulates per cycle at each lane width (``C * T * P * W / L``,
ARCHITECTURE.md section 4), then runs the tile throughput test on Verilator
and prints the cycles it measured on the RTL.
"""

import argparse
import json
import sys

from .paths import PERF


def peak_table(configs):
    lines = ["peak MAC/cycle (C*T*P*W/L)",
             f"{'config':8s} {'C':>2s} {'T':>2s} {'R':>4s} {'W':>5s} {'P':>2s} "
             f"{'tile L=1':>9s} {'L=2':>6s} {'L=4':>6s} {'IMNPU L=1':>10s} {'L=2':>7s} {'L=4':>7s}"]
    for cfg in configs:
        tile = [cfg.peak_macs_per_cycle(lane, clusters=1) // cfg.T for lane in (1, 2, 4)]
        full = [cfg.peak_macs_per_cycle(lane) for lane in (1, 2, 4)]
        lines.append(f"{cfg.name:8s} {cfg.C:2d} {cfg.T:2d} {cfg.R:4d} {cfg.W:5d} {cfg.P:2d} "
                     f"{tile[0]:9d} {tile[1]:6d} {tile[2]:6d} {full[0]:10d} {full[1]:7d} {full[2]:7d}")
    return "\n".join(lines)


def main(argv=None):
    from imnpu_hw import CONFIGS
    from .cocotb_run import run_cocotb

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
    args = parser.parse_args(argv)
    configs = [CONFIGS[name] for name in args.config]

    print(peak_table(configs))
    print()
    rows = []
    for cfg in configs:
        tests, failed = run_cocotb(args.sim, cfg.name, "imnpu_tb.dimc_tile_tests",
                                   testcase="throughput", waves=False)
        if failed:
            print(f"throughput test FAILED on {cfg.name}")
            return 1
        rows.append(json.loads((PERF / f"tile_throughput_{cfg.name}_{args.sim}.json").read_text()))
    print(f"tile throughput measured on the RTL ({args.sim})")
    print(f"{'config':8s} {'commands':>8s} {'accept cycles':>13s} {'total cycles':>12s} "
          f"{'latency':>7s} {'rows/cycle':>10s} {'MAC/cycle L=1':>13s}")
    for row in rows:
        cfg = CONFIGS[row["config"]]
        macs = row["rows_per_cycle"] * cfg.W
        print(f"{row['config']:8s} {row['commands']:8d} {row['cycles_accept']:13d} "
              f"{row['cycles_total']:12d} {row['latency']:7d} {row['rows_per_cycle']:10.2f} "
              f"{macs:13.0f}")
    print(f"\n(measurements also in {PERF}/tile_throughput_*.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
