"""The IMNPU top level over AXI, with cocotbext-axi (``make sim K=axi``)."""

import pytest

from conftest import require, simulators
from imnpu_sim.cocotb_run import run_cocotb

MODULE = "imnpu_tb.imnpu_tests"
TESTS = ["registers_and_windows", "networks_all_clusters", "resident_weights", "dma_errors",
         "random_transactions", "reset_mid_layer"]


@pytest.mark.parametrize("testcase", TESTS)
@pytest.mark.parametrize("config", ["tiny", "fpga"])
@pytest.mark.parametrize("sim", simulators())
def test_axi(sim, config, testcase):
    require(sim)
    tests, failed = run_cocotb(sim, config, MODULE, testcase=testcase, block="top")
    assert tests == 1 and failed == 0, f"{testcase} on {sim}/{config} failed"
