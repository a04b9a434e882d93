"""cocotb driver and monitor of the DIMC tile's ports.

The tile's streams are flattened by Amaranth into ``<name>__valid``,
``<name>__ready`` and a packed ``<name>__payload``; the payload layouts come
from the RTL's own :class:`~amaranth.lib.data.StructLayout` so that the bit
positions are never written twice.

:class:`TileDriver` runs one ordered queue of transactions (memory-mode
accesses, feature writes, compute commands), at most one a cycle, optionally
with random idle cycles and random backpressure on ``res``. A :class:`TileModel`
of the array and the feature register gives, at the moment each transaction is
issued, what the tile must answer: results are checked in order against
:func:`imnpu_ref.row_dot`.
"""

from collections import deque

from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from imnpu_hw.macro import DIMCTile

from .dimc_tile_model import Bus, Cmd, Feat, TileModel, cmd_bits
from .clocking import start_clock_and_reset

__all__ = ["TileDriver", "tile_for"]

class TileDriver:
    """Drives a DIMC tile DUT; see the module docstring.

    Parameters
    ----------
    dut : cocotb handle of the ``dimc_tile`` top level.
    tile : :class:`DIMCTile` built with the same parameters (for layouts).
    rng : ``numpy.random.Generator`` for idle cycles and backpressure.
    idle : probability of an idle cycle before a transaction.
    stall : probability that ``res.ready`` is low in a cycle.
    """

    def __init__(self, dut, tile, rng=None, idle=0.0, stall=0.0):
        self.dut = dut
        self.tile = tile
        self.model = TileModel(tile)
        self.rng = rng
        self.idle = idle
        self.stall = stall
        self.bus_layout = tile.bus.payload.shape()
        self.feat_layout = tile.feat.payload.shape()
        self.cmd_layout = tile.cmd.payload.shape()
        self.res_layout = tile.res.payload.shape()
        self.resp_layout = tile.bus_resp.payload.shape()
        self.cycle = 0
        self.errors = []
        self.checked = {"bus": 0, "cmd": 0}
        self.accept_cycles = []      # cycle of each accepted command
        self.result_cycles = []      # cycle of each result
        self._pending_resp = deque()
        self._pending_res = deque()

    # -- set-up ---------------------------------------------------------------

    async def start(self):
        idle = {f"{name}__{field}": 0 for name in ("bus", "feat", "cmd")
                for field in ("valid", "payload")}
        await start_clock_and_reset(self.dut, dict(idle, res__ready=1))

    # -- encoding of payloads -----------------------------------------------

    def _bus_bits(self, op):
        return self.bus_layout.const({
            "addr": self.tile.bus_address(op.row, op.word), "write": int(op.write),
            "data": op.data}).as_bits()

    # -- the cycle engine -------------------------------------------------------

    async def run(self, transactions, drain=True, max_cycles=None):
        """Issue ``transactions`` in order, one a cycle at most, and check every answer."""
        dut = self.dut
        queue = deque(transactions)
        limit = max_cycles or 64 * (len(queue) + 16)
        start = self.cycle
        while queue or (drain and (self._pending_res or self._pending_resp)):
            if self.cycle - start > limit:
                raise AssertionError(
                    f"tile hung: {len(queue)} transactions left, "
                    f"{len(self._pending_res)} results outstanding after {limit} cycles")
            await FallingEdge(dut.clk)
            op = queue[0] if queue else None
            if op is not None and self.idle and self.rng.random() < self.idle:
                op = None
            for name in ("bus", "feat", "cmd"):
                getattr(dut, f"{name}__valid").value = 0
            if isinstance(op, Bus):
                dut.bus__valid.value = 1
                dut.bus__payload.value = self._bus_bits(op)
            elif isinstance(op, Feat):
                dut.feat__valid.value = 1
                dut.feat__payload.value = self.feat_layout.const(
                    {"word": op.word, "data": op.data}).as_bits()
            elif isinstance(op, Cmd):
                dut.cmd__valid.value = 1
                dut.cmd__payload.value = cmd_bits(self.cmd_layout, op)
            ready_out = 0 if (self.stall and self.rng.random() < self.stall) else 1
            dut.res__ready.value = ready_out
            await ReadOnly()
            self._observe(ready_out)
            if op is not None:
                name = {Bus: "bus", Feat: "feat", Cmd: "cmd"}[type(op)]
                if int(getattr(dut, f"{name}__ready").value):
                    queue.popleft()
                    self._expect(op)
            await RisingEdge(dut.clk)
            self.cycle += 1
        await FallingEdge(dut.clk)
        for name in ("bus", "feat", "cmd"):
            getattr(dut, f"{name}__valid").value = 0

    def _expect(self, op):
        if isinstance(op, Bus):
            self._pending_resp.append((op, self.model.bus(op)))
        elif isinstance(op, Feat):
            self.model.feat(op)
        else:
            self.accept_cycles.append(self.cycle)
            self._pending_res.append((op, self.model.cmd(op)))

    def _observe(self, ready_out):
        dut = self.dut
        if int(dut.bus_resp__valid.value):
            resp = self.resp_layout.from_bits(int(dut.bus_resp__payload.value))
            if not self._pending_resp:
                self._fail(f"cycle {self.cycle}: unexpected bus response")
            else:
                op, (data, error) = self._pending_resp.popleft()
                got = (int(resp.data), int(resp.error))
                if got != (data, error):
                    self._fail(f"cycle {self.cycle}: {op} answered (data, error) = "
                               f"{got}, expected {(data, error)}")
                self.checked["bus"] += 1
        if int(dut.res__valid.value) and ready_out:
            res = self.res_layout.from_bits(int(dut.res__payload.value))
            self.result_cycles.append(self.cycle)
            if not self._pending_res:
                self._fail(f"cycle {self.cycle}: unexpected result")
                return
            op, (row, dots, error) = self._pending_res.popleft()
            got = (int(res.row), [int(res.dot[i]) for i in range(self.tile.parallel)],
                   int(res.error))
            if got != (row, dots, error):
                self._fail(f"cycle {self.cycle}: {op} gave (row, dots, error) = {got}, "
                           f"expected {(row, dots, error)}")
            self.checked["cmd"] += 1

    def _fail(self, message):
        self.errors.append(message)
        if len(self.errors) <= 10:
            self.dut._log.error(message)

    def check(self):
        """Raise ``AssertionError`` if any answer differed from the model."""
        assert not self.errors, f"{len(self.errors)} mismatches; first: {self.errors[0]}"

    # -- transaction builders ---------------------------------------------------

    def write_row(self, row, value):
        ww = self.tile.word_width
        return [Bus(row, w, True, (value >> (w * ww)) & ((1 << ww) - 1))
                for w in range(self.tile.words_per_row)]

    def read_row(self, row):
        return [Bus(row, w, False) for w in range(self.tile.words_per_row)]

    def load_features(self, value):
        fw = self.tile.feature_width
        return [Feat(w, (value >> (w * fw)) & ((1 << fw) - 1))
                for w in range(self.tile.feature_words)]


def tile_for(config):
    """The :class:`DIMCTile` of a named configuration, for its layouts."""
    return DIMCTile(**config.tile_params())

