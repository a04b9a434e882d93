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


def _arbitration(m, up, ch, name):
    """Grant, last grant and round-robin pick of one direction (``ch`` = ``"ar"``
    or ``"aw"``); call before the direction's FSM."""
    n = len(up)
    grant = Signal(range(max(2, n)), name=f"{name}_grant")
    last = Signal(range(max(2, n)), name=f"{name}_last")
    pick = _round_robin(m, [getattr(u, f"{ch}valid") for u in up], last, name)
    return grant, last, pick


def _address_states(m, up, down, ch, grant, last, pick):
    """The IDLE and ADDR states of one direction: take the picked manager and
    forward its address channel; the FSM goes on in state ``"DATA"``."""
    valid = Array(getattr(u, f"{ch}valid") for u in up)
    fields = {f: Array(getattr(u, f"{ch}{f}") for u in up) for f in _ADDRESS_FIELDS}
    with m.State("IDLE"):
        with m.If(valid[pick]):
            m.d.sync += [grant.eq(pick), last.eq(pick)]
            m.next = "ADDR"
    with m.State("ADDR"):
        m.d.comb += [getattr(down, f"{ch}valid").eq(valid[grant]),
                     getattr(down, f"{ch}id").eq(grant)]
        for f in _ADDRESS_FIELDS:
            m.d.comb += getattr(down, f"{ch}{f}").eq(fields[f][grant])
        for i, u in enumerate(up):
            m.d.comb += getattr(u, f"{ch}ready").eq(getattr(down, f"{ch}ready") & (grant == i))
        with m.If(getattr(down, f"{ch}valid") & getattr(down, f"{ch}ready")):
            m.next = "DATA"


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
        up, down = self.up, self.down

        # -- reads ------------------------------------------------------------------
        rready = Array(u.rready for u in up)
        rd_grant, rd_last, rd_pick = _arbitration(m, up, "ar", "rd")
        with m.FSM(name="rd"):
            _address_states(m, up, down, "ar", rd_grant, rd_last, rd_pick)
            with m.State("DATA"):
                m.d.comb += down.rready.eq(rready[rd_grant])
                for i, u in enumerate(up):
                    m.d.comb += [u.rvalid.eq(down.rvalid & (rd_grant == i)),
                                 u.rdata.eq(down.rdata), u.rresp.eq(down.rresp),
                                 u.rlast.eq(down.rlast)]
                with m.If(down.rvalid & down.rready & down.rlast):
                    m.next = "IDLE"

        # -- writes -----------------------------------------------------------------
        w = {f: Array(getattr(u, f"w{f}") for u in up) for f in ("data", "strb", "last", "valid")}
        bready = Array(u.bready for u in up)
        wr_grant, wr_last, wr_pick = _arbitration(m, up, "aw", "wr")
        with m.FSM(name="wr"):
            _address_states(m, up, down, "aw", wr_grant, wr_last, wr_pick)
            with m.State("DATA"):
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
