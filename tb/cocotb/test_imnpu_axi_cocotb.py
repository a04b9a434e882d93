"""The IMNPU top level over AXI, with cocotbext-axi (``make sim K=axi``)."""

import pytest

from conftest import require, simulators
from imnpu_sim.cocotb_run import run_cocotb

MODULE = "imnpu_tb.imnpu_tests"
# least DMA bursts of random_transactions: 1,000 on every run but Icarus on the
# two-cluster fpga top, whose cocotbext-axi traffic is the slowest run of the suite
TRANSACTIONS = {("verilator", "tiny"): 1000, ("verilator", "fpga"): 1000,
                ("icarus", "tiny"): 1000, ("icarus", "fpga"): 400}
TESTS = ["registers_and_windows", "networks_all_clusters", "resident_weights", "dma_errors",
         "random_transactions", "reset_mid_layer"]


@pytest.mark.parametrize("testcase", TESTS)
@pytest.mark.parametrize("config", ["tiny", "fpga"])
@pytest.mark.parametrize("sim", simulators())
def test_axi(sim, config, testcase):
    require(sim)
    tests, failed = run_cocotb(sim, config, MODULE, testcase=testcase, block="top",
                               extra_env={"IMNPU_TRANSACTIONS": str(TRANSACTIONS[sim, config])})
    assert tests == 1 and failed == 0, f"{testcase} on {sim}/{config} failed"
