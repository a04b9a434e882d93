"""The lane reference kernels against plain Python integer arithmetic."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from imnpu_ref import (Encoding, OperandType, decode, dot, encode, from_words,
                       lane_format, lane_width_for, pack, pack_operands, row_dot,
                       to_words, unpack)

LANE_ENCODINGS = [(1, Encoding.UNSIGNED), (1, Encoding.BIPOLAR),
                  (2, Encoding.UNSIGNED), (2, Encoding.SIGNED),
                  (4, Encoding.UNSIGNED), (4, Encoding.SIGNED)]
TYPES = ([OperandType(b, Encoding.SIGNED) for b in (2, 3, 4)] +
         [OperandType(b, Encoding.UNSIGNED) for b in (1, 2, 3, 4)] +
         [OperandType(1, Encoding.BIPOLAR)])


def py_value(code, lane, enc):
    """Plain-integer reading of a lane code (section 1, written out by hand)."""
    if enc is Encoding.BIPOLAR:
        return 1 if code else -1
    if enc is Encoding.SIGNED and code & (1 << (lane - 1)):
        return code - (1 << lane)
    return code


def py_row_dot(wrow, xrow, lane, wenc, xenc, lanes):
    total = 0
    for i in range(lanes):
        wc = (wrow >> (i * lane)) & ((1 << lane) - 1)
        xc = (xrow >> (i * lane)) & ((1 << lane) - 1)
        total += py_value(wc, lane, wenc) * py_value(xc, lane, xenc)
    return total


@pytest.mark.parametrize("lane,enc", LANE_ENCODINGS)
def test_encode_decode_every_code(lane, enc):
    codes = np.arange(1 << lane)
    values = decode(codes, lane, enc)
    assert [int(v) for v in values] == [py_value(c, lane, enc) for c in range(1 << lane)]
    assert list(encode(values, lane, enc)) == list(codes)


def test_operand_ranges_by_hand():
    ranges = {str(t): (t.min, t.max) for t in TYPES}
    assert ranges == {"signed2": (-2, 1), "signed3": (-4, 3), "signed4": (-8, 7),
                      "unsigned1": (0, 1), "unsigned2": (0, 3), "unsigned3": (0, 7),
                      "unsigned4": (0, 15), "bipolar1": (-1, 1)}
    assert list(OperandType(1, Encoding.BIPOLAR).values()) == [-1, 1]


def test_lane_format_wider_wins():
    b1, u3, s2 = OperandType(1, "bipolar"), OperandType(3, "unsigned"), OperandType(2, "signed")
    assert lane_format(b1, b1) == (1, Encoding.BIPOLAR, Encoding.BIPOLAR)
    assert lane_format(b1, u3) == (4, Encoding.SIGNED, Encoding.UNSIGNED)
    assert lane_format(s2, b1) == (2, Encoding.SIGNED, Encoding.SIGNED)
    assert lane_format(OperandType(1, "unsigned"), s2) == (2, Encoding.UNSIGNED, Encoding.SIGNED)
    assert [lane_width_for(b) for b in (1, 2, 3, 4)] == [1, 2, 4, 4]


@pytest.mark.parametrize("call,message", [
    (lambda: OperandType(1, "signed"), "signed operands are 2, 3, 4 bits"),
    (lambda: OperandType(5, "unsigned"), "not 5"),
    (lambda: OperandType(2, "bipolar"), "bipolar"),
    (lambda: OperandType(2, "ternary"), "ternary"),
    (lambda: encode([2], 2, Encoding.SIGNED), "out of range"),
    (lambda: encode([0], 1, Encoding.BIPOLAR), "out of range"),
    (lambda: encode([1], 3, Encoding.UNSIGNED), "lane width"),
    (lambda: decode([1], 1, Encoding.SIGNED), "1-bit lane"),
    (lambda: pack([1] * 17, 4, 64), "do not fit"),
    (lambda: pack([1], 4, 62), "multiple of 4"),
    (lambda: row_dot(0, 0, 4, Encoding.SIGNED, Encoding.SIGNED, 17, 64), "lane count"),
    (lambda: to_words(0, 24, 64), "does not divide"),
])
def test_bad_input_is_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.sampled_from([1, 2, 4]), st.sampled_from([4, 8, 32, 64, 256]), st.data())
def test_row_dot_matches_python(lane, width, data):
    legal = [e for (l, e) in LANE_ENCODINGS if l == lane]
    wenc = data.draw(st.sampled_from(legal))
    xenc = data.draw(st.sampled_from(legal))
    wrow = data.draw(st.integers(0, (1 << width) - 1))
    xrow = data.draw(st.integers(0, (1 << width) - 1))
    lanes = data.draw(st.integers(0, width // lane))
    assert row_dot(wrow, xrow, lane, wenc, xenc, lanes, width) == \
        py_row_dot(wrow, xrow, lane, wenc, xenc, lanes)


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(st.sampled_from([1, 2, 4]), st.sampled_from([4, 8, 64, 1024]), st.data())
def test_pack_unpack_and_words(lane, width, data):
    n = data.draw(st.integers(0, width // lane))
    codes = data.draw(st.lists(st.integers(0, (1 << lane) - 1), min_size=n, max_size=n))
    row = pack(codes, lane, width)
    expected = 0
    for i, c in enumerate(codes):
        expected |= c << (i * lane)
    assert row == expected
    assert list(unpack(row, lane, width)) == codes + [0] * (width // lane - n)
    word = data.draw(st.sampled_from([w for w in (4, 8, 32, 64) if width % w == 0]))
    words = to_words(row, word, width)
    assert len(words) == width // word and all(0 <= w < (1 << word) for w in words)
    assert from_words(words, word) == row


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(st.sampled_from(TYPES), st.sampled_from(TYPES), st.data())
def test_mixed_width_products(wtype, xtype, data):
    """Packing two operand types into the wider lane keeps every product exact."""
    width = 64
    lane = lane_width_for(max(wtype.bits, xtype.bits))
    n = data.draw(st.integers(0, width // lane))
    w = data.draw(st.lists(st.sampled_from([int(v) for v in wtype.values()]), min_size=n, max_size=n))
    x = data.draw(st.lists(st.sampled_from([int(v) for v in xtype.values()]), min_size=n, max_size=n))
    wrow, xrow, (L, wenc, xenc) = pack_operands(w, x, wtype, xtype, width)
    assert L == lane
    python = sum(a * b for a, b in zip(w, x))
    assert dot(w, x) == python
    assert row_dot(wrow, xrow, L, wenc, xenc, n, width) == python
    assert py_row_dot(wrow, xrow, L, wenc, xenc, n) == python
