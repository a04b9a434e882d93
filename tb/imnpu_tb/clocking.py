"""Clock, reset and simulator start-up shared by every cocotb testbench."""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

__all__ = ["settle_combinational", "start_clock_and_reset"]

CLOCK_NS = 10


async def start_clock_and_reset(dut, inputs, cycles=3):
    """Settle the design, start ``clk``, drive ``inputs`` (name -> value) and
    hold ``rst`` for ``cycles`` clock cycles; returns at a falling edge with
    reset released."""
    settle_combinational(dut)
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    for name, value in inputs.items():
        getattr(dut, name).value = value
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


def settle_combinational(dut, depth=8):
    """Make Icarus evaluate every ``always @*`` block of the design at time 0.

    Yosys' Verilog backend puts a dummy variable (``$auto$verilog_backend...``)
    in the sensitivity list of each combinational block so that simulators run
    it once at start-up; Icarus 11 does not, and a block whose inputs never
    change (an idle submodule) then drives X forever, which registers capture.
    Writing the dummy variable of every module instance triggers each block
    once. Verilator evaluates ``always @*`` at time 0 anyway; the write is
    harmless there. Returns how many instances were settled.
    """
    count = 0

    def walk(handle, level):
        nonlocal count
        for child in handle:
            if "verilog_backend" in child._name:
                child.value = 1
                count += 1
            elif level < depth and type(child).__name__ == "HierarchyObject":
                walk(child, level + 1)

    walk(dut, 0)
    return count
