"""AXI4 and AXI4-Lite signatures with the conventional (ARM IHI 0022) signal names.

Both signatures are written from the manager's (master's) side: a component
that issues transactions has ``Out(AXI4Signature(...))``, one that answers them
``In(...)``. :func:`flat_members` turns a signature into top-level ports named
``<prefix>_<signal>`` (``s_axil_awaddr``, ``m_axi_arlen``, ...), the names that
cocotbext-axi, vendor IP and FPGA wrappers expect; :func:`connect_flat` wires
such flat ports to a nested interface.
"""

import enum

from amaranth import Shape
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..params import positive_int

__all__ = ["AXIResp", "AXIBurst", "AXI4LiteSignature", "AXI4Signature",
           "flat_members", "connect_flat"]


class AXIResp(enum.IntEnum):
    """``BRESP``/``RRESP`` codes."""
    OKAY = 0b00
    EXOKAY = 0b01
    SLVERR = 0b10
    DECERR = 0b11


class AXIBurst(enum.IntEnum):
    """``AWBURST``/``ARBURST`` codes."""
    FIXED = 0b00
    INCR = 0b01
    WRAP = 0b10


def _check(addr_width, data_width):
    positive_int("addr_width", addr_width)
    if data_width not in (32, 64):
        raise ValueError(f"data_width must be 32 or 64, not {data_width!r}")


class _AXIParameters(wiring.Signature):
    """Equality and repr of a signature by its type and parameters (``_params``)."""

    def __eq__(self, other):
        return type(other) is type(self) and other._params == self._params

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self._params.items())
        return f"{type(self).__name__}({args})"


class AXI4LiteSignature(_AXIParameters):
    """AXI4-Lite, manager's view.

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr``/``araddr`` (byte addresses).
    data_width : int
        32 or 64.
    """

    def __init__(self, *, addr_width=32, data_width=32):
        _check(addr_width, data_width)
        self._params = dict(addr_width=addr_width, data_width=data_width)
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8),
            "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    addr_width = property(lambda self: self._params["addr_width"])
    data_width = property(lambda self: self._params["data_width"])


class AXI4Signature(_AXIParameters):
    """AXI4 (full, with bursts), manager's view.

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr``/``araddr`` (byte addresses).
    data_width : int
        32 or 64.
    id_width : int
        Width of ``awid``/``arid``/``bid``/``rid``.
    """

    def __init__(self, *, addr_width=32, data_width=32, id_width=1):
        _check(addr_width, data_width)
        positive_int("id_width", id_width)
        self._params = dict(addr_width=addr_width, data_width=data_width, id_width=id_width)

        def address_channel(p):
            return {
                f"{p}id": Out(id_width), f"{p}addr": Out(addr_width), f"{p}len": Out(8),
                f"{p}size": Out(3), f"{p}burst": Out(2), f"{p}lock": Out(1),
                f"{p}cache": Out(4), f"{p}prot": Out(3), f"{p}valid": Out(1), f"{p}ready": In(1),
            }

        super().__init__({
            **address_channel("aw"),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
            "wvalid": Out(1), "wready": In(1),
            "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            **address_channel("ar"),
            "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
            "rvalid": In(1), "rready": Out(1),
        })

    addr_width = property(lambda self: self._params["addr_width"])
    data_width = property(lambda self: self._params["data_width"])
    id_width = property(lambda self: self._params["id_width"])


def flat_members(prefix, signature, *, manager):
    """Members ``<prefix>_<name>`` of ``signature`` for a component's own signature.

    ``manager=True`` for the side that issues transactions (``m_axi``),
    ``False`` for the side that answers them (``s_axil``).
    """
    members = {}
    for name, member in signature.members.items():
        flow = member.flow if manager else member.flow.flip()
        members[f"{prefix}_{name}"] = (Out if flow == wiring.Out else In)(Shape.cast(member.shape))
    return members


def connect_flat(m, component, prefix, interface):
    """Wire ``component``'s flat ``<prefix>_*`` ports to ``interface`` (same signature).

    Signals flow from whichever side drives them: ``Out`` members of the
    manager towards the subordinate and back.
    """
    for name, member in interface.signature.members.items():
        flat = getattr(component, f"{prefix}_{name}")
        inner = getattr(interface, name)
        # the members of the interface as its owner sees them: Out is driven inside
        flow = member.flow
        if flow == wiring.Out:
            m.d.comb += flat.eq(inner)
        else:
            m.d.comb += inner.eq(flat)
