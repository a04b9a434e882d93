"""Shared set-up of the cocotb regression (``make sim``)."""

import pytest

from imnpu_sim.toolchain import selected_simulators, simulator_missing


def simulators():
    """Simulators of this run (``IMNPU_SIMS``), as pytest parameters."""
    return [pytest.param(sim, marks=pytest.mark.cocotb, id=sim) for sim in selected_simulators()]


def require(sim):
    missing = simulator_missing(sim)
    if missing:
        pytest.skip(f"{sim} not available: {missing}")
