"""Performance report: ``python -m imnpu_sim.perf [--config NAME ...]`` (``make perf``).

Prints, per named configuration, the tile's and the whole IMNPU's peak
multiply-accumulates per cycle at each lane width (``C * T * P * W / L``,
ARCHITECTURE.md section 4), then runs the tile throughput test on Verilator
and prints the cycles it measured on the RTL; then runs representative layers
through the cluster (``tiny`` and ``fpga``) and prints per-layer cycles, the
analytical model's prediction and the MAC utilisation
(useful MACs / (cycles * peak)).
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
                                   testcase="throughput", waves=False, quiet=True)
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
    print()
    for cfg in configs:
        if cfg.name == "seed":
            continue    # the seed cluster is exported, not simulated here (size)
        tests, failed = run_cocotb(args.sim, cfg.name, "imnpu_tb.cluster_tests",
                                   testcase="utilisation", block="cluster", waves=False,
                                   quiet=True)
        if failed:
            print(f"cluster utilisation run FAILED on {cfg.name}")
            return 1
        cases = json.loads((PERF / f"cluster_layers_{cfg.name}_{args.sim}.json").read_text())
        print(f"cluster layers on {cfg.name} (T={cfg.T}, R={cfg.R}, W={cfg.W}, P={cfg.P}), "
              f"cycles measured on the RTL ({args.sim}) and predicted by imnpu_sw.perf_model")
        print(f"  {'layer':24s} {'in (HxWxC)':>12s} {'out C':>5s} {'L':>2s} {'nch':>3s} {'cpt':>3s} "
              f"{'passes':>6s} {'cycles':>7s} {'model':>7s} {'MACs':>9s} {'util':>6s}")
        for c in cases:
            f, m = c["fields"], c["mapping"]
            shape = f"{f['in_h']}x{f['in_w']}x{f['cin']}"
            print(f"  {c['name']:24s} {shape:>12s} {f['cout']:5d} {m['lane']:2d} {m['nch']:3d} "
                  f"{m['cpt']:3d} {m['passes']:6d} {c['cycles']:7d} {c['predicted']:7d} "
                  f"{c['macs']:9d} {100 * c['utilisation']:5.1f}%")
        print()
    print(f"(measurements also in {PERF}/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
