"""The cluster's cocotb regression on the exported Verilog (``make sim K=cluster``)."""

import pytest

from conftest import require, simulators
from imnpu_sim.cocotb_run import run_cocotb

MODULE = "imnpu_tb.cluster_tests"
TESTS = ["random_layers", "three_layer_network", "illegal_descriptors"]
# random layers per run; the cases-drawn check needs 40 or more, Icarus on the
# fpga cluster (about 20 times slower than Verilator) runs a shorter second opinion
LAYERS = {("verilator", "tiny"): 48, ("verilator", "fpga"): 40,
          ("icarus", "tiny"): 48, ("icarus", "fpga"): 16}


def _run(sim, config, testcase):
    require(sim)
    tests, failed = run_cocotb(sim, config, MODULE, testcase=testcase, block="cluster",
                               extra_env={"IMNPU_LAYERS": str(LAYERS[sim, config])})
    assert tests == 1 and failed == 0, f"{testcase} on {sim}/{config} failed"


@pytest.mark.parametrize("testcase", TESTS)
@pytest.mark.parametrize("config", ["tiny", "fpga"])
@pytest.mark.parametrize("sim", simulators())
def test_cluster(sim, config, testcase):
    _run(sim, config, testcase)


# The utilisation layers (tens of thousands of cycles on the fpga cluster) are
# a performance measurement (make perf); they run on Verilator only.
@pytest.mark.parametrize("config", ["tiny", "fpga"])
@pytest.mark.parametrize("sim", [s for s in simulators() if s.values[0] == "verilator"])
def test_cluster_utilisation(sim, config):
    _run(sim, config, "utilisation")
