"""The DIMC tile's cocotb regression on the exported Verilog, per simulator and configuration.

Counts: ``random_products`` checks ``IMNPU_PRODUCTS`` row products for each of the
12 (lane width x weight encoding x feature encoding) formats, 10,000 per format
and simulator across ``tiny`` and ``fpga``: 5,000 + 5,000 on Verilator; 9,800 +
200 on Icarus, an event-driven simulator about 30 times slower than Verilator on
the 256-bit ``fpga`` datapath. ``seed`` gets a smaller sweep (200 per format) on
Verilator only: its 1024-bit, P = 4 rows make an Icarus run slow.
"""

import pytest

from conftest import require, simulators
from imnpu_sim.cocotb_run import run_cocotb

MODULE = "imnpu_tb.dimc_tile_tests"
TESTS = ["memory_roundtrip", "random_products", "corners", "backpressure", "throughput"]
PRODUCTS = {("verilator", "tiny"): 5000, ("verilator", "fpga"): 5000,
            ("icarus", "tiny"): 9800, ("icarus", "fpga"): 200,
            ("verilator", "seed"): 200}


def _run(sim, config, testcase):
    require(sim)
    tests, failed = run_cocotb(sim, config, MODULE, testcase=testcase,
                               extra_env={"IMNPU_PRODUCTS": str(PRODUCTS[sim, config])})
    assert tests == 1 and failed == 0, f"{testcase} on {sim}/{config}: {failed} of {tests} failed"


@pytest.mark.parametrize("testcase", TESTS)
@pytest.mark.parametrize("config", ["tiny", "fpga"])
@pytest.mark.parametrize("sim", simulators())
def test_tile(sim, config, testcase):
    _run(sim, config, testcase)


@pytest.mark.parametrize("testcase", TESTS)
@pytest.mark.parametrize("sim", [s for s in simulators() if s.values[0] == "verilator"])
def test_tile_seed(sim, testcase):
    _run(sim, "seed", testcase)
