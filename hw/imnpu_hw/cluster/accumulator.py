"""Saturating int32 accumulation (ARCHITECTURE.md section 1, "Accumulation").

Partial sums accumulate in signed 32-bit registers; an addition that leaves the
int32 range saturates to ``INT32_MIN`` or ``INT32_MAX`` and reports overflow.
The sticky status flag is the caller's register: OR ``overflow`` into it.

:func:`saturate` and :func:`saturating_add` build the combinational logic from
Amaranth expressions; :class:`SaturatingAdd` wraps the same logic as a
component with typed ports.
"""

from amaranth import Cat, Const, Module, Mux, signed
from amaranth.hdl import Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ACC_WIDTH", "INT32_MIN", "INT32_MAX", "saturate", "saturating_add", "SaturatingAdd"]

ACC_WIDTH = 32
INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def _check_width(name, value):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value!r}")


def saturate(value, width=ACC_WIDTH):
    """Clip a signed expression to the range of ``signed(width)``.

    Parameters
    ----------
    value : Value-castable
        A signed (or unsigned) Amaranth expression of any width.
    width : int
        Width of the signed result.

    Returns
    -------
    result : Value, ``signed(width)``
        ``value`` clipped to ``-2**(width-1) .. 2**(width-1) - 1``.
    overflow : Value, 1 bit
        ``value`` was outside that range (``result != value``).
    """
    _check_width("width", width)
    value = Value.cast(value)
    value_width, is_signed = value.shape().width, value.shape().signed
    if value_width < width or (is_signed and value_width == width):
        # Always in range: sign- or zero-extend to exactly ``width`` bits.
        fill = value[-1] if is_signed and value_width else Const(0, 1)
        return Cat(value, fill.replicate(width - value_width)).as_signed(), Const(0, 1)
    top = value[width - 1:]              # in range iff these bits all equal the sign
    if is_signed:
        too_big = ~value[-1] & top.any()
        too_small = value[-1] & ~top.all()
    else:
        too_big = top.any()
        too_small = Const(0, 1)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    result = Mux(too_big, Const(hi, signed(width)),
                 Mux(too_small, Const(lo, signed(width)), value[:width].as_signed()))
    return result, too_big | too_small


def saturating_add(acc, partial, width=ACC_WIDTH):
    """``sat(acc + partial)`` in ``signed(width)``, and its overflow bit.

    Parameters
    ----------
    acc : Value-castable
        The accumulator, normally ``signed(width)``.
    partial : Value-castable
        The partial sum to add, signed, any width.
    width : int
        Accumulator width (32 in the IMNPU).

    Returns
    -------
    result : Value, ``signed(width)``
        The exact sum clipped to the range of ``signed(width)``.
    overflow : Value, 1 bit
        The exact sum was outside that range; OR it into the sticky flag.
    """
    return saturate(Value.cast(acc) + Value.cast(partial), width)


class SaturatingAdd(wiring.Component):
    """Combinational saturating adder of an int32 accumulator and a partial sum.

    Parameters
    ----------
    partial_width : int
        Width of the signed ``partial`` port (for example the DIMC tile's
        ``dot_width``, or 32).

    Members
    -------
    acc : ``In(signed(32))``
        Current accumulator value.
    partial : ``In(signed(partial_width))``
        Partial sum to add.
    sum : ``Out(signed(32))``
        ``sat32(acc + partial)``.
    overflow : ``Out(1)``
        The addition saturated. The sticky flag is kept by the caller.
    """

    def __init__(self, partial_width=32):
        _check_width("partial_width", partial_width)
        self._partial_width = partial_width
        super().__init__({
            "acc": In(signed(ACC_WIDTH)),
            "partial": In(signed(partial_width)),
            "sum": Out(signed(ACC_WIDTH)),
            "overflow": Out(1),
        })

    partial_width = property(lambda self: self._partial_width)

    def elaborate(self, platform):
        m = Module()
        value, overflow = saturating_add(self.acc, self.partial)
        m.d.comb += [self.sum.eq(value), self.overflow.eq(overflow)]
        return m
