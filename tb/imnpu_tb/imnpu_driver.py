"""cocotb driver of the IMNPU top level: cocotbext-axi on both AXI ports.

* :class:`IMNPUBench` puts an ``AxiLiteMaster`` on ``s_axil_*`` (the host) and
  an ``AxiRam`` on ``m_axi_*`` (system memory), with optional random pause
  generators on every channel, and counts the handshakes of every AXI
  channel (:class:`AxiCounter`).
* Register and window accesses use the addresses of :mod:`imnpu_sw.regs`; :meth:`IMNPUBench.read`/``write`` return the AXI response so
  that tests check error responses, :meth:`reg`/``set_reg`` assert OKAY.
* :meth:`IMNPUBench.run_jobs` starts jobs on several clusters with one write
  to START and waits for the interrupt (a hang fails after a cycle limit).
"""

import logging
import random

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge
from cocotbext.axi import (AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam)
from cocotbext.axi.constants import AxiResp

from imnpu_sw.regs import REG, cluster_reg

from .clocking import start_clock_and_reset

__all__ = ["IMNPUBench", "AxiCounter", "OKAY", "SLVERR", "DECERR"]

OKAY, SLVERR, DECERR = AxiResp.OKAY, AxiResp.SLVERR, AxiResp.DECERR


def _random_pauses(rng, probability):
    while True:
        yield bool(rng.random() < probability)


class AxiCounter:
    """Counts handshakes on every channel of the ``m_axi`` port."""

    CHANNELS = ("aw", "w", "b", "ar", "r")

    def __init__(self, dut):
        self.dut = dut
        self.counts = dict.fromkeys(self.CHANNELS, 0)
        self.bursts = []            # (kind, address, beats) of every AR/AW

    async def run(self):
        dut = self.dut
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            if str(dut.rst.value) == "1":
                continue
            for ch in self.CHANNELS:
                if str(getattr(dut, f"m_axi_{ch}valid").value) == "1" and \
                        str(getattr(dut, f"m_axi_{ch}ready").value) == "1":
                    self.counts[ch] += 1
                    if ch in ("aw", "ar"):
                        addr = int(getattr(dut, f"m_axi_{ch}addr").value)
                        beats = int(getattr(dut, f"m_axi_{ch}len").value) + 1
                        self.bursts.append((ch, addr, beats))


class IMNPUBench:
    def __init__(self, dut, config, rng, pause=0.0, ram_size=1 << 20):
        self.dut = dut
        self.config = config
        self.rng = rng
        self.pause = pause
        self.ram_size = ram_size
        logging.getLogger("cocotb.imnpu.s_axil").setLevel(logging.WARNING)
        logging.getLogger("cocotb.imnpu.m_axi").setLevel(logging.WARNING)

    async def start(self):
        dut = self.dut
        await start_clock_and_reset(dut, {})
        self.host = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=self.ram_size)
        self._map_errors()
        self.counter = AxiCounter(dut)
        cocotb.start_soon(self.counter.run())
        self.set_pause(self.pause)
        await ClockCycles(dut.clk, 2)

    def _map_errors(self):
        """Accesses at or above ``ram_size`` fail (the AXI RAM model would wrap
        them); they answer ``error_response``, SLVERR unless a test sets DECERR."""
        self.error_response = SLVERR
        ram = self.ram
        for port, name in ((ram.read_if, "_read"), (ram.write_if, "_write")):
            original = getattr(port, name)

            async def checked(address, arg, original=original):
                if address >= self.ram_size:
                    raise ValueError(f"address 0x{address:x} outside system memory")
                return await original(address, arg)
            setattr(port, name, checked)
        for channel, field in ((ram.read_if.r_channel, "rresp"), (ram.write_if.b_channel, "bresp")):
            send = channel.send

            async def mapped(beat, send=send, field=field):
                if getattr(beat, field) == SLVERR:
                    setattr(beat, field, self.error_response)
                await send(beat)
            channel.send = mapped

    def set_pause(self, probability):
        """Random pauses with ``probability`` on every channel of both ports."""
        self.pause = probability
        channels = [self.host.write_if.aw_channel, self.host.write_if.w_channel,
                    self.host.write_if.b_channel, self.host.read_if.ar_channel,
                    self.host.read_if.r_channel,
                    self.ram.write_if.aw_channel, self.ram.write_if.w_channel,
                    self.ram.write_if.b_channel, self.ram.read_if.ar_channel,
                    self.ram.read_if.r_channel]
        for ch in channels:
            if probability:
                seed = int(self.rng.integers(1 << 31))
                ch.set_pause_generator(_random_pauses(random.Random(seed), probability))
            else:
                ch.clear_pause_generator()

    # -- system memory ---------------------------------------------------------------
    def load_words(self, word_addr, words):
        data = b"".join((w & 0xFFFFFFFF).to_bytes(4, "little") for w in words)
        self.ram.write(word_addr * 4, data)

    def load_image(self, memory):
        """A compiler image: {word address: word}."""
        for addr, word in memory.items():
            self.ram.write(addr * 4, (word & 0xFFFFFFFF).to_bytes(4, "little"))

    def read_ram_words(self, word_addr, count):
        data = self.ram.read(word_addr * 4, count * 4)
        return [int.from_bytes(data[4 * i:4 * i + 4], "little") for i in range(count)]

    # -- AXI4-Lite ---------------------------------------------------------------------
    async def read(self, addr):
        """``(value, resp)`` of a 32-bit read at byte address ``addr``."""
        r = await self.host.read(addr, 4)
        return int.from_bytes(r.data, "little"), AxiResp(r.resp)

    async def write(self, addr, value, strb=None):
        """AXI response of a 32-bit write (optionally with byte strobes)."""
        if strb is None:
            w = await self.host.write(addr, (value & 0xFFFFFFFF).to_bytes(4, "little"))
            return AxiResp(w.resp)
        # a partial write: the master derives WSTRB from the byte range
        lo = (strb & -strb).bit_length() - 1
        n = bin(strb).count("1")
        data = (value & 0xFFFFFFFF).to_bytes(4, "little")[lo:lo + n]
        w = await self.host.write(addr + lo, data)
        return AxiResp(w.resp)

    async def reg(self, addr):
        value, resp = await self.read(addr)
        assert resp == OKAY, f"read of 0x{addr:x} answered {resp.name}"
        return value

    async def set_reg(self, addr, value):
        resp = await self.write(addr, value)
        assert resp == OKAY, f"write of 0x{addr:x} answered {resp.name}"

    # -- jobs --------------------------------------------------------------------------
    async def program_job(self, cluster, desc_word, in_src=0, in_dst=0, in_words=0,
                          out_src=0, out_dst=0, out_words=0):
        """Write cluster ``cluster``'s job registers (system addresses in words)."""
        for name, value in (("DESC_PTR", desc_word * 4), ("IN_SRC", in_src * 4),
                            ("IN_DST", in_dst), ("IN_WORDS", in_words),
                            ("OUT_SRC", out_src), ("OUT_DST", out_dst * 4),
                            ("OUT_WORDS", out_words)):
            await self.set_reg(cluster_reg(cluster, name), value)

    async def run_jobs(self, clusters, max_cycles=2_000_000):
        """Start ``clusters`` together, wait until each has raised its interrupt;
        return ``{cluster: STATUS}``."""
        mask = sum(1 << c for c in clusters)
        await self.set_reg(REG.IRQ_ENABLE, mask)
        await self.set_reg(REG.START, mask)
        pending, status = set(clusters), {}
        while pending:
            await self.wait_irq(max_cycles)
            raised = await self.reg(REG.IRQ_STATUS)
            for c in list(pending):
                if raised >> c & 1:
                    status[c] = await self.reg(cluster_reg(c, "STATUS"))
                    pending.discard(c)
            await self.set_reg(REG.IRQ_STATUS, raised & mask)
        return status

    async def wait_irq(self, max_cycles):
        dut = self.dut
        for _ in range(max(1, max_cycles)):
            await RisingEdge(dut.clk)
            await ReadOnly()
            if str(dut.irq.value) == "1":
                await FallingEdge(dut.clk)
                return
        raise AssertionError(f"no interrupt within {max_cycles} cycles (hang)")

    async def reset(self, cycles=4):
        """Assert ``rst`` mid-run for ``cycles`` cycles."""
        dut = self.dut
        await FallingEdge(dut.clk)
        dut.rst.value = 1
        await ClockCycles(dut.clk, cycles)
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
