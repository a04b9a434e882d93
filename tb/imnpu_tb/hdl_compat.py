"""Simulator quirks of Amaranth's Verilog, handled once for every testbench."""

__all__ = ["settle_combinational"]


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
