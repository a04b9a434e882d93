"""Operand types and lane encodings: ARCHITECTURE.md section 1 in numpy.

An operand type is a bit width and an :class:`Encoding`. A value of that type is
stored in a lane of ``L`` bits (``L`` in 1, 2, 4); a 3-bit operand uses a 4-bit
lane. When the two operands of a product have different widths both use the
wider lane, and the narrower one is extended into it; a bipolar operand in a 2-
or 4-bit lane is stored as the signed value -1 or +1.

The lane codes (the raw bits in a lane) are therefore read with one of three
*lane encodings*: ``unsigned`` and ``bipolar`` at ``L = 1``, ``unsigned`` and
``signed`` at ``L = 2, 4``. :func:`lane_format` gives the lane width and the two
lane encodings for a pair of operand types.
"""

import enum
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Encoding", "OperandType", "LANE_WIDTHS", "lane_width_for", "lane_format",
    "encode", "decode", "lane_encoding",
]


LANE_WIDTHS = (1, 2, 4)


class Encoding(enum.Enum):
    """How the bits of an operand map to an integer value."""
    SIGNED = "signed"        #: two's complement, widths 2..4
    UNSIGNED = "unsigned"    #: plain binary, widths 1..4
    BIPOLAR = "bipolar"      #: 1 bit: 0 is -1, 1 is +1


_WIDTHS = {
    Encoding.SIGNED: (2, 3, 4),
    Encoding.UNSIGNED: (1, 2, 3, 4),
    Encoding.BIPOLAR: (1,),
}


@dataclass(frozen=True)
class OperandType:
    """A tensor's element type: ``bits`` wide with ``encoding``.

    Raises ``ValueError`` for a width the encoding does not have.
    """
    bits: int
    encoding: Encoding

    def __post_init__(self):
        enc = Encoding(self.encoding)
        object.__setattr__(self, "encoding", enc)
        if self.bits not in _WIDTHS[enc]:
            raise ValueError(
                f"{enc.value} operands are {', '.join(map(str, _WIDTHS[enc]))} bits wide, "
                f"not {self.bits!r}")

    @property
    def min(self):
        if self.encoding is Encoding.SIGNED:
            return -(1 << (self.bits - 1))
        if self.encoding is Encoding.BIPOLAR:
            return -1
        return 0

    @property
    def max(self):
        if self.encoding is Encoding.SIGNED:
            return (1 << (self.bits - 1)) - 1
        if self.encoding is Encoding.BIPOLAR:
            return 1
        return (1 << self.bits) - 1

    def values(self):
        """Every representable value, ascending."""
        if self.encoding is Encoding.BIPOLAR:
            return np.array([-1, 1], dtype=np.int64)
        return np.arange(self.min, self.max + 1, dtype=np.int64)

    def random(self, rng, shape):
        """Uniformly random values of this type from ``rng`` (a numpy Generator)."""
        return rng.choice(self.values(), size=shape)

    def check(self, values):
        """Raise ``ValueError`` if any of ``values`` is not representable."""
        values = np.asarray(values)
        if values.size == 0:
            return
        if self.encoding is Encoding.BIPOLAR:
            bad = (values != 1) & (values != -1)
        else:
            bad = (values < self.min) | (values > self.max)
        if bad.any():
            raise ValueError(
                f"value {values[bad].flat[0]!r} is out of range for {self}")

    def __str__(self):
        return f"{self.encoding.value}{self.bits}"

    @classmethod
    def parse(cls, text):
        """``OperandType.parse("signed4")`` and the like."""
        for enc in Encoding:
            if text.startswith(enc.value):
                return cls(int(text[len(enc.value):]), enc)
        raise ValueError(f"unknown operand type {text!r}")


def lane_width_for(bits):
    """The lane width ``L`` that holds a ``bits``-wide operand."""
    if bits not in (1, 2, 3, 4):
        raise ValueError(f"operand width must be 1..4 bits, not {bits!r}")
    return {1: 1, 2: 2, 3: 4, 4: 4}[bits]


def lane_encoding(op, lane):
    """Lane encoding of operand type ``op`` stored in an ``lane``-bit lane."""
    if op.encoding is Encoding.BIPOLAR and lane > 1:
        return Encoding.SIGNED
    return op.encoding


def lane_format(weight, feature):
    """Lane width and lane encodings of a product of ``weight`` and ``feature``.

    Returns ``(L, weight_lane_encoding, feature_lane_encoding)``: the wider
    operand sets ``L``; a bipolar operand in a wider lane reads as signed.
    """
    lane = lane_width_for(max(weight.bits, feature.bits))
    return lane, lane_encoding(weight, lane), lane_encoding(feature, lane)


def encode(values, lane, lane_encoding):
    """Lane codes (``0 .. 2**lane - 1``) of integer ``values``.

    Raises ``ValueError`` for a value the lane cannot hold.
    """
    values = np.asarray(values, dtype=np.int64)
    lane_encoding = Encoding(lane_encoding)
    _check_lane(lane, lane_encoding)
    if lane_encoding is Encoding.BIPOLAR:
        OperandType(1, Encoding.BIPOLAR).check(values)
        return ((values + 1) // 2).astype(np.int64)
    OperandType(lane, lane_encoding).check(values)
    return values & ((1 << lane) - 1)


def decode(codes, lane, lane_encoding):
    """Integer values of lane ``codes``: the inverse of :func:`encode`."""
    codes = np.asarray(codes, dtype=np.int64)
    lane_encoding = Encoding(lane_encoding)
    _check_lane(lane, lane_encoding)
    if ((codes < 0) | (codes >= (1 << lane))).any():
        raise ValueError(f"lane codes must fit in {lane} bits")
    if lane_encoding is Encoding.BIPOLAR:
        return 2 * codes - 1
    if lane_encoding is Encoding.SIGNED:
        return np.where(codes >= (1 << (lane - 1)), codes - (1 << lane), codes)
    return codes


def _check_lane(lane, lane_encoding):
    if lane not in LANE_WIDTHS:
        raise ValueError(f"lane width must be 1, 2 or 4, not {lane!r}")
    if lane == 1 and lane_encoding is Encoding.SIGNED:
        raise ValueError("a 1-bit lane holds unsigned or bipolar values, not signed")
    if lane > 1 and lane_encoding is Encoding.BIPOLAR:
        raise ValueError(f"a {lane}-bit lane holds bipolar values as signed")
