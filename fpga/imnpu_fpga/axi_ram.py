"""An AXI4 (full) subordinate RAM: the system memory of the FPGA self-test.

One :class:`amaranth.lib.memory.Memory` of 32-bit words (block RAM on the
FPGA), one write port with byte enables (``WSTRB``) and one synchronous read
port, so it maps onto true dual-port block RAM. Bursts: ``INCR`` and ``FIXED``
(``WRAP`` is treated as ``INCR``: the IMNPU's DMA issues only ``INCR``), any
``LEN`` (1..256 beats), 4-byte beats (``SIZE`` = 2). One read and one write
burst at a time, each at one beat per cycle with full ``RREADY``/``WVALID``
throughput. A burst starting outside the RAM answers ``SLVERR`` (reads return
0, writes change nothing).

``peek_*``: a side door to the read port for a checker, to be used only while
no read burst is in flight (the self-test reads the output after its job).
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from imnpu_hw.interconnect.axi import AXI4Signature, AXIBurst, AXIResp

__all__ = ["AXI4RAM"]


class AXI4RAM(wiring.Component):
    """``depth`` 32-bit words, initialised from ``init`` (a list, or a dict
    ``{word address: value}``), behind an AXI4 subordinate port ``bus``."""

    def __init__(self, depth, init=(), *, id_width=1, addr_width=32):
        if depth < 2 or depth & (depth - 1):
            raise ValueError(f"depth must be a power of two >= 2, not {depth}")
        if isinstance(init, dict):
            words = [0] * depth
            for addr, value in init.items():
                if not 0 <= addr < depth:
                    raise ValueError(f"init word address {addr:#x} outside the RAM "
                                     f"({depth} words)")
                words[addr] = value & 0xFFFFFFFF
            init = words
        if len(init) > depth:
            raise ValueError(f"{len(init)} init words do not fit {depth}")
        self._depth = depth
        self._init = list(init)
        self._abits = ceil_log2(depth)
        super().__init__({
            "bus": In(AXI4Signature(addr_width=addr_width, data_width=32, id_width=id_width)),
            "peek_en": In(1),
            "peek_addr": In(self._abits),
            "peek_data": Out(32),
        })

    depth = property(lambda self: self._depth)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        ab = self._abits
        m.submodules.mem = mem = Memory(shape=32, depth=self._depth, init=self._init)
        rd = mem.read_port(domain="sync")
        wr = mem.write_port(granularity=8)

        def outside(addr):
            return addr[ab + 2:] != 0 if len(addr) > ab + 2 else 0

        # -- reads --------------------------------------------------------------
        r_active = Signal()           # beats left to issue
        r_addr = Signal(ab)
        r_left = Signal(8)            # beats after the current one
        r_fixed = Signal()
        r_error = Signal()
        r_id = Signal.like(bus.arid)
        advance = Signal()
        m.d.comb += [
            advance.eq(~bus.rvalid | bus.rready),
            bus.arready.eq(~r_active),
            rd.en.eq(advance | self.peek_en),
            rd.addr.eq(Mux(self.peek_en, self.peek_addr, r_addr)),
            self.peek_data.eq(rd.data),
        ]
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [
                r_active.eq(1),
                r_addr.eq(bus.araddr[2:2 + ab]),
                r_left.eq(bus.arlen),
                r_fixed.eq(bus.arburst == AXIBurst.FIXED),
                r_error.eq(outside(bus.araddr)),
                r_id.eq(bus.arid),
            ]
        r_err_out = Signal()
        with m.If(advance):
            m.d.sync += bus.rvalid.eq(r_active)
            with m.If(r_active):
                m.d.sync += [
                    bus.rlast.eq(r_left == 0),
                    bus.rid.eq(r_id),
                    r_err_out.eq(r_error),
                    r_left.eq(r_left - 1),
                ]
                with m.If(~r_fixed):
                    m.d.sync += r_addr.eq(r_addr + 1)
                with m.If(r_left == 0):
                    m.d.sync += r_active.eq(0)
        m.d.comb += [
            bus.rdata.eq(Mux(r_err_out, 0, rd.data)),
            bus.rresp.eq(Mux(r_err_out, AXIResp.SLVERR, AXIResp.OKAY)),
        ]

        # -- writes -------------------------------------------------------------
        w_active = Signal()
        w_addr = Signal(ab)
        w_fixed = Signal()
        w_error = Signal()
        w_id = Signal.like(bus.awid)
        m.d.comb += [
            bus.awready.eq(~w_active & ~bus.bvalid),
            bus.wready.eq(w_active),
            wr.addr.eq(w_addr),
            wr.data.eq(bus.wdata),
        ]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [
                w_active.eq(1),
                w_addr.eq(bus.awaddr[2:2 + ab]),
                w_fixed.eq(bus.awburst == AXIBurst.FIXED),
                w_error.eq(outside(bus.awaddr)),
                w_id.eq(bus.awid),
            ]
        with m.If(bus.wvalid & bus.wready):
            with m.If(~w_error):
                m.d.comb += wr.en.eq(bus.wstrb)
            with m.If(~w_fixed):
                m.d.sync += w_addr.eq(w_addr + 1)
            with m.If(bus.wlast):
                m.d.sync += [
                    w_active.eq(0),
                    bus.bvalid.eq(1),
                    bus.bid.eq(w_id),
                    bus.bresp.eq(Mux(w_error, AXIResp.SLVERR, AXIResp.OKAY)),
                ]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)
        return m
