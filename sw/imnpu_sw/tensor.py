"""Activation tensor storage in a cluster's activation memory.

A tensor of shape ``(H, W, C)`` with element type ``t`` is stored HWC: each
element's lane code at the tensor's *storage lane width* ``S``
(``lane_width_for(t.bits)``: 1, 2 or 4 bits; a 3-bit element in 4), channel
``c`` at bits ``c*S`` of its pixel's bit vector. Every pixel starts on a word
boundary and takes ``pixel_words(C, t, word_width)`` words; pixel ``(y, x)``
begins at word ``base + (y*W + x) * pixel_words``. Unused bits are zero.
"""

import numpy as np

from imnpu_ref import decode, encode, from_words, lane_width_for, pack, to_words, unpack

__all__ = ["storage_lane", "storage_encoding", "pixel_words", "pack_tensor", "unpack_tensor"]


def storage_lane(optype):
    """Lane width ``S`` an element of ``optype`` is stored in."""
    return lane_width_for(optype.bits)


def storage_encoding(optype):
    """Lane encoding of the stored codes (the element's own encoding)."""
    return optype.encoding


def pixel_words(channels, optype, word_width):
    """Words one pixel of ``channels`` elements takes."""
    if channels <= 0:
        raise ValueError(f"channels must be positive, not {channels!r}")
    if word_width <= 0 or word_width % 4:
        raise ValueError(f"word_width must be a positive multiple of 4, not {word_width!r}")
    return -(-channels * storage_lane(optype) // word_width)


def pack_tensor(values, optype, word_width):
    """Words (lowest address first) of an ``(H, W, C)`` tensor of ``optype`` values."""
    values = np.asarray(values)
    if values.ndim != 3:
        raise ValueError(f"values must be (H, W, C), not shape {values.shape}")
    optype.check(values)
    H, W, C = values.shape
    S = storage_lane(optype)
    pw = pixel_words(C, optype, word_width)
    bits = pw * word_width
    words = []
    for y in range(H):
        for x in range(W):
            row = pack(encode(values[y, x], S, optype.encoding), S, bits)
            words += to_words(row, word_width, bits)
    return words


def unpack_tensor(words, shape, optype, word_width):
    """Values of an ``(H, W, C)`` tensor from its words (inverse of :func:`pack_tensor`)."""
    H, W, C = shape
    S = storage_lane(optype)
    pw = pixel_words(C, optype, word_width)
    bits = pw * word_width
    out = np.zeros((H, W, C), dtype=np.int64)
    for i in range(H * W):
        row = from_words(words[i * pw:(i + 1) * pw], word_width)
        codes = unpack(row, S, bits)[:C]
        out[i // W, i % W] = decode(codes, S, optype.encoding)
    return out
