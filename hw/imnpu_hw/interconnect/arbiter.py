"""Round-robin arbiter of several AXI4 managers onto one AXI4 manager port.

Reads and writes are arbitrated independently. A read grant lasts from the
granted manager's ``AR`` handshake to the ``RLAST`` beat of its burst; a write
grant from ``AW`` through the ``WLAST`` beat to the ``B`` response. So one read
and one write burst are outstanding on the shared port at a time, beats can
never be attributed to the wrong manager, and ``ARID``/``AWID`` carry the
index of the manager (for a waveform reader; responses are routed by grant).
"""

from amaranth import Array, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..params import positive_int
from .axi import AXI4Signature

__all__ = ["AXI4Arbiter"]

_ADDRESS_FIELDS = ("addr", "len", "size", "burst", "lock", "cache", "prot")


def _round_robin(m, requests, last, name):
    """Index of the first request after ``last`` (wrapping), and whether any is set."""
    n = len(requests)
    pick = Signal(range(max(2, n)), name=f"{name}_pick")
    # lowest requester above the last grant wins, else the lowest of all: the
    # later assignment overrides, so walk from the highest index down
    for i in reversed(range(n)):
        with m.If(requests[i]):
            m.d.comb += pick.eq(i)
    for i in reversed(range(1, n)):
        with m.If(requests[i] & (last < i)):
            m.d.comb += pick.eq(i)
    return pick


class AXI4Arbiter(wiring.Component):
    """``managers`` AXI4 manager ports onto one.

    Parameters
    ----------
    managers : int
        Number of upstream managers.
    addr_width, data_width : int

    Members
    -------
    up : ``In(AXI4Signature(id_width=1)).array(managers)``
        The managers' ports (their IDs are ignored).
    down : ``Out(AXI4Signature(id_width=max(1, ceil_log2(managers))))``
    """

    def __init__(self, managers, *, addr_width=32, data_width=32):
        positive_int("managers", managers)
        self._n = managers
        super().__init__({
            "up": In(AXI4Signature(addr_width=addr_width, data_width=data_width,
                                   id_width=1)).array(managers),
            "down": Out(AXI4Signature(addr_width=addr_width, data_width=data_width,
                                      id_width=max(1, ceil_log2(managers)))),
        })

    managers = property(lambda self: self._n)

    def elaborate(self, platform):
        m = Module()
        up, down, n = self.up, self.down, self._n

        # -- reads ------------------------------------------------------------------
        rd_grant = Signal(range(max(2, n)))
        rd_last = Signal(range(max(2, n)))
        rd_pick = _round_robin(m, [u.arvalid for u in up], rd_last, "rd")
        ar = {f: Array(getattr(u, f"ar{f}") for u in up) for f in _ADDRESS_FIELDS}
        arvalid = Array(u.arvalid for u in up)
        rready = Array(u.rready for u in up)
        with m.FSM(name="rd"):
            with m.State("IDLE"):
                with m.If(arvalid[rd_pick]):
                    m.d.sync += [rd_grant.eq(rd_pick), rd_last.eq(rd_pick)]
                    m.next = "AR"
            with m.State("AR"):
                m.d.comb += [down.arvalid.eq(arvalid[rd_grant]), down.arid.eq(rd_grant)]
                for f in _ADDRESS_FIELDS:
                    m.d.comb += getattr(down, f"ar{f}").eq(ar[f][rd_grant])
                for i, u in enumerate(up):
                    m.d.comb += u.arready.eq(down.arready & (rd_grant == i))
                with m.If(down.arvalid & down.arready):
                    m.next = "R"
            with m.State("R"):
                m.d.comb += down.rready.eq(rready[rd_grant])
                for i, u in enumerate(up):
                    m.d.comb += [u.rvalid.eq(down.rvalid & (rd_grant == i)),
                                 u.rdata.eq(down.rdata), u.rresp.eq(down.rresp),
                                 u.rlast.eq(down.rlast)]
                with m.If(down.rvalid & down.rready & down.rlast):
                    m.next = "IDLE"

        # -- writes -----------------------------------------------------------------
        wr_grant = Signal(range(max(2, n)))
        wr_last = Signal(range(max(2, n)))
        wr_pick = _round_robin(m, [u.awvalid for u in up], wr_last, "wr")
        aw = {f: Array(getattr(u, f"aw{f}") for u in up) for f in _ADDRESS_FIELDS}
        awvalid = Array(u.awvalid for u in up)
        w = {f: Array(getattr(u, f"w{f}") for u in up) for f in ("data", "strb", "last", "valid")}
        bready = Array(u.bready for u in up)
        with m.FSM(name="wr"):
            with m.State("IDLE"):
                with m.If(awvalid[wr_pick]):
                    m.d.sync += [wr_grant.eq(wr_pick), wr_last.eq(wr_pick)]
                    m.next = "AW"
            with m.State("AW"):
                m.d.comb += [down.awvalid.eq(awvalid[wr_grant]), down.awid.eq(wr_grant)]
                for f in _ADDRESS_FIELDS:
                    m.d.comb += getattr(down, f"aw{f}").eq(aw[f][wr_grant])
                for i, u in enumerate(up):
                    m.d.comb += u.awready.eq(down.awready & (wr_grant == i))
                with m.If(down.awvalid & down.awready):
                    m.next = "W"
            with m.State("W"):
                for f in ("data", "strb", "last", "valid"):
                    m.d.comb += getattr(down, f"w{f}").eq(w[f][wr_grant])
                for i, u in enumerate(up):
                    m.d.comb += u.wready.eq(down.wready & (wr_grant == i))
                with m.If(down.wvalid & down.wready & down.wlast):
                    m.next = "B"
            with m.State("B"):
                m.d.comb += down.bready.eq(bready[wr_grant])
                for i, u in enumerate(up):
                    m.d.comb += [u.bvalid.eq(down.bvalid & (wr_grant == i)),
                                 u.bresp.eq(down.bresp)]
                with m.If(down.bvalid & down.bready):
                    m.next = "IDLE"
        return m
