"""The board self-test: the IMNPU runs one stored inference and checks it.

:class:`SelfTest` holds

* the IMNPU top level (:class:`imnpu_hw.top.IMNPU`) of a configuration;
* its system memory, an :class:`imnpu_fpga.axi_ram.AXI4RAM` on ``m_axi``,
  initialised with a compiled network (:func:`selftest_program`: conv 3x3 ->
  maxpool -> dense to int32 logits, fixed seed) and the packed input tensor;
* a host FSM on ``s_axil`` that reads the ``ID`` register, writes cluster 0's
  job registers (descriptor list, input copy, output copy), enables the
  interrupt, writes ``START``, waits for ``irq``, reads ``STATUS`` and
  ``JOB_CYCLES``, clears ``IRQ_STATUS``, then compares the output region of
  the RAM word by word with the reference output (``imnpu_sw.compiler.reference``)
  held in a ROM;
* the LEDs: 0 pass, 1 fail, 2 busy (job running), 3 heartbeat, 4..7 the
  failure reason (``STATUS.ERROR`` when the job reported one, else 0xF for a
  bad ID / AXI error / time-out, 0xE for an output mismatch);
* a UART transmitter (115200 8N1 by default) that prints
  ``IMNPU <config> PASS cycles=<JOB_CYCLES hex>`` or
  ``IMNPU <config> FAIL status=<STATUS hex> bad=<mismatches hex>`` about once a
  second after the test.

Pressing the reset button runs the test again.
"""

import numpy as np
from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.utils import bits_for, ceil_log2

from imnpu_hw.top import IMNPU
from imnpu_hw.top import regmap

from .axi_ram import AXI4RAM
from .wrapper import DesignSignature

__all__ = ["SelfTestProgram", "selftest_program", "SelfTest", "UARTTx"]


def _reg(name, cluster=None):
    if cluster is None:
        return {r.name: r for r in regmap.GLOBAL_REGISTERS}[name].offset
    offset = {r.name: r for r in regmap.CLUSTER_REGISTERS}[name].offset
    return regmap.CLUSTER_REG_BASE + cluster * regmap.CLUSTER_REG_STRIDE + offset


class SelfTestProgram:
    """The compiled self-test network placed in system memory (word addresses)."""

    def __init__(self, config, seed=2026):
        from imnpu_ref import OperandType
        from imnpu_ref.numbers import Encoding
        from imnpu_sw.compiler import (Conv, Dense, MaxPool, compile_network, output_words,
                                       reference)
        from imnpu_sw.mapping import ClusterGeometry
        from imnpu_sw.tensor import pack_tensor

        rng = np.random.default_rng(seed)
        x_type = OperandType(4, Encoding.UNSIGNED)
        w_type = OperandType(4, Encoding.SIGNED)
        mid = OperandType(2, Encoding.UNSIGNED)
        x = x_type.random(rng, (6, 6, 3))

        def stage(cout, k, out_bits):
            typical = int(np.sqrt(k) * 15 * 8)
            bias = rng.integers(-typical, typical + 1, size=cout)
            mult = rng.integers(1 << 13, 1 << 15, size=cout) * rng.choice([-1, 1], size=cout)
            shift = np.full(cout, max(0, (typical * 32768).bit_length() - out_bits))
            return bias, mult, shift

        layers = [
            Conv(w_type.random(rng, (8, 3, 3, 3)), w_type, *stage(8, 27, 2), mid,
                 (1, 1), (1, 1), True),
            MaxPool((2, 2)),
            Dense(w_type.random(rng, (10, 3 * 3 * 8)), w_type, *stage(10, 72, 31), "int32",
                  False),
        ]
        geometry = ClusterGeometry.from_config(config, 32)
        self.program = program = compile_network(geometry, x.shape, x_type, layers, base=0x100)
        self.layers = layers
        self.input = [int(w) for w in pack_tensor(x, x_type, 32)]
        self.out_words = output_words(program)
        expected, self.saturated = reference(x, layers)
        self.expected_values = expected
        if program.output_type == "int32":
            self.expected = [int(v) & 0xFFFFFFFF for v in expected.reshape(-1)]
        else:
            self.expected = [int(w) for w in pack_tensor(expected, program.output_type, 32)]
        assert len(self.expected) == self.out_words
        top = max(program.memory) + 1
        self.in_src = (top + 15) & ~15
        self.out_dst = (self.in_src + len(self.input) + 15) & ~15
        end = self.out_dst + self.out_words
        self.ram_words = 1 << max(8, ceil_log2(end))
        self.image = dict(program.memory)
        self.image.update({self.in_src + i: w for i, w in enumerate(self.input)})
        self.image.update({self.out_dst + i: 0xDEADBEEF for i in range(self.out_words)})

    def job_writes(self, cluster=0):
        """``(byte address, value)`` of the AXI4-Lite writes that start the job."""
        p = self.program
        return [
            (_reg("DESC_PTR", cluster), 4 * p.desc_addr),
            (_reg("IN_SRC", cluster), 4 * self.in_src),
            (_reg("IN_DST", cluster), p.input_base),
            (_reg("IN_WORDS", cluster), len(self.input)),
            (_reg("OUT_SRC", cluster), p.output_base),
            (_reg("OUT_DST", cluster), 4 * self.out_dst),
            (_reg("OUT_WORDS", cluster), self.out_words),
            (_reg("IRQ_STATUS"), 1 << cluster),       # clear a stale interrupt
            (_reg("IRQ_ENABLE"), 1 << cluster),
            (_reg("START"), 1 << cluster),
        ]


_CACHE = {}


def selftest_program(config):
    if config.name not in _CACHE:
        _CACHE[config.name] = SelfTestProgram(config)
    return _CACHE[config.name]


class UARTTx(wiring.Component):
    """8N1 transmitter: ``data``/``valid``/``ready`` handshake, ``divisor`` clocks a bit."""

    def __init__(self, divisor):
        self._divisor = max(1, int(divisor))
        super().__init__({"data": wiring.In(8), "valid": wiring.In(1), "ready": wiring.Out(1),
                          "tx": wiring.Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self._divisor))
        shift = Signal(9)                 # data bits, then the stop bit
        left = Signal(range(10))          # bits still to send after the current one
        busy = Signal()
        m.d.comb += self.ready.eq(~busy)
        with m.If(~busy):
            with m.If(self.valid):
                m.d.sync += [busy.eq(1), self.tx.eq(0), shift.eq(Cat(self.data, Const(1, 1))),
                             left.eq(9), timer.eq(self._divisor - 1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Elif(left == 0):
            m.d.sync += busy.eq(0)
        with m.Else():
            m.d.sync += [self.tx.eq(shift[0]), shift.eq(shift >> 1), left.eq(left - 1),
                         timer.eq(self._divisor - 1)]
        return m


class SelfTest(wiring.Component):
    """IMNPU + AXI4 RAM + host FSM + checker + LEDs + UART (see the module doc).

    ``clk_hz`` sets the UART divisor (``baud``) and the message repeat period;
    ``timeout`` is the job's cycle limit; ``_corrupt`` flips a bit of expected
    word ``_corrupt`` (tests: the self-test must fail).
    """

    def __init__(self, config, leds=8, clk_hz=50_000_000, baud=115200, timeout=1 << 24,
                 repeat_cycles=None, _corrupt=None):
        self.config = config
        self.program = selftest_program(config)
        self.clk_hz = clk_hz
        self._divisor = max(1, round(clk_hz / baud))
        self._timeout = timeout
        self._repeat = repeat_cycles or max(1 << 10, clk_hz)
        self._corrupt = _corrupt
        self.imnpu = IMNPU(config)
        super().__init__({
            **DesignSignature(max(8, leds)).members,
            "passed": wiring.Out(1), "failed": wiring.Out(1), "done": wiring.Out(1),
            "status": wiring.Out(32), "cycles": wiring.Out(32), "mismatches": wiring.Out(16),
        })

    # -- message ROM: 9-bit entries, bit 8 set = hex nibble (bits 4:0 = field*8 + nibble)
    def _message(self, passed):
        text = []

        def lit(s):
            text.extend(ord(c) for c in s)

        def hexfield(field, nibbles=8):
            text.extend(0x100 | (field << 3) | n for n in reversed(range(nibbles)))

        lit(f"IMNPU {self.config.name} ")
        if passed:
            lit("PASS cycles=")
            hexfield(1)
        else:
            lit("FAIL status=")
            hexfield(0)
            lit(" bad=")
            hexfield(2, 4)
        lit("\r\n")
        text.append(0x1FF)         # end
        return text

    def elaborate(self, platform):
        m = Module()
        prog = self.program
        m.submodules.imnpu = imnpu = self.imnpu
        id_width = len(imnpu.m_axi_awid)
        m.submodules.ram = ram = AXI4RAM(prog.ram_words, prog.image, id_width=id_width)
        for name in ram.bus.signature.members:
            flat = getattr(imnpu, f"m_axi_{name}")
            inner = getattr(ram.bus, name)
            if ram.bus.signature.members[name].flow == wiring.Out:
                m.d.comb += flat.eq(inner)
            else:
                m.d.comb += inner.eq(flat)

        # -- host program: ("w", addr, data) / ("r", addr, expect or None, target) --------
        writes = prog.job_writes(0)
        n_writes = len(writes)
        m.submodules.wrom = wrom = Memory(shape=64, depth=n_writes,
                                          init=[(a << 32) | d for a, d in writes])
        wrom_rd = wrom.read_port(domain="comb")
        m.submodules.erom = erom = Memory(shape=32, depth=prog.out_words, init=[
            w ^ (1 if i == self._corrupt else 0) for i, w in enumerate(prog.expected)])
        erom_rd = erom.read_port(domain="comb")

        s = imnpu
        status = self.status
        cycles = self.cycles
        ident = Signal(32)
        step = Signal(range(max(2, n_writes + 1)))
        aw_done = Signal()
        w_done = Signal()
        axi_error = Signal()
        timer = Signal(range(self._timeout + 1))
        timed_out = Signal()
        words = prog.out_words
        idx = Signal(range(words + 1))
        mismatches = self.mismatches
        differs = Signal()              # the word compared last cycle differed
        m.d.sync += differs.eq(0)
        with m.If(differs):
            m.d.sync += mismatches.eq(mismatches + 1)
        m.d.comb += [s.s_axil_awprot.eq(0), s.s_axil_arprot.eq(0), s.s_axil_wstrb.eq(0xF)]

        def lite_write(addr, data, next_state):
            m.d.comb += [s.s_axil_awaddr.eq(addr), s.s_axil_wdata.eq(data),
                         s.s_axil_awvalid.eq(~aw_done), s.s_axil_wvalid.eq(~w_done),
                         s.s_axil_bready.eq(aw_done & w_done)]
            with m.If(s.s_axil_awvalid & s.s_axil_awready):
                m.d.sync += aw_done.eq(1)
            with m.If(s.s_axil_wvalid & s.s_axil_wready):
                m.d.sync += w_done.eq(1)
            with m.If(s.s_axil_bvalid & s.s_axil_bready):
                m.d.sync += [aw_done.eq(0), w_done.eq(0)]
                with m.If(s.s_axil_bresp != 0):
                    m.d.sync += axi_error.eq(1)
                next_state()

        def lite_read(addr, target, next_state):
            m.d.comb += [s.s_axil_araddr.eq(addr), s.s_axil_arvalid.eq(~aw_done),
                         s.s_axil_rready.eq(aw_done)]
            with m.If(s.s_axil_arvalid & s.s_axil_arready):
                m.d.sync += aw_done.eq(1)
            with m.If(s.s_axil_rvalid & s.s_axil_rready):
                m.d.sync += [aw_done.eq(0), target.eq(s.s_axil_rdata)]
                with m.If(s.s_axil_rresp != 0):
                    m.d.sync += axi_error.eq(1)
                next_state()

        busy = Signal()
        with m.FSM(name="host"):
            with m.State("ID"):
                lite_read(_reg("ID"), ident, lambda: setattr(m, "next", "JOB"))
            with m.State("JOB"):
                m.d.comb += wrom_rd.addr.eq(step)

                def after_write():
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == n_writes - 1):
                        m.next = "WAIT"
                lite_write(wrom_rd.data[32:], wrom_rd.data[:32], after_write)
            with m.State("WAIT"):
                m.d.comb += busy.eq(1)
                m.d.sync += timer.eq(timer + 1)
                with m.If(s.irq):
                    m.next = "STATUS"
                with m.Elif(timer == self._timeout):
                    m.d.sync += timed_out.eq(1)
                    m.next = "STATUS"
            with m.State("STATUS"):
                lite_read(_reg("STATUS", 0), status, lambda: setattr(m, "next", "CYCLES"))
            with m.State("CYCLES"):
                lite_read(_reg("JOB_CYCLES", 0), cycles, lambda: setattr(m, "next", "CLEAR"))
            with m.State("CLEAR"):
                lite_write(_reg("IRQ_STATUS"), 1, lambda: setattr(m, "next", "CHECK"))
            with m.State("CHECK"):
                # RAM word out_dst + idx is read this cycle, compared the next, counted
                # the one after (the block RAM's output is slow: the comparison ends
                # in a register)
                m.d.comb += [ram.peek_en.eq(1), ram.peek_addr.eq(prog.out_dst + idx)]
                m.d.sync += idx.eq(idx + 1)
                with m.If(idx == words - 1):
                    m.next = "COMPARE_LAST"
                with m.If(idx != 0):
                    m.d.comb += erom_rd.addr.eq(idx - 1)
                    m.d.sync += differs.eq(ram.peek_data != erom_rd.data)
            with m.State("COMPARE_LAST"):
                m.d.comb += erom_rd.addr.eq(words - 1)
                m.d.sync += differs.eq(ram.peek_data != erom_rd.data)
                m.next = "TALLY"
            with m.State("TALLY"):
                m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)

        expected_layers = len(prog.program.layers)
        status_ok = Signal()
        error_code = status[8:12]
        m.d.comb += status_ok.eq((error_code == 0) & ~status[0] &
                                 (status[16:32] == expected_layers) &
                                 (status[1] == int(prog.saturated)))
        good = Signal()
        m.d.comb += [
            good.eq(status_ok & ~axi_error & ~timed_out & (mismatches == 0) &
                    (ident == regmap.IMNPU_ID)),
            self.passed.eq(self.done & good),
            self.failed.eq(self.done & ~good),
        ]

        heartbeat = Signal(range(max(2, self._repeat)))
        beat = Signal()
        m.d.sync += heartbeat.eq(Mux(heartbeat == self._repeat - 1, 0, heartbeat + 1))
        with m.If(heartbeat == self._repeat - 1):
            m.d.sync += beat.eq(~beat)
        reason = Signal(4)
        m.d.comb += reason.eq(Mux(error_code != 0, error_code,
                                  Mux(~status_ok | axi_error | timed_out |
                                      (ident != regmap.IMNPU_ID), 0xF, 0xE)))
        m.d.comb += [
            self.led[0].eq(self.passed),
            self.led[1].eq(self.failed),
            self.led[2].eq(busy),
            self.led[3].eq(beat),
            self.led[4:8].eq(Mux(self.failed, reason, 0)),
        ]

        # -- UART messages ---------------------------------------------------------
        msgs = {True: self._message(True), False: self._message(False)}
        rom = msgs[True] + msgs[False]
        fail_start = len(msgs[True])
        m.submodules.mrom = mrom = Memory(shape=9, depth=len(rom), init=rom)
        mrom_rd = mrom.read_port()                      # the entry a cycle after ptr
        m.submodules.uart = uart = UARTTx(self._divisor)
        m.d.comb += self.uart_tx.eq(uart.tx)
        ptr = Signal(range(len(rom)))
        sending = Signal()
        entry = mrom_rd.data
        fields = Cat(status, cycles, mismatches)        # field f at bits 32*f
        nibble = Signal(4)
        sel = entry[:5]
        with m.Switch(sel):
            for f, width in ((0, 32), (1, 32), (2, 16)):
                for n in range(width // 4):
                    with m.Case((f << 3) | n):
                        m.d.comb += nibble.eq(fields[32 * f + 4 * n: 32 * f + 4 * n + 4])
        char = Signal(8)
        m.d.comb += [
            mrom_rd.addr.eq(ptr),
            char.eq(Mux(entry[8], Mux(nibble < 10, nibble + ord("0"), nibble + ord("A") - 10),
                        entry[:8])),
        ]
        # Entry ``ptr`` is read into a register (the ROM's read port), its character
        # into another (``char_r``, valid with ``held`` two cycles after ``ptr`` moved):
        # the ROM, the field select and the hex digit in one cycle with the UART's
        # shift register were 20.6 ns routed on the ECP5-85F, with the character
        # register 19.6 ns in a placement estimate.
        char_r = Signal(8)
        end_r = Signal()
        read = Signal()          # the ROM's data is entry ``ptr``
        held = Signal()          # char_r and end_r are entry ``ptr``'s
        m.d.sync += [char_r.eq(char), end_r.eq(entry == 0x1FF), read.eq(1), held.eq(read)]
        start_msg = Signal()
        m.d.sync += start_msg.eq(self.done & (heartbeat == 0))
        with m.If(~sending):
            with m.If(start_msg):
                m.d.sync += [sending.eq(1), ptr.eq(Mux(good, 0, fail_start)),
                             read.eq(0), held.eq(0)]
        with m.Elif(held):
            with m.If(end_r):
                m.d.sync += sending.eq(0)
            with m.Else():
                m.d.comb += [uart.data.eq(char_r), uart.valid.eq(1)]
                with m.If(uart.ready):
                    m.d.sync += [ptr.eq(ptr + 1), read.eq(0), held.eq(0)]
        return m
