"""AXI4-Lite slave: the register file of :mod:`.regmap` and the memory windows.

One access at a time: a write is taken when both ``AW`` and ``W`` are valid,
a read when ``AR`` is; when both wait, reads and writes take turns. Register
reads and writes answer three cycles after acceptance (a read selects within
each register block, then between the blocks; a write takes effect in the
cycle before its response); window accesses (activation memory,
tile arrays) go through the cluster's own host ports and are answered when
``win_resp`` says so (in :class:`IMNPU`, which registers the request once and
the response twice: five cycles after the request; the activation memory's
answer passes a register of its own, the tile arrays' requests one more and
their answers two).
"""

from functools import reduce
from operator import or_

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..config import IMNPUConfig
from ..interconnect.axi import AXI4LiteSignature, AXIResp
from ..interconnect.dma import Job, JobError
from . import regmap
from .regmap import Access

__all__ = ["ClusterStatus", "WindowRequest", "ControlSlave"]


class ClusterStatus(data.Struct):
    """What the registers show of one cluster and its DMA."""
    busy: 1
    done: 1              # pulse: the job ended
    saturated: 1
    error: JobError
    layers: 16
    job_cycles: 32
    run_cycles: 32
    layer_cycles: 32


def WindowRequest(clusters):
    """An access to a cluster's memory: ``tile`` selects the tile arrays, else
    the activation memory; ``addr`` is a 32-bit word address within it."""
    return data.StructLayout({
        "cluster": range(max(2, clusters)), "tile": 1, "addr": 19, "write": 1, "data": 32,
    })


WindowResponse = data.StructLayout({"data": 32, "error": 1})


class ControlSlave(wiring.Component):
    """The IMNPU's AXI4-Lite register slave.

    Parameters
    ----------
    config : IMNPUConfig

    Members
    -------
    bus : ``In(AXI4LiteSignature())``
    start : ``Out(C)``
        Pulses: start cluster ``c``'s job.
    jobs : ``Out(Job).array(C)``
        The job registers.
    status : ``In(ClusterStatus).array(C)``
    irq : ``Out(1)``
    win, win_resp
        Window accesses; the response comes one or more cycles after the request.
    """

    def __init__(self, config):
        if not isinstance(config, IMNPUConfig):
            raise TypeError(f"config must be an IMNPUConfig, not {config!r}")
        if config.C > regmap.MAX_CLUSTERS:
            raise ValueError(f"C = {config.C} clusters; the register map holds at most "
                             f"{regmap.MAX_CLUSTERS}")
        if config.A > regmap.TILE_WINDOW - regmap.ACT_WINDOW:
            raise ValueError(f"A = {config.A} bytes does not fit the activation window")
        if config.T * regmap.tile_stride(config.W, config.R) > regmap.WINDOW_STRIDE - regmap.TILE_WINDOW:
            raise ValueError("the tile arrays do not fit the tile window")
        self._config = config
        C = config.C
        super().__init__({
            "bus": In(AXI4LiteSignature()),
            "start": Out(C),
            "jobs": Out(Job).array(C),
            "status": In(ClusterStatus).array(C),
            "irq": Out(1),
            "win": Out(stream.Signature(WindowRequest(C))),
            "win_resp": In(wiring.Signature({"valid": Out(1), "payload": Out(WindowResponse)})),
        })

    config = property(lambda self: self._config)

    def _constant(self, name):
        cfg = self._config
        return {
            "ID": regmap.IMNPU_ID,
            "VERSION": regmap.VERSION[0] << 16 | regmap.VERSION[1],
            "CLUSTERS": cfg.C, "TILES": cfg.T, "ROWS": cfg.R, "WIDTH": cfg.W,
            "PARALLEL": cfg.P, "ACT_BYTES": cfg.A,
            "TILE_STRIDE": regmap.tile_stride(cfg.W, cfg.R),
        }[name]

    def elaborate(self, platform):
        m = Module()
        cfg, C = self._config, self._config.C
        bus = self.bus

        irq_enable = Signal(C)
        irq_status = Signal(C)
        done = Cat(s.done for s in self.status)
        busy = Cat(s.busy for s in self.status)
        m.d.comb += self.irq.eq((irq_status & irq_enable).any())

        addr = Signal(32)
        wdata = Signal(32)
        wstrb = Signal(4)
        rdata = Signal(32)
        resp = Signal(2)
        read_turn = Signal()         # both waiting: the read goes first
        clear = Signal(C)            # IRQ_STATUS bits written with 1, committed this cycle
        m.d.sync += irq_status.eq((irq_status & ~clear) | done)

        # -- decode --------------------------------------------------------------------
        is_window = Signal()
        win_cluster = Signal(range(max(2, C)))
        win_tile = Signal()
        win_ok = Signal()            # inside the window's memory (else SLVERR)
        m.d.comb += is_window.eq(addr >= regmap.REG_SPACE)
        cluster_field = addr[ceil_log2(regmap.WINDOW_STRIDE):]
        offset = addr[:ceil_log2(regmap.WINDOW_STRIDE)]
        tile_bytes = cfg.T * regmap.tile_stride(cfg.W, cfg.R)
        m.d.comb += [
            win_cluster.eq(cluster_field - 1),
            win_tile.eq(offset >= regmap.TILE_WINDOW),
            win_ok.eq(Mux(win_tile, offset - regmap.TILE_WINDOW < tile_bytes,
                          offset - regmap.ACT_WINDOW < cfg.A)),
        ]
        window_mapped = is_window & (cluster_field >= 1) & (cluster_field <= C)

        def write_cases(on_write):
            """Call back for every register address: (register, cluster or None)."""
            with m.Switch(addr):
                for reg in regmap.GLOBAL_REGISTERS:
                    with m.Case(reg.offset):
                        on_write(reg, None)
                for c in range(C):
                    for reg in regmap.CLUSTER_REGISTERS:
                        with m.Case(regmap.CLUSTER_REG_BASE + c * regmap.CLUSTER_REG_STRIDE
                                    + reg.offset):
                            on_write(reg, c)

        # the job registers are the fields of `Job`, named in lower case
        job_fields = {r.name: r.name.lower() for r in regmap.CLUSTER_REGISTERS
                      if r.access == Access.RW}
        assert set(job_fields.values()) == set(data.Layout.cast(Job).members)

        def status_word(s):
            """The STATUS register of status ``s``, laid out by the register map's fields."""
            parts = {"BUSY": s.busy, "SATURATED": s.saturated, "ERROR": s.error.as_value(),
                     "LAYERS": s.layers}
            pieces, position = [], 0
            fields = {r.name: r for r in regmap.CLUSTER_REGISTERS}["STATUS"].fields
            for f in sorted(fields, key=lambda f: f.lsb):
                pieces += [Const(0, f.lsb - position), parts[f.name]]
                position = f.lsb + f.width
            return Cat(*pieces)

        def read_value(reg, c):
            if c is None:
                value = {"START": 0, "BUSY": busy, "IRQ_ENABLE": irq_enable,
                         "IRQ_STATUS": irq_status}.get(reg.name)
                if value is None:
                    value = Const(self._constant(reg.name), 32)
            else:
                s = self.status[c]
                if reg.name in job_fields:
                    value = getattr(self.jobs[c], job_fields[reg.name])
                else:
                    value = {
                        "STATUS": status_word(s),
                        "JOB_CYCLES": s.job_cycles, "RUN_CYCLES": s.run_cycles,
                        "LAYER_CYCLES": s.layer_cycles,
                    }[reg.name]
            return value

        do_write = Signal()          # perform the register write at `addr` this cycle
        takes = []                   # (register, cluster, write decoded this cycle)

        def write_value(reg, c):
            if reg.access == Access.RO:
                m.d.comb += reg_wresp.eq(AXIResp.SLVERR)
                return
            m.d.comb += reg_wresp.eq(Mux(wstrb == 0xF, AXIResp.OKAY, AXIResp.SLVERR))
            if c is not None:
                with m.If(busy[c]):
                    m.d.comb += reg_wresp.eq(AXIResp.SLVERR)
            # the write is taken under the same conditions as reg_wresp's OKAY, but
            # from this case's address match, not through the multiplexer of all
            # registers' responses
            take = Signal(name=f"take_{reg.name.lower()}" + ("" if c is None else f"_{c}"))
            m.d.comb += take.eq(do_write & (wstrb == 0xF) & (1 if c is None else ~busy[c]))
            takes.append((reg, c, take))

        reg_wresp = Signal(2, init=AXIResp.DECERR)
        write_cases(write_value)

        # A register read selects in two steps: each register block (the global
        # registers, each cluster's) by the offset within it into a register, and
        # in state READ_REG among those blocks. In one step, `addr` -> the decode ->
        # the values gathered from beside both clusters -> `rdata` was 21.8 ns routed
        # on the `fpga` self-test.
        block_bits = ceil_log2(regmap.CLUSTER_REG_STRIDE)
        blocks = [(None, 0, regmap.GLOBAL_REGISTERS)] + [
            (c, regmap.CLUSTER_REG_BASE + c * regmap.CLUSTER_REG_STRIDE,
             regmap.CLUSTER_REGISTERS) for c in range(C)]
        block_values, block_hits = [], []
        for c, base, registers in blocks:
            suffix = "global" if c is None else str(c)
            # the global block spans the offsets below the first cluster's
            bits = ceil_log2(regmap.CLUSTER_REG_BASE) if c is None else block_bits
            value, hit = Signal(32, name=f"rd_value_{suffix}"), Signal(name=f"rd_hit_{suffix}")
            value_r, hit_r = Signal(32, name=f"rd_value_{suffix}_r"), Signal(name=f"rd_hit_{suffix}_r")
            with m.Switch(addr[:bits]):
                for reg in registers:
                    with m.Case(reg.offset):
                        m.d.comb += hit.eq(1)
                        m.d.comb += value.eq(read_value(reg, c))
            here = (addr[bits:] == base >> bits) & hit     # a register of this block
            m.d.sync += [value_r.eq(Mux(here, value, 0)), hit_r.eq(here)]
            block_values.append(value_r)
            block_hits.append(hit_r)

        # A register write takes effect a cycle after its decode, in state COMMIT,
        # before the B response: the decode of `addr` then ends in a register per
        # writable register, not in the enables of the job registers beside the
        # clusters and DMA engines, or in their start (22.9 ns routed on the `fpga`
        # self-test).
        for reg, c, take in takes:
            if reg.name == "START":
                start = Signal(C)
                m.d.sync += start.eq(Mux(take, wdata[:C] & ~busy, 0))
                m.d.comb += self.start.eq(start)
                continue
            commit = Signal(name=take.name.replace("take_", "commit_", 1))
            m.d.sync += commit.eq(take)
            if reg.name == "IRQ_ENABLE":
                with m.If(commit):
                    m.d.sync += irq_enable.eq(wdata[:C])
            elif reg.name == "IRQ_STATUS":
                m.d.comb += clear.eq(Mux(commit, wdata[:C], 0))
            else:
                value = wdata
                if reg.name in ("DESC_PTR", "IN_SRC", "OUT_DST"):
                    value = Cat(Const(0, 2), wdata[2:])
                with m.If(commit):
                    m.d.sync += getattr(self.jobs[c], job_fields[reg.name]).eq(value)

        # -- the transaction FSM -----------------------------------------------------------
        win = self.win
        m.d.comb += [win.payload.cluster.eq(win_cluster), win.payload.tile.eq(win_tile),
                     win.payload.addr.eq(Mux(win_tile, offset - regmap.TILE_WINDOW,
                                             offset - regmap.ACT_WINDOW)[2:]),
                     win.payload.data.eq(wdata)]
        with m.FSM(name="axil"):
            with m.State("IDLE"):
                take_write = bus.awvalid & bus.wvalid & ~(bus.arvalid & read_turn)
                with m.If(take_write):
                    m.d.comb += [bus.awready.eq(1), bus.wready.eq(1)]
                    m.d.sync += [addr.eq(Cat(Const(0, 2), bus.awaddr[2:])), wdata.eq(bus.wdata),
                                 wstrb.eq(bus.wstrb), read_turn.eq(1)]
                    m.next = "WRITE"
                with m.Elif(bus.arvalid):
                    m.d.comb += bus.arready.eq(1)
                    m.d.sync += [addr.eq(Cat(Const(0, 2), bus.araddr[2:])), read_turn.eq(0)]
                    m.next = "READ"
            with m.State("WRITE"):
                with m.If(window_mapped):
                    with m.If(~win_ok | (wstrb != 0xF)):
                        m.d.sync += resp.eq(AXIResp.SLVERR)
                        m.next = "B"
                    with m.Else():
                        m.d.comb += [win.valid.eq(1), win.payload.write.eq(1)]
                        with m.If(win.ready):
                            m.next = "WIN_WRITE"
                with m.Elif(is_window):
                    m.d.sync += resp.eq(AXIResp.DECERR)
                    m.next = "B"
                with m.Else():
                    m.d.comb += do_write.eq(1)
                    m.d.sync += resp.eq(reg_wresp)
                    m.next = "COMMIT"
            with m.State("COMMIT"):             # the register write takes effect
                m.next = "B"
            with m.State("WIN_WRITE"):
                with m.If(self.win_resp.valid):
                    m.d.sync += resp.eq(Mux(self.win_resp.payload.error, AXIResp.SLVERR,
                                            AXIResp.OKAY))
                    m.next = "B"
            with m.State("B"):
                m.d.comb += [bus.bvalid.eq(1), bus.bresp.eq(resp)]
                with m.If(bus.bready):
                    m.next = "IDLE"
            with m.State("READ"):
                with m.If(window_mapped):
                    with m.If(~win_ok):
                        m.d.sync += [resp.eq(AXIResp.SLVERR), rdata.eq(0)]
                        m.next = "R"
                    with m.Else():
                        m.d.comb += win.valid.eq(1)
                        with m.If(win.ready):
                            m.next = "WIN_READ"
                with m.Elif(is_window):
                    m.d.sync += [resp.eq(AXIResp.DECERR), rdata.eq(0)]
                    m.next = "R"
                with m.Else():
                    m.next = "READ_REG"
            with m.State("READ_REG"):         # the block registers hold `addr`'s
                m.d.sync += [resp.eq(Mux(Cat(*block_hits).any(), AXIResp.OKAY, AXIResp.DECERR)),
                             rdata.eq(reduce(or_, block_values))]
                m.next = "R"
            with m.State("WIN_READ"):
                with m.If(self.win_resp.valid):
                    m.d.sync += [resp.eq(Mux(self.win_resp.payload.error, AXIResp.SLVERR,
                                             AXIResp.OKAY)),
                                 rdata.eq(self.win_resp.payload.data)]
                    m.next = "R"
            with m.State("R"):
                m.d.comb += [bus.rvalid.eq(1), bus.rresp.eq(resp), bus.rdata.eq(rdata)]
                with m.If(bus.rready):
                    m.next = "IDLE"
        return m
