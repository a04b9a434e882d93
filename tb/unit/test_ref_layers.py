"""Tests of the layer reference (imnpu_ref.layers) against plain-Python models.

Every function is compared with a naive model written here with nested loops
over Python ints (no numpy arithmetic), from the formulas of ARCHITECTURE.md
section 1, over random shapes, strides, padding, chunking and every operand
type, plus hand-computed corner cases. Randomness is seeded: hypothesis runs
derandomized, and each example draws the seed of its numpy Generator (printed,
and shown in hypothesis's falsifying example).
"""

from fractions import Fraction
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from imnpu_ref import (
    OperandType, pack_operands, row_dot,
    INT32_MIN, INT32_MAX, sat32, accumulate, OutputStage, conv_output_size,
    im2col, conv2d, dense, maxpool,
)

I32_MIN = -(2 ** 31)
I32_MAX = 2 ** 31 - 1

# Value ranges written out by hand (not taken from OperandType).
RANGES = {
    "signed2": (-2, 1), "signed3": (-4, 3), "signed4": (-8, 7),
    "unsigned1": (0, 1), "unsigned2": (0, 3), "unsigned3": (0, 7),
    "unsigned4": (0, 15), "bipolar1": (-1, 1),
}
TYPE_NAMES = list(RANGES)
TYPES = {name: OperandType.parse(name) for name in TYPE_NAMES}
OUT_NAMES = TYPE_NAMES + ["int32"]

SETTINGS = settings(derandomize=True, database=None, deadline=None,
                    max_examples=400, print_blob=True)
FAST = settings(SETTINGS, max_examples=800)


def test_constants():
    assert (INT32_MIN, INT32_MAX) == (I32_MIN, I32_MAX)
    for name, typ in TYPES.items():
        assert (typ.min, typ.max) == RANGES[name]


# --------------------------------------------------------------------------
# naive models (Python ints only)
# --------------------------------------------------------------------------

def n_sat32(v):
    if v > I32_MAX:
        return I32_MAX
    if v < I32_MIN:
        return I32_MIN
    return v


def n_accumulate(partials):
    """Saturating in-order accumulation of a list of Python ints."""
    acc, flag = 0, False
    for p in partials:
        s = acc + p
        acc = n_sat32(s)
        flag = flag or acc != s
    return acc, flag


def n_chunks(products, chunk):
    n = len(products) if chunk is None else chunk
    return [sum(products[i:i + n]) for i in range(0, len(products), n)]


def n_output(acc, bias, mult, shift, relu, out):
    """One element through the output stage; rounding via exact fractions."""
    s = acc + bias
    t = n_sat32(s)
    flag = t != s
    if out == "int32":
        return t, flag
    p = t * mult
    q = math.floor(Fraction(p, 2 ** shift) + Fraction(1, 2))   # round half up
    if relu:
        q = max(q, 0)
    if out == "bipolar1":
        return (1 if q >= 0 else -1), flag
    lo, hi = RANGES[out]
    return min(max(q, lo), hi), flag


def n_out_size(n, k, s, p):
    """Count the window positions that fit the padded input."""
    count, pos = 0, 0
    while pos + k <= n + 2 * p:
        count += 1
        pos += s
    return count


def n_patch(x, oy, ox, kh, kw, stride, padding):
    """Receptive field of one output pixel, (ky, kx, ci) order, zero padded."""
    H, W, C = len(x), len(x[0]), len(x[0][0])
    patch = []
    for ky in range(kh):
        for kx in range(kw):
            for ci in range(C):
                iy = oy * stride[0] + ky - padding[0]
                ix = ox * stride[1] + kx - padding[1]
                patch.append(x[iy][ix][ci] if 0 <= iy < H and 0 <= ix < W else 0)
    return patch


def n_im2col(x, kh, kw, stride, padding):
    H, W = len(x), len(x[0])
    ho = n_out_size(H, kh, stride[0], padding[0])
    wo = n_out_size(W, kw, stride[1], padding[1])
    return [[n_patch(x, oy, ox, kh, kw, stride, padding) for ox in range(wo)]
            for oy in range(ho)]


def n_conv2d(x, w, stride, padding, chunk):
    kh, kw = len(w[0]), len(w[0][0])
    cols = n_im2col(x, kh, kw, stride, padding)
    flag = False
    out = []
    for row in cols:
        orow = []
        for patch in row:
            pix = []
            for wc in w:
                flat = [v for ky in wc for kx in ky for v in kx]
                acc, f = n_accumulate(n_chunks([a * b for a, b in zip(flat, patch)], chunk))
                pix.append(acc)
                flag = flag or f
            orow.append(pix)
        out.append(orow)
    return out, flag


def n_dense(xs, w, chunk):
    flag = False
    out = []
    for xv in xs:
        row = []
        for wr in w:
            acc, f = n_accumulate(n_chunks([a * b for a, b in zip(wr, xv)], chunk))
            row.append(acc)
            flag = flag or f
        out.append(row)
    return out, flag


def n_maxpool(x, kh, kw, sh, sw):
    H, W, C = len(x), len(x[0]), len(x[0][0])
    ho, wo = n_out_size(H, kh, sh, 0), n_out_size(W, kw, sw, 0)
    out = []
    for oy in range(ho):
        orow = []
        for ox in range(wo):
            pix = []
            for c in range(C):
                m = None
                for ky in range(kh):
                    for kx in range(kw):
                        v = x[oy * sh + ky][ox * sw + kx][c]
                        m = v if m is None else max(m, v)
                pix.append(m)
            orow.append(pix)
        out.append(orow)
    return out


def as_list(a):
    """Result array as nested Python ints, checking the dtype on the way."""
    assert isinstance(a, np.ndarray) and a.dtype == np.int64
    return a.tolist()


# --------------------------------------------------------------------------
# value generation
# --------------------------------------------------------------------------

FILLS = ["random", "min", "max", "minmax"]


def values(rng, name, shape, fill):
    """Values of type ``name``: uniform, all-min, all-max or only extremes."""
    lo, hi = RANGES[name]
    if fill == "min":
        return np.full(shape, lo, dtype=np.int64)
    if fill == "max":
        return np.full(shape, hi, dtype=np.int64)
    if fill == "minmax":
        return rng.choice(np.array([lo, hi], dtype=np.int64), size=shape)
    if name == "bipolar1":
        return rng.choice(np.array([-1, 1], dtype=np.int64), size=shape)
    return rng.integers(lo, hi + 1, size=shape, dtype=np.int64)


def big_values(rng, shape, bits, sign):
    """Large integers (|v| < 2**bits); sign +1/-1 for one-signed, 0 for mixed."""
    mag = rng.integers(0, 2 ** bits, size=shape, dtype=np.int64)
    if sign == 0:
        return mag * rng.choice(np.array([-1, 1]), size=shape)
    return mag * sign


seeds = st.integers(0, 2 ** 32 - 1)


def make_rng(seed):
    print(f"numpy seed {seed}")
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------
# sat32 and accumulate
# --------------------------------------------------------------------------

@FAST
@given(seed=seeds, n=st.integers(0, 40))
def test_sat32_random(seed, n):
    rng = make_rng(seed)
    edges = [-(2 ** 63), 2 ** 63 - 1, I32_MIN - 1, I32_MIN, I32_MIN + 1,
             I32_MAX - 1, I32_MAX, I32_MAX + 1, 0, -1, 1]
    vals = edges + [int(v) for v in rng.integers(-(2 ** 40), 2 ** 40, size=n)]
    got = sat32(np.array(vals, dtype=np.int64))
    assert as_list(got) == [n_sat32(v) for v in vals]


def test_sat32_scalar_and_types():
    assert int(sat32(2 ** 40)) == I32_MAX
    assert int(sat32(-(2 ** 40))) == I32_MIN
    assert as_list(sat32([5, -5])) == [5, -5]
    assert as_list(sat32(np.array([2 ** 32], dtype=np.uint64))) == [I32_MAX]
    with pytest.raises(TypeError, match="x"):
        sat32([1.5])
    with pytest.raises(TypeError, match="x"):
        sat32(np.array([True]))


@FAST
@given(seed=seeds, chunks=st.integers(0, 8), width=st.integers(1, 6),
       bits=st.sampled_from([8, 30, 31, 32, 33, 40, 62]),
       sign=st.sampled_from([-1, 0, 1]))
def test_accumulate_random(seed, chunks, width, bits, sign):
    rng = make_rng(seed)
    p = big_values(rng, (chunks, width), bits, sign)
    if bits == 62:
        p = np.clip(p, -(2 ** 62), 2 ** 62)
    acc, flag = accumulate(p)
    cols = [n_accumulate([int(p[i, j]) for i in range(chunks)]) for j in range(width)]
    assert as_list(acc) == [c[0] for c in cols]
    assert flag is any(c[1] for c in cols)


def test_accumulate_sticky_both_directions():
    # positive: saturates at the 2nd addition, then comes back inside
    acc, flag = accumulate([[I32_MAX], [10], [-20]])
    assert as_list(acc) == [I32_MAX - 20] and flag is True
    # negative
    acc, flag = accumulate([[I32_MIN], [-1], [5]])
    assert as_list(acc) == [I32_MIN + 5] and flag is True
    # reaching the limits exactly is not an overflow
    acc, flag = accumulate([[I32_MAX - 3, I32_MIN + 3], [3, -3]])
    assert as_list(acc) == [I32_MAX, I32_MIN] and flag is False
    # one past it is
    acc, flag = accumulate([[I32_MAX, I32_MIN], [1, -1]])
    assert as_list(acc) == [I32_MAX, I32_MIN] and flag is True
    # saturation is per step, not at the end: exact sum 0 but result not 0
    acc, flag = accumulate([[2 ** 31], [-(2 ** 31)]])
    assert as_list(acc) == [-1] and flag is True
    # the flag is global across accumulators
    acc, flag = accumulate([[1, 2 ** 40], [1, -(2 ** 40)]])
    assert as_list(acc) == [2, I32_MIN] and flag is True     # MAX - 2**40 saturates too
    # no chunks: 0
    acc, flag = accumulate(np.zeros((0, 3), dtype=np.int64))
    assert as_list(acc) == [0, 0, 0] and flag is False
    # 1-D: a single accumulator
    acc, flag = accumulate([1, 2, 3])
    assert int(acc) == 6 and acc.shape == () and flag is False


def test_accumulate_errors():
    with pytest.raises(ValueError, match="partials"):
        accumulate(5)
    with pytest.raises(ValueError, match="partials"):
        accumulate([[2 ** 62 + 1]])
    with pytest.raises(ValueError, match="partials"):
        accumulate([[2 ** 70]])
    with pytest.raises(TypeError, match="partials"):
        accumulate([[0.5]])


# --------------------------------------------------------------------------
# output stage
# --------------------------------------------------------------------------

acc_values = st.one_of(st.sampled_from([I32_MIN, I32_MIN + 1, -1, 0, 1, I32_MAX - 1, I32_MAX]),
                       st.integers(I32_MIN, I32_MAX), st.integers(-300, 300))
bias_values = st.one_of(st.sampled_from([I32_MIN, -1, 0, 1, I32_MAX]),
                        st.integers(I32_MIN, I32_MAX), st.integers(-300, 300))
mult_values = st.one_of(st.sampled_from([-32768, -1, 0, 1, 32767]), st.integers(-32768, 32767))
shift_values = st.one_of(st.sampled_from([0, 1, 46, 47]), st.integers(0, 47))


@FAST
@given(acc=acc_values, bias=bias_values, mult=mult_values, shift=shift_values,
       relu=st.booleans(), out=st.sampled_from(OUT_NAMES))
def test_output_stage_scalar(acc, bias, mult, shift, relu, out):
    stage = OutputStage(bias, mult, shift, relu=relu, out=out)
    y, flag = stage.apply([acc])
    ey, ef = n_output(acc, bias, mult, shift, relu, out)
    assert as_list(y) == [ey]
    assert flag is ef


@SETTINGS
@given(seed=seeds, n=st.integers(1, 5), channels=st.integers(1, 6),
       relu=st.booleans(), out=st.sampled_from(OUT_NAMES),
       acc_bits=st.sampled_from([4, 12, 20, 31, 32]),
       corners=st.booleans())
def test_output_stage_per_channel(seed, n, channels, relu, out, acc_bits, corners):
    rng = make_rng(seed)
    acc = np.clip(big_values(rng, (n, channels), acc_bits, 0), I32_MIN, I32_MAX)
    if corners:
        bias = rng.choice(np.array([I32_MIN, -1, 0, 1, I32_MAX]), size=channels)
        mult = rng.choice(np.array([-32768, -1, 0, 1, 32767]), size=channels)
        shift = rng.choice(np.array([0, 1, 46, 47]), size=channels)
    else:
        bias = rng.integers(-(2 ** 20), 2 ** 20, size=channels)
        mult = rng.integers(-32768, 32768, size=channels)
        shift = rng.integers(0, 48, size=channels)
    stage = OutputStage(bias, mult, shift, relu=relu, out=TYPES.get(out, out))
    assert stage.channels == channels
    y, flag = stage.apply(acc)
    expected, eflag = [], False
    for i in range(n):
        row = []
        for c in range(channels):
            v, f = n_output(int(acc[i, c]), int(bias[c]), int(mult[c]), int(shift[c]), relu, out)
            row.append(v)
            eflag = eflag or f
        expected.append(row)
    assert as_list(y) == expected
    assert flag is eflag


def test_output_stage_rounding_half_up():
    # q = floor(t / 2 + 1/2), worked out by hand
    y, _ = OutputStage(0, 1, 1, out="int32").apply([-3])           # raw: t
    assert as_list(y) == [-3]
    stage = OutputStage(0, 1, 1, out=OperandType.parse("signed4"))
    y, _ = stage.apply([-5, -3, -2, -1, 0, 1, 2, 3, 5])
    assert as_list(y) == [-2, -1, -1, 0, 0, 1, 1, 2, 3]
    # shift 2: -6/4 = -1.5 -> -1; -7/4 = -1.75 -> -2; 6/4 = 1.5 -> 2; 5/4 -> 1
    y, _ = OutputStage(0, 1, 2, out="signed4").apply([-7, -6, -2, 5, 6])
    assert as_list(y) == [-2, -1, 0, 1, 2]
    # shift 0: no rounding
    y, _ = OutputStage(0, 3, 0, out="signed4").apply([-3, -2, 2, 3])
    assert as_list(y) == [-8, -6, 6, 7]


def test_output_stage_extremes():
    # mult -32768 on t = INT32_MIN (after bias saturation): p = 2**46
    y, flag = OutputStage(-1, -32768, 47, out="signed4").apply([I32_MIN])
    assert as_list(y) == [1] and flag is True       # 2**46 / 2**47 = 0.5 -> 1
    y, flag = OutputStage(0, -32768, 46, out="signed4").apply([I32_MIN])
    assert as_list(y) == [1] and flag is False      # exactly 1
    y, flag = OutputStage(0, 32767, 47, out="signed4").apply([I32_MIN])
    assert as_list(y) == [0] and flag is False      # -0.49998.. -> 0
    y, flag = OutputStage(0, -32768, 47, out="signed4").apply([I32_MAX])
    assert as_list(y) == [0]                        # -0.49999.. -> 0
    y, flag = OutputStage(I32_MAX, 32767, 0, out="unsigned4").apply([I32_MAX])
    assert as_list(y) == [15] and flag is True
    y, flag = OutputStage(I32_MIN, 32767, 0, out="signed2").apply([I32_MIN])
    assert as_list(y) == [-2] and flag is True
    # raw output returns t, the saturated sum, ignoring mult/shift/relu
    y, flag = OutputStage([I32_MAX, I32_MIN, 5], [7, 7, 7], [3, 3, 3], relu=True,
                          out="int32").apply([[1, -1, -10]])
    assert as_list(y) == [[I32_MAX, I32_MIN, -5]] and flag is True


def test_output_stage_clamp_every_type():
    for name, (lo, hi) in RANGES.items():
        stage = OutputStage(0, 1, 0, out=TYPES[name])
        y, flag = stage.apply([I32_MIN, -100, -1, 0, 1, 100, I32_MAX])
        if name == "bipolar1":
            assert as_list(y) == [-1, -1, -1, 1, 1, 1, 1]
        else:
            assert as_list(y) == [lo, lo, max(lo, -1), 0, min(hi, 1), hi, hi]
        assert flag is False
        y, _ = OutputStage(0, 1, 0, relu=True, out=TYPES[name]).apply([-100, -1, 0, 100])
        assert as_list(y) == [0 if name != "bipolar1" else 1, 0 if name != "bipolar1" else 1,
                              0 if name != "bipolar1" else 1, hi]


def test_output_stage_bipolar_sign():
    # q >= 0 -> +1, q < 0 -> -1; q is taken after rounding: -1/2 rounds to 0
    stage = OutputStage(0, 1, 1, out="bipolar1")
    y, _ = stage.apply([-3, -2, -1, 0, 1])
    assert as_list(y) == [-1, -1, 1, 1, 1]
    y, _ = OutputStage(0, -1, 0, out="bipolar1").apply([-1, 0, 1])
    assert as_list(y) == [1, 1, -1]


def test_output_stage_validation():
    with pytest.raises(ValueError, match="bias"):
        OutputStage(2 ** 31, 1, 0)
    with pytest.raises(ValueError, match="bias"):
        OutputStage([0, I32_MIN - 1], 1, 0)
    with pytest.raises(ValueError, match="mult"):
        OutputStage(0, 32768, 0)
    with pytest.raises(ValueError, match="mult"):
        OutputStage(0, -32769, 0)
    with pytest.raises(ValueError, match="shift"):
        OutputStage(0, 1, 48)
    with pytest.raises(ValueError, match="shift"):
        OutputStage(0, 1, -1)
    with pytest.raises(TypeError, match="shift"):
        OutputStage(0, 1, 1.0)
    with pytest.raises(ValueError, match="bias"):
        OutputStage([[0]], 1, 0)
    with pytest.raises(TypeError, match="relu"):
        OutputStage(0, 1, 0, relu=1)
    with pytest.raises(ValueError, match="out"):
        OutputStage(0, 1, 0, out="float8")
    with pytest.raises(TypeError, match="out"):
        OutputStage(0, 1, 0, out=4)
    with pytest.raises(ValueError, match="channel"):
        OutputStage([0, 0], [1, 1, 1], 0)
    stage = OutputStage([0, 0], 1, 0, out="signed4")
    with pytest.raises(ValueError, match="channels"):
        stage.apply([1, 2, 3])
    with pytest.raises(ValueError, match="acc"):
        stage.apply([2 ** 31, 0])
    with pytest.raises(ValueError, match="acc"):
        stage.apply(5)
    with pytest.raises(TypeError, match="acc"):
        stage.apply([1.0, 2.0])
    assert OutputStage(0, 1, 0).channels is None
    assert OutputStage(0, 1, 0).raw
    assert OutputStage(0, 1, 0, out="signed4").out == TYPES["signed4"]


# --------------------------------------------------------------------------
# conv2d, im2col, dense, maxpool
# --------------------------------------------------------------------------

@st.composite
def conv_cases(draw, max_hw=6, max_c=3):
    h = draw(st.integers(1, max_hw))
    w = draw(st.integers(1, max_hw))
    ph = draw(st.integers(0, 2))
    pw = draw(st.integers(0, 2))
    kh = draw(st.one_of(st.just(h + 2 * ph), st.integers(1, h + 2 * ph)))
    kw = draw(st.one_of(st.just(w + 2 * pw), st.integers(1, w + 2 * pw)))
    sh = draw(st.integers(1, 3))
    sw = draw(st.integers(1, 3))
    cin = draw(st.integers(1, max_c))
    cout = draw(st.integers(1, max_c))
    k = kh * kw * cin
    chunk = draw(st.one_of(st.none(), st.integers(1, k + 1), st.sampled_from([1, 16, 32, 64])))
    return dict(h=h, w=w, cin=cin, cout=cout, kh=kh, kw=kw, stride=(sh, sw),
                padding=(ph, pw), chunk=chunk)


def _check_conv(x, wt, case, **kw):
    acc, flag = conv2d(x, wt, stride=case["stride"], padding=case["padding"],
                       chunk=case["chunk"], **kw)
    eacc, eflag = n_conv2d(x.tolist(), wt.tolist(), case["stride"], case["padding"],
                           case["chunk"])
    assert acc.shape == (len(eacc), len(eacc[0]), case["cout"])
    assert acc.shape[:2] == (
        (case["h"] + 2 * case["padding"][0] - case["kh"]) // case["stride"][0] + 1,
        (case["w"] + 2 * case["padding"][1] - case["kw"]) // case["stride"][1] + 1)
    assert as_list(acc) == eacc
    assert flag is eflag
    return acc, flag


@SETTINGS
@given(seed=seeds, case=conv_cases(), xt=st.sampled_from(TYPE_NAMES),
       wt=st.sampled_from(TYPE_NAMES), xfill=st.sampled_from(FILLS),
       wfill=st.sampled_from(FILLS))
def test_conv2d_operand_types(seed, case, xt, wt, xfill, wfill):
    rng = make_rng(seed)
    x = values(rng, xt, (case["h"], case["w"], case["cin"]), xfill)
    w = values(rng, wt, (case["cout"], case["kh"], case["kw"], case["cin"]), wfill)
    acc, flag = _check_conv(x, w, case, x_type=TYPES[xt], w_type=TYPES[wt])
    assert flag is False


@SETTINGS
@given(seed=seeds, case=conv_cases(max_hw=4), bits=st.sampled_from([12, 16, 20]),
       xsign=st.sampled_from([-1, 0, 1]), wsign=st.sampled_from([-1, 0, 1]))
def test_conv2d_saturation(seed, case, bits, xsign, wsign):
    rng = make_rng(seed)
    x = big_values(rng, (case["h"], case["w"], case["cin"]), bits, xsign)
    w = big_values(rng, (case["cout"], case["kh"], case["kw"], case["cin"]), bits, wsign)
    _check_conv(x, w, case)


def test_conv2d_saturation_depends_on_chunking():
    x = np.ones((1, 1, 3), dtype=np.int64)
    w = np.array([2 ** 30, 2 ** 30, -(2 ** 30)]).reshape(1, 1, 1, 3)
    acc, flag = conv2d(x, w)
    assert as_list(acc) == [[[2 ** 30]]] and flag is False
    acc, flag = conv2d(x, w, chunk=1)       # 2**30, sat(2**31) = MAX, MAX - 2**30
    assert as_list(acc) == [[[2 ** 30 - 1]]] and flag is True
    acc, flag = conv2d(x, -w, chunk=2)      # sat(-2**31) exact, then + 2**30
    assert as_list(acc) == [[[-(2 ** 30)]]] and flag is False
    acc, flag = conv2d(-x, w, chunk=2)      # -2**31 fits; no overflow
    assert flag is False
    acc, flag = conv2d(2 * x, w, chunk=2)   # 2**32 -> MAX, then MAX - 2**31 = -1
    assert as_list(acc) == [[[-1]]] and flag is True
    acc, flag = conv2d(-2 * x, w, chunk=2)  # -2**32 -> MIN, then MIN + 2**31 = 0
    assert as_list(acc) == [[[0]]] and flag is True


def test_conv2d_hand_example():
    # 3x3 single channel, 2x2 kernel, stride 1, padding 1: worked by hand
    x = np.arange(1, 10).reshape(3, 3, 1)
    w = np.array([[1, 2], [3, 4]]).reshape(1, 2, 2, 1)
    acc, flag = conv2d(x, w, padding=1)
    assert acc.shape == (4, 4, 1) and flag is False
    assert as_list(acc[0, :, 0]) == [4, 11, 18, 9]       # top row: only x[0] * w[1]
    assert int(acc[1, 1, 0]) == 1 * 1 + 2 * 2 + 4 * 3 + 5 * 4
    assert int(acc[3, 3, 0]) == 9 * 1
    acc, _ = conv2d(x, w, stride=2)
    assert as_list(acc[..., 0]) == [[1 + 4 + 12 + 20]]


def test_conv2d_one_by_one_and_full_kernel():
    x = np.array([[[2, -3]]])                             # 1x1 input, 2 channels
    w = np.array([[[[1, 1]]], [[[-4, 2]]]])               # 2 outputs, 1x1 kernel
    acc, flag = conv2d(x, w)
    assert as_list(acc) == [[[-1, -14]]] and flag is False
    acc, _ = conv2d(x, np.ones((1, 3, 3, 2), dtype=np.int64), padding=1)
    assert as_list(acc) == [[[-1]]]
    x = np.arange(12).reshape(2, 3, 2)
    acc, _ = conv2d(x, np.ones((1, 2, 3, 2), dtype=np.int64), stride=5)
    assert as_list(acc) == [[[66]]]


@SETTINGS
@given(seed=seeds, case=conv_cases(), xt=st.sampled_from(TYPE_NAMES))
def test_im2col(seed, case, xt):
    rng = make_rng(seed)
    x = values(rng, xt, (case["h"], case["w"], case["cin"]), "random")
    cols = im2col(x, case["kh"], case["kw"], case["stride"], case["padding"])
    assert as_list(cols) == n_im2col(x.tolist(), case["kh"], case["kw"], case["stride"],
                                     case["padding"])


def test_im2col_order():
    x = np.arange(2 * 2 * 3).reshape(2, 2, 3)            # x[r, c, ch] = 6r + 3c + ch
    cols = im2col(x, 2, 2)
    assert as_list(cols) == [[list(range(12))]]
    cols = im2col(x, 1, 2, padding=(0, 1), stride=(1, 2))
    assert as_list(cols) == [[[0, 0, 0, 0, 1, 2], [3, 4, 5, 0, 0, 0]],
                             [[0, 0, 0, 6, 7, 8], [9, 10, 11, 0, 0, 0]]]


@SETTINGS
@given(seed=seeds, xt=st.sampled_from(TYPE_NAMES), wt=st.sampled_from(TYPE_NAMES),
       h=st.integers(1, 4), w=st.integers(1, 4), cin=st.integers(1, 5),
       cout=st.integers(1, 3), kh=st.integers(1, 4), kw=st.integers(1, 4),
       pad=st.integers(0, 1), width=st.sampled_from([64, 128]))
def test_conv2d_chunks_are_dimc_rows(seed, xt, wt, h, w, cin, cout, kh, kw, pad, width):
    """conv2d(chunk=W/L) equals packing each patch chunk into DIMC rows."""
    kh, kw = min(kh, h + 2 * pad), min(kw, w + 2 * pad)
    rng = make_rng(seed)
    xtyp, wtyp = TYPES[xt], TYPES[wt]
    if xt == "bipolar1" and pad:
        xtyp = TYPES["signed2"]          # zero padding needs a lane that holds 0
        if wt == "bipolar1":
            wtyp = TYPES["signed2"]
    x = values(rng, xt, (h, w, cin), "random")
    wts = values(rng, wt, (cout, kh, kw, cin), "random")
    lane = {1: 1, 2: 2, 3: 4, 4: 4}[max(xtyp.bits, wtyp.bits)]
    lanes = width // lane
    acc, flag = conv2d(x, wts, padding=pad, chunk=lanes, x_type=TYPES[xt], w_type=TYPES[wt])
    cols = n_im2col(x.tolist(), kh, kw, (1, 1), (pad, pad))
    for oy, row in enumerate(cols):
        for ox, patch in enumerate(row):
            for co in range(cout):
                flat = wts[co].ravel().tolist()
                partials = []
                for s in range(0, len(flat), lanes):
                    wr, xr, (L, we, xe) = pack_operands(flat[s:s + lanes], patch[s:s + lanes],
                                                        wtyp, xtyp, width)
                    partials.append(row_dot(wr, xr, L, we, xe, len(flat[s:s + lanes]), width))
                assert int(acc[oy, ox, co]) == n_accumulate(partials)[0]


@SETTINGS
@given(seed=seeds, batch=st.sampled_from([None, 1, 3]), k=st.integers(1, 70),
       cout=st.integers(1, 5), xt=st.sampled_from(TYPE_NAMES + ["big"]),
       wt=st.sampled_from(TYPE_NAMES + ["big"]), fill=st.sampled_from(FILLS),
       chunk=st.one_of(st.none(), st.integers(1, 80)), sign=st.sampled_from([-1, 0, 1]))
def test_dense(seed, batch, k, cout, xt, wt, fill, chunk, sign):
    rng = make_rng(seed)
    xshape = (k,) if batch is None else (batch, k)
    x = big_values(rng, xshape, 18, sign) if xt == "big" else values(rng, xt, xshape, fill)
    w = big_values(rng, (cout, k), 18, sign) if wt == "big" else values(rng, wt, (cout, k), fill)
    acc, flag = dense(x, w, chunk=chunk)
    xs = [x.tolist()] if batch is None else x.tolist()
    eacc, eflag = n_dense(xs, w.tolist(), chunk)
    assert as_list(acc) == (eacc[0] if batch is None else eacc)
    assert flag is eflag
    if "big" not in (xt, wt):
        assert flag is False


def test_dense_saturation_sticky():
    w = np.array([[2 ** 20] * 4096, [-(2 ** 20)] * 4096])   # 2**32 total
    x = np.ones(4096, dtype=np.int64)
    acc, flag = dense(x, w)
    assert as_list(acc) == [I32_MAX, I32_MIN] and flag is True
    acc, flag = dense(np.stack([x, -x]), w[:1], chunk=1024)
    assert as_list(acc) == [[I32_MAX], [I32_MIN]] and flag is True


@SETTINGS
@given(seed=seeds, h=st.integers(1, 7), w=st.integers(1, 7), c=st.integers(1, 3),
       data=st.data(), xt=st.sampled_from(TYPE_NAMES + ["big"]))
def test_maxpool(seed, h, w, c, data, xt):
    kh = data.draw(st.one_of(st.just(h), st.integers(1, h)))
    kw = data.draw(st.one_of(st.just(w), st.integers(1, w)))
    stride = data.draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    rng = make_rng(seed)
    x = big_values(rng, (h, w, c), 40, 0) if xt == "big" else values(rng, xt, (h, w, c), "random")
    y = maxpool(x, (kh, kw), stride)
    sh, sw = (kh, kw) if stride is None else stride
    assert as_list(y) == n_maxpool(x.tolist(), kh, kw, sh, sw)


def test_maxpool_hand():
    x = np.array([[1, -5, 3, 0], [2, 7, -1, -2], [0, 0, 9, 4]]).reshape(3, 4, 1)
    assert as_list(maxpool(x, 2)[..., 0]) == [[7, 3]]
    assert as_list(maxpool(x, 2, 1)[..., 0]) == [[7, 7, 3], [7, 9, 9]]
    assert as_list(maxpool(x, (3, 4))[..., 0]) == [[9]]
    assert as_list(maxpool(np.array([[[-3, 4]]]), 1)) == [[[-3, 4]]]


def test_conv_output_size():
    for n in range(1, 9):
        for k in range(1, 9):
            for s in range(1, 4):
                for p in range(0, 3):
                    if k > n + 2 * p:
                        with pytest.raises(ValueError, match="kernel"):
                            conv_output_size(n, k, s, p)
                    else:
                        assert conv_output_size(n, k, s, p) == n_out_size(n, k, s, p)
    for bad, name in (((0, 1, 1, 0), "size"), ((3, 0, 1, 0), "kernel"),
                      ((3, 1, 0, 0), "stride"), ((3, 1, 1, -1), "padding")):
        with pytest.raises(ValueError, match=name):
            conv_output_size(*bad)


def test_layer_validation():
    x = np.zeros((3, 3, 2), dtype=np.int64)
    w = np.zeros((1, 2, 2, 2), dtype=np.int64)
    cases = [
        (lambda: conv2d(x[0], w), ValueError, "x"),
        (lambda: conv2d(np.zeros((0, 3, 2), dtype=np.int64), w), ValueError, "x"),
        (lambda: conv2d(x, w[0]), ValueError, "w"),
        (lambda: conv2d(x, np.zeros((0, 2, 2, 2), dtype=np.int64)), ValueError, "w"),
        (lambda: conv2d(x, np.zeros((1, 2, 2, 3), dtype=np.int64)), ValueError, "Cin"),
        (lambda: conv2d(x, np.zeros((1, 4, 2, 2), dtype=np.int64)), ValueError, r"\(kh\)"),
        (lambda: conv2d(x, np.zeros((1, 2, 6, 2), dtype=np.int64), padding=1),
         ValueError, r"\(kw\)"),
        (lambda: conv2d(x, w, stride=0), ValueError, "stride"),
        (lambda: conv2d(x, w, stride=(1, 2, 3)), ValueError, "stride"),
        (lambda: conv2d(x, w, stride=1.0), TypeError, "stride"),
        (lambda: conv2d(x, w, padding=(0, -1)), ValueError, "padding"),
        (lambda: conv2d(x, w, chunk=0), ValueError, "chunk"),
        (lambda: conv2d(x, w, chunk=2.0), TypeError, "chunk"),
        (lambda: conv2d(x.astype(float), w), TypeError, "x"),
        (lambda: conv2d(x, w.astype(bool)), TypeError, "w"),
        (lambda: conv2d(x + 2, w, x_type=TYPES["signed2"]), ValueError, "x"),
        (lambda: conv2d(x, w, w_type=TYPES["bipolar1"]), ValueError, "w"),
        (lambda: conv2d(x, w, x_type="signed4"), TypeError, "x_type"),
        (lambda: conv2d(x + 2 ** 40, w + 2 ** 40), ValueError, "x and w"),
        (lambda: im2col(x, 0, 1), ValueError, "kh"),
        (lambda: im2col(x, 1, 4), ValueError, "kw"),
        (lambda: im2col(x[0], 1, 1), ValueError, "x"),
        (lambda: dense(np.zeros((2, 2, 2), dtype=np.int64), w[0, 0]), ValueError, "x"),
        (lambda: dense(np.zeros(0, dtype=np.int64), np.zeros((1, 0), dtype=np.int64)),
         ValueError, "x"),
        (lambda: dense(np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64)),
         ValueError, "w"),
        (lambda: dense(np.zeros(3, dtype=np.int64), np.zeros((2, 4), dtype=np.int64)),
         ValueError, "K"),
        (lambda: dense([1, 2], [[1, 2]], chunk=-1), ValueError, "chunk"),
        (lambda: maxpool(x, 4), ValueError, r"kernel\[0\]"),
        (lambda: maxpool(x, (1, 4)), ValueError, r"kernel\[1\]"),
        (lambda: maxpool(x, 0), ValueError, "kernel"),
        (lambda: maxpool(x, 2, (1, 0)), ValueError, "stride"),
        (lambda: maxpool(x[0], 1), ValueError, "x"),
    ]
    for i, (call, exc, name) in enumerate(cases):
        with pytest.raises(exc, match=name):
            call()
            pytest.fail(f"case {i} did not raise")


def test_layers_accept_python_lists():
    acc, flag = dense([1, -2, 3], [[1, 1, 1], [2, 0, -1]])
    assert as_list(acc) == [2, -1] and flag is False
    acc, _ = conv2d([[[1], [2]], [[3], [4]]], [[[[1], [1]], [[1], [1]]]])
    assert as_list(acc) == [[[10]]]
