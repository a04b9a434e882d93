"""The IMNPU top level (ARCHITECTURE.md section 2): ``C`` clusters behind AXI.

``s_axil_*``: AXI4-Lite slave, the register map of :mod:`.regmap` and the
clusters' memory windows (:mod:`.control`). ``m_axi_*``: AXI4 manager (32-bit
data), the clusters' DMA engines (:mod:`..interconnect.dma`) arbitrated onto
one port (:mod:`..interconnect.arbiter`). ``irq``: high while a cluster's
IRQ_STATUS bit is set and enabled. Clock and reset are the ``sync`` domain
(``clk``, ``rst``; reset is synchronous and returns every block to idle).
"""

from functools import reduce
from operator import or_

from amaranth import Cat, ClockSignal, Elaboratable, Instance, Module, Mux, ResetSignal, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect
from amaranth.utils import ceil_log2

from ..cluster.cluster import Cluster
from ..config import IMNPUConfig
from ..interconnect.arbiter import AXI4Arbiter
from ..interconnect.axi import AXI4LiteSignature, AXI4Signature, connect_flat, flat_members
from ..interconnect.dma import ClusterDMA
from ..interconnect.register_slice import AXI4ReadSlice
from .control import ControlSlave

__all__ = ["IMNPU"]

#: activation memory word of the clusters (the system word)
ACT_WORD = 32


def _never_elaborated(obj):
    """Silence Amaranth's "created but never used" for ``obj`` and its parts."""
    if isinstance(obj, Elaboratable):
        obj._MustUse__silence = True
        for value in vars(obj).values():
            for part in (value if isinstance(value, (list, tuple)) else [value]):
                if isinstance(part, Elaboratable):
                    _never_elaborated(part)


class IMNPU(wiring.Component):
    """The accelerator a host talks to.

    Parameters
    ----------
    config : IMNPUConfig
        ``C``, ``T``, ``R``, ``W``, ``P``, ``A`` and the tile pipeline depth.
    cluster_module : str or None
        ``None``: the clusters are elaborated into the design. A name: each
        cluster is an instance of the Verilog module of that name (the
        :class:`Cluster` exported once, with that name), so that a Verilog
        export elaborates one cluster instead of ``C``.

    Members
    -------
    s_axil_* : AXI4-Lite subordinate (``awaddr`` ... ``rready``), 32-bit
    m_axi_* : AXI4 manager (``awid`` ... ``rready``), 32-bit data, ID = cluster
    irq : ``Out(1)``
    """

    def __init__(self, config, *, cluster_module=None):
        if not isinstance(config, IMNPUConfig):
            raise TypeError(f"config must be an IMNPUConfig, not {config!r}")
        if cluster_module is not None and (not isinstance(cluster_module, str) or
                                           not cluster_module.isidentifier()):
            raise ValueError(f"cluster_module must be a Verilog identifier, not {cluster_module!r}")
        self._config = config
        self._cluster_module = cluster_module
        self._id_width = max(1, ceil_log2(config.C))
        super().__init__({
            **flat_members("s_axil", AXI4LiteSignature(), manager=False),
            **flat_members("m_axi", AXI4Signature(id_width=self._id_width), manager=True),
            "irq": Out(1),
        })

    config = property(lambda self: self._config)
    cluster_module = property(lambda self: self._cluster_module)

    def new_cluster(self):
        """A :class:`Cluster` of this configuration."""
        cfg = self._config
        return Cluster(tiles=cfg.T, rows=cfg.R, width=cfg.W, parallel=cfg.P,
                       act_bytes=cfg.A, act_word=ACT_WORD, tile_depth=cfg.pipeline_depth)

    def _instance(self, cluster):
        """An instance of ``cluster_module`` wired to ``cluster``'s port signals
        (``cluster`` itself, only a holder of those signals, is not elaborated)."""
        _never_elaborated(cluster)
        ports = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
        for path, member, value in cluster.signature.flatten(cluster):
            name = "__".join(map(str, path))
            ports[("i_" if member.flow == In else "o_") + name] = Value.cast(value)
        return Instance(self._cluster_module, **ports)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        m.submodules.control = control = ControlSlave(cfg)
        m.submodules.arbiter = arbiter = AXI4Arbiter(cfg.C)
        connect_flat(m, self, "s_axil", control.bus)
        connect_flat(m, self, "m_axi", arbiter.down)
        m.d.comb += self.irq.eq(control.irq)

        # The window request passes a register, the response two: the clusters'
        # memories are far from the control slave (which waits for the response).
        m.d.comb += control.win.ready.eq(1)
        win_valid = Signal()
        win = Signal.like(control.win.payload)
        m.d.sync += [win_valid.eq(control.win.valid), win.eq(control.win.payload)]
        # the cycle after a request: the addressed cluster answers (only then: the
        # activation port also answers the DMA's copies)
        win_pending = Signal()
        win_cluster = Signal.like(win.cluster)
        win_tile = Signal()
        m.d.sync += [win_pending.eq(win_valid), win_cluster.eq(win.cluster), win_tile.eq(win.tile)]
        # each cluster's answer is registered next to it (all zero unless it answers),
        # then the one that answered (at most one) is registered for the control slave
        resp_valid = [Signal(name=f"win_resp_valid{c}") for c in range(cfg.C)]
        resp_error = [Signal(name=f"win_resp_error{c}") for c in range(cfg.C)]
        resp_data = [Signal.like(control.win_resp.payload.data, name=f"win_resp_data{c}")
                     for c in range(cfg.C)]
        m.d.sync += [control.win_resp.valid.eq(Cat(*resp_valid).any()),
                     control.win_resp.payload.error.eq(Cat(*resp_error).any()),
                     control.win_resp.payload.data.eq(reduce(or_, resp_data))]

        for c in range(cfg.C):
            cluster = self.new_cluster()
            dma = ClusterDMA(act_words=cluster.act_depth, act_addr_bits=len(cluster.act.payload.addr))
            if self._cluster_module is None:
                m.submodules[f"cluster{c}"] = cluster
            else:
                m.submodules[f"cluster{c}"] = self._instance(cluster)
            m.submodules[f"dma{c}"] = dma
            # read data (system memory -> tile arrays) and RREADY through registers
            m.submodules[f"rslice{c}"] = rslice = AXI4ReadSlice(id_width=dma.axi.signature.id_width)
            connect(m, dma.axi, rslice.sub)
            connect(m, rslice.mgr, arbiter.up[c])
            connect(m, cluster.mem_req, dma.mem_req)
            connect(m, dma.mem_resp, cluster.mem_resp)
            m.d.comb += [
                cluster.start.eq(dma.cl_start), cluster.desc_addr.eq(dma.cl_desc_addr),
                dma.cl_done.eq(cluster.done), dma.cl_error.eq(cluster.error_code),
                dma.start.eq(control.start[c]), dma.job.eq(control.jobs[c]),
            ]
            status = control.status[c]
            layers = Signal(16, name=f"layers{c}")
            m.d.comb += [
                status.busy.eq(dma.busy), status.done.eq(dma.done),
                status.saturated.eq(cluster.saturated), status.error.eq(dma.error),
                status.layers.eq(layers), status.job_cycles.eq(dma.cycles),
                status.run_cycles.eq(cluster.cycles), status.layer_cycles.eq(cluster.layer_cycles),
            ]
            # layer_index counts the layers since the cluster's start (it has already
            # advanced when layer_done pulses)
            with m.If(cluster.layer_done):
                m.d.sync += layers.eq(cluster.layer_index)
            with m.Elif(dma.start & ~dma.busy):
                m.d.sync += layers.eq(0)

            # the activation port: the DMA's copies while a job runs, the host's window
            # accesses otherwise (refused by the cluster while it computes)
            host_act = win_valid & (win.cluster == c) & ~win.tile
            with m.If(dma.busy):
                m.d.comb += [cluster.act.valid.eq(dma.act.valid),
                             cluster.act.payload.eq(dma.act.payload)]
            with m.Else():
                m.d.comb += [cluster.act.valid.eq(host_act),
                             cluster.act.payload.addr.eq(win.addr),
                             cluster.act.payload.write.eq(win.write),
                             cluster.act.payload.data.eq(win.data)]
            m.d.comb += [dma.act.ready.eq(cluster.act.ready),
                         dma.act_resp.valid.eq(cluster.act_resp.valid & dma.busy),
                         dma.act_resp.payload.eq(cluster.act_resp.payload)]
            # a tile access is decided with the request's register (on the DMA's busy
            # of that cycle): the tile arrays' write enables start at a register
            host_tile = Signal(name=f"host_tile{c}")
            m.d.sync += host_tile.eq(control.win.valid & (control.win.payload.cluster == c) &
                                     control.win.payload.tile & ~dma.busy)
            m.d.comb += [cluster.tile_bus.valid.eq(host_tile),
                         cluster.tile_bus.payload.addr.eq(win.addr),
                         cluster.tile_bus.payload.write.eq(win.write),
                         cluster.tile_bus.payload.data.eq(win.data)]

            # refused while the job runs
            refused = Signal(name=f"refused{c}")
            m.d.sync += refused.eq(win_valid & (win.cluster == c) &
                                   Mux(win.tile, ~host_tile, dma.busy))
            m.d.sync += [resp_valid[c].eq(0), resp_error[c].eq(0), resp_data[c].eq(0)]
            # (the activation memory a cycle after the request, the tile arrays three;
            # the activation memory's answer first passes a register of its own, next
            # to its block RAM, so it answers two cycles after the request)
            act_valid = Signal(name=f"win_act_valid{c}")
            act = Signal.like(cluster.act_resp.payload, name=f"win_act{c}")
            m.d.sync += [act_valid.eq(cluster.act_resp.valid), act.eq(cluster.act_resp.payload)]
            act_wait = Signal(name=f"win_act_wait{c}")
            tile_wait = [Signal(name=f"win_tile_wait{c}_{k}") for k in range(2)]
            m.d.sync += [act_wait.eq(win_pending & (win_cluster == c) & ~win_tile & ~refused),
                         tile_wait[0].eq(win_pending & (win_cluster == c) & win_tile & ~refused),
                         tile_wait[1].eq(tile_wait[0])]
            with m.If(win_pending & (win_cluster == c) & refused):
                m.d.sync += [resp_valid[c].eq(1), resp_error[c].eq(1)]
            with m.If(act_wait):
                m.d.sync += [resp_valid[c].eq(act_valid), resp_data[c].eq(act.data),
                             resp_error[c].eq(act.error)]
            with m.If(tile_wait[1]):
                m.d.sync += [resp_valid[c].eq(cluster.tile_bus_resp.valid),
                             resp_data[c].eq(cluster.tile_bus_resp.payload.data),
                             resp_error[c].eq(cluster.tile_bus_resp.payload.error)]
        return m
