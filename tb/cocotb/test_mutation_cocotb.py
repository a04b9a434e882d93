"""Mutation check: the regression must fail on a deliberately broken tile.

``DIMCTile(_fault=...)`` builds a test-only variant: ``sign`` reads every signed
lane as unsigned (lost sign handling), ``lane`` drops row bits 4..7 (nibble 1)
from every dot product. Each variant is exported to its own Verilog and build directory, and
the random-product test must report a failure on it.
"""

import pytest

from conftest import require, simulators
from imnpu_sim.cocotb_run import run_cocotb


@pytest.mark.parametrize("fault", ["sign", "lane"])
@pytest.mark.parametrize("sim", simulators())
def test_mutation_detected(sim, fault):
    require(sim)
    tests, failed = run_cocotb(sim, "tiny", "imnpu_tb.dimc_tile_tests", fault=fault,
                               testcase="random_products",
                               extra_env={"IMNPU_PRODUCTS": "200"})
    assert tests == 1
    assert failed == 1, f"the regression did not notice the '{fault}' fault on {sim}"
