"""DIMC row reference: lane packing and the row dot product.

A row of ``W`` bits holds ``W / L`` lane codes, element 0 in the lowest bits.
Rows are Python integers (any width) so that they can be driven into a
simulator as they are; :func:`to_words` and :func:`from_words` split them into
bus words, word 0 holding the row's lowest bits.
"""

import numpy as np

from .numbers import decode, encode, lane_format, LANE_WIDTHS

__all__ = [
    "pack", "unpack", "to_words", "from_words", "dot", "row_dot",
    "pack_operands",
]


def _check_row(width, lane):
    if lane not in LANE_WIDTHS:
        raise ValueError(f"lane width must be 1, 2 or 4, not {lane!r}")
    if width <= 0 or width % 4:
        raise ValueError(f"row width must be a positive multiple of 4, not {width!r}")


def pack(codes, lane, width):
    """Pack lane ``codes`` into a ``width``-bit row (Python int), zero beyond them."""
    _check_row(width, lane)
    codes = np.asarray(codes, dtype=np.int64).ravel()
    if codes.size > width // lane:
        raise ValueError(f"{codes.size} lanes do not fit a {width}-bit row of {lane}-bit lanes")
    if ((codes < 0) | (codes >= (1 << lane))).any():
        raise ValueError(f"lane codes must fit in {lane} bits")
    bits = ((codes[:, None] >> np.arange(lane)) & 1).astype(np.uint8).ravel()
    return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


def unpack(row, lane, width):
    """All ``width // lane`` lane codes of a row."""
    _check_row(width, lane)
    if not 0 <= row < (1 << width):
        raise ValueError(f"row does not fit in {width} bits")
    raw = np.frombuffer(row.to_bytes(width // 8 + 1, "little"), dtype=np.uint8)
    bits = np.unpackbits(raw, bitorder="little")[:width].astype(np.int64)
    return (bits.reshape(-1, lane) << np.arange(lane)).sum(axis=1)


def to_words(row, word_width, width):
    """Split a row into ``width // word_width`` words, lowest first."""
    if word_width <= 0 or width % word_width:
        raise ValueError(f"word width {word_width!r} does not divide the row width {width!r}")
    mask = (1 << word_width) - 1
    return [(row >> (i * word_width)) & mask for i in range(width // word_width)]


def from_words(words, word_width):
    """Join words (lowest first) into a row."""
    row = 0
    for i, word in enumerate(words):
        row |= int(word) << (i * word_width)
    return row


def dot(weights, features):
    """Exact dot product of two integer vectors, as a Python int."""
    weights = np.asarray(weights, dtype=np.int64)
    features = np.asarray(features, dtype=np.int64)
    if weights.shape != features.shape:
        raise ValueError(f"operand shapes differ: {weights.shape} and {features.shape}")
    return int(np.dot(weights, features))


def row_dot(weight_row, feature_row, lane, weight_encoding, feature_encoding,
            lanes, width):
    """What a DIMC row computes: the dot product of the first ``lanes`` lanes.

    Both rows are decoded with their lane encodings; lanes at ``lanes`` and
    beyond contribute nothing, whatever they hold.
    """
    if not 0 <= lanes <= width // lane:
        raise ValueError(f"lane count {lanes!r} is outside 0..{width // lane}")
    w = decode(unpack(weight_row, lane, width), lane, weight_encoding)[:lanes]
    x = decode(unpack(feature_row, lane, width), lane, feature_encoding)[:lanes]
    return dot(w, x)


def pack_operands(weights, features, weight_type, feature_type, width):
    """Pack a weight and a feature vector of given operand types into two rows.

    Returns ``(weight_row, feature_row, (L, weight_lane_enc, feature_lane_enc))``.
    Raises ``ValueError`` when a value does not fit its type.
    """
    weight_type.check(weights)
    feature_type.check(features)
    fmt = lane_format(weight_type, feature_type)
    lane, wenc, xenc = fmt
    return (pack(encode(weights, lane, wenc), lane, width),
            pack(encode(features, lane, xenc), lane, width), fmt)
