"""cocotb driver of the cluster: system memory model, host port, run monitor.

* :class:`SystemMemory` answers ``mem_req`` / ``mem_resp`` from a dict of 32-bit
  words, in order, one word a cycle at most, with optional random pauses and
  addresses that answer with an error.
* :class:`ClusterHost` loads tensors through the ``act`` port, starts a
  descriptor list, waits for ``done`` (with a cycle limit: a hang fails the
  test) and records every ``layer_done`` pulse with its cycle count.
"""

from collections import deque

from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from .clocking import start_clock_and_reset

__all__ = ["SystemMemory", "ClusterHost"]


def _high(signal):
    """A 1-bit output is high. Before its first input event Icarus leaves a
    combinational output of Amaranth's ``always @*`` blocks at X: not high."""
    return str(signal.value) == "1"


class SystemMemory:
    def __init__(self, dut, words, rng=None, pause=0.0, error_addrs=()):
        self.dut = dut
        self.words = dict(words)
        self.rng = rng
        self.pause = pause
        self.error_addrs = set(error_addrs)
        self.requests = []
        self._pending = deque()

    async def run(self):
        dut = self.dut
        dut.mem_resp__valid.value = 0
        dut.mem_req__ready.value = 1
        while True:
            await FallingEdge(dut.clk)
            beat = None
            if self._pending and not (self.pause and self.rng.random() < self.pause):
                beat = self._pending[0]
            if beat is None:
                dut.mem_resp__valid.value = 0
            else:
                addr = beat
                data = self.words.get(addr, 0) & 0xFFFFFFFF
                err = 1 if addr in self.error_addrs else 0
                dut.mem_resp__valid.value = 1
                dut.mem_resp__payload.value = data | (err << 32)
            await ReadOnly()
            if beat is not None and _high(dut.mem_resp__ready):
                self._pending.popleft()
            if _high(dut.mem_req__valid):
                payload = int(dut.mem_req__payload.value)
                addr, length = payload & 0xFFFFFFFF, (payload >> 32) & 0xFFFF
                self.requests.append((addr, length))
                self._pending.extend(range(addr, addr + length))
            await RisingEdge(dut.clk)


class ClusterHost:
    def __init__(self, dut, act_word):
        self.dut = dut
        self.act_word = act_word
        self.layers = []            # (layer_index, layer_cycles)

    async def start_clock(self):
        await start_clock_and_reset(self.dut, {"start": 0, "desc_addr": 0, "act__valid": 0,
                                               "act__payload": 0})

    def _act_payload(self, addr, write, data=0):
        addr_bits = len(self.dut.act__payload) - 1 - self.act_word
        return addr | (int(write) << addr_bits) | (data << (addr_bits + 1))

    async def write_words(self, base, words):
        dut = self.dut
        for i, word in enumerate(words):
            await FallingEdge(dut.clk)
            dut.act__valid.value = 1
            dut.act__payload.value = self._act_payload(base + i, True, word)
        await FallingEdge(dut.clk)
        dut.act__valid.value = 0

    async def access(self, addr, write=False, data=0):
        """One host access; returns ``(data, error)`` of its response."""
        dut = self.dut
        await FallingEdge(dut.clk)
        dut.act__valid.value = 1
        dut.act__payload.value = self._act_payload(addr, write, data)
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.act__valid.value = 0
        await ReadOnly()
        assert int(dut.act_resp__valid.value) == 1, "act port gave no response"
        payload = int(dut.act_resp__payload.value)
        return payload & ((1 << self.act_word) - 1), payload >> self.act_word

    async def read_words(self, base, count):
        """Words of the activation memory, pipelined one a cycle."""
        dut = self.dut
        out = []
        for i in range(count + 1):
            await FallingEdge(dut.clk)
            dut.act__valid.value = int(i < count)
            if i < count:
                dut.act__payload.value = self._act_payload(base + i, False)
            await ReadOnly()
            if i > 0:
                assert int(dut.act_resp__valid.value) == 1
                payload = int(dut.act_resp__payload.value)
                assert payload >> self.act_word == 0, f"read of word {base + i - 1} refused"
                out.append(payload & ((1 << self.act_word) - 1))
        await FallingEdge(dut.clk)
        dut.act__valid.value = 0
        return out

    async def start(self, desc_addr):
        """Pulse ``start`` for the list at ``desc_addr``."""
        dut = self.dut
        await FallingEdge(dut.clk)
        dut.desc_addr.value = desc_addr
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        self.layers = []

    async def run(self, desc_addr, max_cycles):
        """Start the list at ``desc_addr``; return ``(error_code, cycles, saturated)``."""
        await self.start(desc_addr)
        return await self.wait_done(max_cycles)

    async def wait_done(self, max_cycles):
        """Wait for ``done``, recording layers; a hang fails after ``max_cycles``."""
        dut = self.dut
        for cycle in range(max_cycles):
            await RisingEdge(dut.clk)
            await ReadOnly()
            if _high(dut.layer_done):
                self.layers.append((int(dut.layer_index.value) - 1, int(dut.layer_cycles.value)))
            if _high(dut.done):
                return (int(dut.error_code.value), int(dut.cycles.value),
                        int(dut.saturated.value))
        raise AssertionError(f"cluster did not finish within {max_cycles} cycles (hang)")
