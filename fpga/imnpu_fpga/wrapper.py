"""Board wrappers: clock, reset and pins around a design (Amaranth 0.5).

:class:`BoardTop` is the top level of every FPGA build. It takes the board
oscillator (``clk_board``), makes the core clock (an ECP5 ``EHXPLLL`` /
iCE40 ``SB_PLL40_CORE`` from ``ecppll`` / ``icepll``, a Xilinx ``MMCME2_BASE``,
or the oscillator itself when the frequencies agree), synchronises the reset
button (and the PLL lock) into the ``sync`` domain (on the ECP5 through a
global clock buffer, ``DCCA``: the reset reaches nearly every flip-flop), and
hands the LEDs and the UART to a *design*: a component with ``led``,
``uart_tx`` (``Out``) and ``uart_rx`` (``In``) members, clocked by ``sync``:

* :class:`imnpu_fpga.selftest.SelfTest`: the IMNPU top level, an on-chip AXI4
  RAM holding a compiled network, and a host FSM that runs one inference and
  shows pass/fail on the LEDs and the UART (the default on every board);
* :class:`Harness`: any block (tile, cluster, top) out of context for resource
  and timing runs: its inputs come from an LFSR-fed shift register, its
  outputs are registered and XOR-reduced to one LED, so every port is a real
  register-to-register path and nothing is optimised away, with four pins
  instead of hundreds.
"""

from amaranth import Cat, ClockDomain, Const, Instance, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.cdc import AsyncFFSynchronizer, FFSynchronizer, ResetSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["DesignSignature", "BoardTop", "Harness", "BuilderWithMemory", "PLL_MODULE"]

#: module name of the generated PLL (ecppll/icepll -n)
PLL_MODULE = "imnpu_pll"


def DesignSignature(leds):
    """What a design offers the board: ``leds`` LEDs (active high) and a UART."""
    return wiring.Signature({"led": Out(leds), "uart_tx": Out(1), "uart_rx": In(1)})


class BoardTop(wiring.Component):
    """Top level for ``board`` (:class:`imnpu_fpga.boards.Board`) around ``design``.

    ``core_mhz``: core clock; a PLL/MMCM makes it when it differs from the
    board oscillator (ECP5 and iCE40: the flow generates the ``imnpu_pll``
    module with ecppll/icepll and reads it with the Verilog).
    """

    def __init__(self, board, design, core_mhz=None):
        self.board = board
        self.design = design
        self.core_mhz = board.core_mhz if core_mhz is None else core_mhz
        self.use_pll = abs(self.core_mhz - board.clk_mhz) > 1e-6
        if self.use_pll and board.family == "xilinx":
            divide = 1000.0 / self.core_mhz
            if not 2 <= divide <= 128 or abs(divide * 8 - round(divide * 8)) > 1e-6:
                raise ValueError(f"{board.name}: core clock {self.core_mhz} MHz is not "
                                 "1000 MHz / D with D in 2..128 in steps of 1/8")
        super().__init__({
            "clk_board": In(1),
            "button_reset": In(1),
            "led": Out(len(board.leds)),
            "uart_tx": Out(1),
            "uart_rx": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        board = self.board
        m.domains.sync = cd = ClockDomain("sync")
        locked = Signal(init=1)
        if not self.use_pll:
            m.d.comb += cd.clk.eq(self.clk_board)
        elif board.family == "ecp5":
            m.submodules.pll = Instance(PLL_MODULE, i_clkin=self.clk_board,
                                        o_clkout0=cd.clk, o_locked=locked)
        elif board.family == "ice40":
            m.submodules.pll = Instance(PLL_MODULE, i_clock_in=self.clk_board,
                                        o_clock_out=cd.clk, o_locked=locked)
        else:   # xilinx: VCO at 1000 MHz from the 100 MHz oscillator
            feedback, unbuffered = Signal(), Signal()
            m.submodules.mmcm = Instance(
                "MMCME2_BASE",
                p_CLKIN1_PERIOD=1000.0 / board.clk_mhz,
                p_CLKFBOUT_MULT_F=1000.0 / board.clk_mhz,
                p_CLKOUT0_DIVIDE_F=1000.0 / self.core_mhz,
                i_CLKIN1=self.clk_board, i_CLKFBIN=feedback, o_CLKFBOUT=feedback,
                o_CLKOUT0=unbuffered, o_LOCKED=locked, i_RST=0, i_PWRDWN=0)
            m.submodules.bufg = Instance("BUFG", i_I=unbuffered, o_O=cd.clk)

        pressed = ~self.button_reset if board.reset_active_low else self.button_reset
        if board.family == "ecp5":
            # The reset reaches nearly every flip-flop. On one of the ECP5's global
            # clock nets (a DCCA buffer) it leaves the general routing, and the
            # placer's wire length, to the datapath; nextpnr promotes only clocks.
            synced = Signal()
            m.submodules.reset_sync = AsyncFFSynchronizer(pressed | ~locked, synced,
                                                          o_domain="sync")
            m.submodules.reset_buffer = Instance("DCCA", i_CLKI=synced, i_CE=Const(1),
                                                 o_CLKO=cd.rst)
        else:
            m.submodules.reset_sync = ResetSynchronizer(pressed | ~locked, domain="sync")

        m.submodules.design = design = self.design
        uart_rx = Signal(init=1)
        m.submodules.uart_rx_sync = FFSynchronizer(self.uart_rx, uart_rx, init=1)
        m.d.comb += [
            design.uart_rx.eq(uart_rx),
            self.uart_tx.eq(design.uart_tx),
        ]
        for i, pin in enumerate(board.leds):
            m.d.comb += self.led[i].eq(design.led[i] ^ int(pin.inverted))
        return m


class Harness(wiring.Component):
    """``block`` out of context: every input from a register, every output into one.

    The inputs are the bits of a shift register fed by a 32-bit Fibonacci LFSR
    (a pseudo-random source synthesis cannot see through); the outputs are registered and XOR-reduced
    by a pipelined tree of 4-input XORs to ``led[0]``. ``led[1]`` is a
    heartbeat. The harness costs about one flip-flop per block port bit plus
    a LUT per four output bits (:attr:`overhead`); the flow reports the block
    itself separately (it keeps the block's hierarchy).
    """

    def __init__(self, block, leds=2):
        self.block = block
        self.inputs, self.outputs = [], []
        for path, member, value in block.signature.flatten(block):
            (self.inputs if member.flow == In else self.outputs).append(Value.cast(value))
        self.in_bits = sum(len(v) for v in self.inputs)
        self.out_bits = sum(len(v) for v in self.outputs)
        super().__init__(DesignSignature(max(2, leds)))

    @property
    def overhead(self):
        """Approximate flip-flops and LUTs of the harness itself."""
        ffs, luts, n = 32 + self.in_bits + self.out_bits, 0, self.out_bits
        while n > 1:
            n = -(-n // 4)
            ffs += n
            luts += n
        return {"ff": ffs + 24, "lut": luts + 24}

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.block

        lfsr = Signal(32, init=1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[1] ^ lfsr[2] ^ lfsr[22]))
        if self.in_bits:
            shift = Signal(self.in_bits)
            m.d.sync += shift.eq(Cat(lfsr[0], shift[:-1]) if self.in_bits > 1 else lfsr[0])
            offset = 0
            for value in self.inputs:
                m.d.comb += value.eq(shift[offset:offset + len(value)])
                offset += len(value)

        level = Signal(max(1, self.out_bits))
        if self.out_bits:
            m.d.sync += level.eq(Cat(*self.outputs))
        depth = 0
        while len(level) > 1:
            chunks = [level[i:i + 4] for i in range(0, len(level), 4)]
            reduced = Signal(len(chunks), name=f"xor_level{depth}")
            m.d.sync += reduced.eq(Cat(c.xor() for c in chunks))
            level, depth = reduced, depth + 1

        heartbeat = Signal(24)
        m.d.sync += heartbeat.eq(heartbeat + 1)
        m.d.comb += [
            self.led[0].eq(level[0]),
            self.led[1].eq(heartbeat[-1]),
            self.uart_tx.eq(1),
        ]
        return m


class BuilderWithMemory(wiring.Component):
    """The patch builder of a cluster of ``config`` with its activation memory.

    Out of context (``make fpga BLOCK=builder``) the builder's critical path
    starts at the activation memory's block RAM, as in the cluster, so the
    memory comes along; its write port replaces the cluster's other users.
    The builder's own ports are forwarded unchanged.
    """

    #: the builder's activation memory read port, connected inside
    READ_PORT = ("rd_addr", "rd_en", "rd_data")

    def __init__(self, config):
        from amaranth.lib.memory import Memory
        from amaranth.utils import ceil_log2
        from imnpu_hw.cluster.cluster import Cluster
        depth = config.A * 8 // 32           # 32-bit activation words, as in the flow's cluster
        self._builder = Cluster.patch_builder(config.W, 32, depth)
        self._memory = Memory(shape=32, depth=depth, init=[])
        members = {name: member for name, member in self._builder.signature.members.items()
                   if name not in self.READ_PORT}
        members.update({"wr_addr": In(max(1, ceil_log2(depth))), "wr_data": In(32),
                        "wr_en": In(1)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.builder = builder = self._builder
        m.submodules.act = self._memory
        rd = self._memory.read_port(domain="sync")
        wr = self._memory.write_port()
        m.d.comb += [rd.addr.eq(builder.rd_addr), rd.en.eq(builder.rd_en),
                     builder.rd_data.eq(rd.data),
                     wr.addr.eq(self.wr_addr), wr.data.eq(self.wr_data), wr.en.eq(self.wr_en)]
        for name, member in self._builder.signature.members.items():
            if name in self.READ_PORT:
                continue
            ours, theirs = getattr(self, name), getattr(builder, name)
            if member.is_signature:
                wiring.connect(m, theirs, wiring.flipped(ours))
            elif member.flow == In:
                m.d.comb += theirs.eq(ours)
            else:
                m.d.comb += ours.eq(theirs)
        return m
