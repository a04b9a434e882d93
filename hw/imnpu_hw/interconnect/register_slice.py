"""Register slices: a stream, or an AXI4 port's read data channel, through registers.

A long bus across the device (the system memory's read data on its way to a
cluster's tile arrays, the cluster's ``ready`` on its way back) is one timing
path unless something registers it. :class:`RegisterSlice` registers both
directions of a stream: ``o.valid``/``o.payload`` and ``i.ready`` all leave
flip-flops, at one beat a cycle and one cycle of latency, with a second
(skid) register that holds the beat taken while the output stalled.
:class:`AXI4ReadSlice` puts one on the ``R`` channel of an AXI4 port and
passes the other channels through.
"""

from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4Signature

__all__ = ["RegisterSlice", "AXI4ReadSlice"]


class RegisterSlice(wiring.Component):
    """A fully registered stream stage.

    Parameters
    ----------
    shape : shape-like
        The payload.

    Members
    -------
    i : ``In(stream.Signature(shape))``
        ``i.ready`` is a register: low only while the skid register is full.
    o : ``Out(stream.Signature(shape))``
        ``o.valid`` and ``o.payload`` are registers.
    """

    def __init__(self, shape):
        self._shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        skid = Signal(self._shape)
        skid_full = Signal()
        m.d.comb += i.ready.eq(~skid_full)
        with m.If(o.ready | ~o.valid):             # the output register takes a beat
            with m.If(skid_full):
                m.d.sync += [o.payload.eq(skid), o.valid.eq(1), skid_full.eq(0)]
            with m.Else():
                m.d.sync += [o.payload.eq(i.payload), o.valid.eq(i.valid)]
        with m.Elif(i.valid & i.ready):            # output stalled: park the beat
            m.d.sync += [skid.eq(i.payload), skid_full.eq(1)]
        return m


def _read_beat(data_width, id_width):
    return data.StructLayout({"id": id_width, "data": data_width, "resp": 2, "last": 1})


class AXI4ReadSlice(wiring.Component):
    """An AXI4 port with a :class:`RegisterSlice` on its read data channel.

    ``AR``, ``AW``, ``W`` and ``B`` pass straight through. Read beats arrive one
    cycle later; ``RREADY`` towards the subordinate is a register.

    Parameters
    ----------
    addr_width, data_width, id_width : int
        As :class:`AXI4Signature`.

    Members
    -------
    sub : ``In(AXI4Signature(...))``
        Faces the manager.
    mgr : ``Out(AXI4Signature(...))``
        Faces the subordinate.
    """

    def __init__(self, *, addr_width=32, data_width=32, id_width=1):
        sig = AXI4Signature(addr_width=addr_width, data_width=data_width, id_width=id_width)
        self._beat = _read_beat(data_width, id_width)
        super().__init__({"sub": In(sig), "mgr": Out(sig)})

    def elaborate(self, platform):
        m = Module()
        sub, mgr = self.sub, self.mgr
        for name, member in mgr.signature.members.items():
            if name.startswith("r"):
                continue
            if member.flow == wiring.Out:          # driven by the manager
                m.d.comb += getattr(mgr, name).eq(getattr(sub, name))
            else:
                m.d.comb += getattr(sub, name).eq(getattr(mgr, name))
        m.submodules.r = r = RegisterSlice(self._beat)
        m.d.comb += [
            r.i.valid.eq(mgr.rvalid), mgr.rready.eq(r.i.ready),
            r.i.payload.id.eq(mgr.rid), r.i.payload.data.eq(mgr.rdata),
            r.i.payload.resp.eq(mgr.rresp), r.i.payload.last.eq(mgr.rlast),
            sub.rvalid.eq(r.o.valid), r.o.ready.eq(sub.rready),
            sub.rid.eq(r.o.payload.id), sub.rdata.eq(r.o.payload.data),
            sub.rresp.eq(r.o.payload.resp), sub.rlast.eq(r.o.payload.last),
        ]
        return m
