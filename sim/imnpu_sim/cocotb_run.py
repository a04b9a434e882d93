"""Build and run cocotb testbenches on Verilator or Icarus Verilog.

One build directory per (simulator, configuration, variant, waves):
``build/sim/<sim>/<config>[-fault-<f>][-waves]/``. A build is made once per
process and reused by every test run against it.
"""

import os

from cocotb_tools.check_results import get_results
from cocotb_tools.runner import get_runner

from .export import BLOCKS, export
from .paths import PERF, SIM_BUILD
from .toolchain import simulator_missing

__all__ = ["run_cocotb", "waves_requested"]

_built = {}


def waves_requested():
    return os.environ.get("WAVES", "0") not in ("", "0")


def _runner(sim, config, block, fault, waves):
    key = (sim, config, block, fault, waves)
    if key in _built:
        return _built[key]
    missing = simulator_missing(sim)
    if missing:
        raise RuntimeError(f"{sim} cannot run: {missing}")
    source = export(config, block, fault=fault)
    module = BLOCKS[block][0]
    variant = config + (f"-fault-{fault}" if fault else "") + ("-waves" if waves else "")
    build_dir = SIM_BUILD / sim / block / variant
    runner = get_runner(sim)
    build_args = ["-Wno-fatal"] if sim == "verilator" else []
    runner.build(sources=[source], hdl_toplevel=module, build_dir=build_dir,
                 build_args=build_args, timescale=("1ns", "1ps"), waves=waves,
                 always=False, log_file=build_dir / "build.log")
    _built[key] = (runner, module, build_dir)
    return _built[key]


def run_cocotb(sim, config, test_module, testcase=None, block="tile", fault=None,
               seed=None, extra_env=None, waves=None, quiet=False):
    """Run cocotb tests ``testcase`` of ``test_module``; return ``(tests, failed)``.

    With ``waves`` (default: the ``WAVES`` environment variable) the simulator
    writes a waveform, whose path is printed. ``quiet`` sends the simulator's
    output to ``sim.log`` in the run directory instead of the terminal.
    """
    waves = waves_requested() if waves is None else waves
    runner, module, build_dir = _runner(sim, config, block, fault, waves)
    name = testcase or "all"
    test_dir = build_dir / "runs" / name
    test_dir.mkdir(parents=True, exist_ok=True)
    seed = int(os.environ.get("IMNPU_SEED", "20261124")) if seed is None else seed
    env = {"IMNPU_CONFIG": config, "IMNPU_SEED": str(seed), "IMNPU_SIM": sim,
           "IMNPU_PERF_DIR": str(PERF)}
    env.update(extra_env or {})
    print(f"[cocotb] {sim} {config} {test_module}:{name} seed={seed}", flush=True)
    results = test_dir / "results.xml"
    results.unlink(missing_ok=True)
    try:
        runner.test(test_module=test_module, hdl_toplevel=module, testcase=testcase,
                    seed=seed, extra_env=env, waves=waves, build_dir=build_dir,
                    test_dir=test_dir, results_xml=str(results), timescale=("1ns", "1ps"),
                    log_file=test_dir / "sim.log" if quiet else None)
    except SystemExit:
        # Under pytest the runner exits when a test fails; the caller decides
        # what a failure means (the mutation check expects one), so report it.
        if not results.exists():
            raise
    if waves:
        wave = (test_dir / "dump.vcd") if sim == "verilator" else (build_dir / f"{module}.fst")
        print(f"[cocotb] waveform: {wave}", flush=True)
    return get_results(results)
