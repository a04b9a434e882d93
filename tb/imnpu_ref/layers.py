"""Layer reference: accumulation, the output stage and the cluster's layer kinds.

This module is the executable specification of what a cluster computes for one
layer (ARCHITECTURE.md sections 1 and 2): int32 saturating accumulation of
partial sums, the per-channel output stage (bias, multiplier, rounding shift,
ReLU, clamp or sign), and the ``conv2d``, ``dense`` and ``maxpool`` layer kinds
on HWC feature maps.

Conventions
-----------
* Every tensor holds integer *values* (not lane codes); results are ``int64``
  numpy arrays. Use :func:`imnpu_ref.encode` to turn values into lane codes.
* Integer inputs may be numpy integer arrays or (nested) sequences of Python
  ints. Booleans, floats and other dtypes raise ``TypeError``; values outside
  the ``int64`` range raise ``ValueError``.
* Feature maps are HWC: ``x[row, column, channel]``. Convolution weights are
  ``w[cout, ky, kx, cin]``.
* The reduction of one output element, ``K = kh * kw * Cin``, is ordered like the
  patch builder packs it into a DIMC row: ``(ky, kx, cin)`` with ``cin`` the
  fastest index (see :func:`im2col`). When ``chunk`` is given, that ordered
  reduction is cut into consecutive pieces of ``chunk`` elements (the last may
  be shorter), each piece is one partial sum (one DIMC row of ``W / L`` lanes),
  and the partial sums accumulate in order in a saturating int32 register
  (:func:`accumulate`). ``chunk=None`` means a single partial sum: the exact
  dot product, saturated once. Because saturation happens after every
  addition, the result can depend on ``chunk``.
* Functions that accumulate return ``(values, saturated)``; ``saturated`` is the
  sticky overflow flag: ``True`` if any saturation happened anywhere in the call,
  even if a later partial sum brought the register back inside the range.
"""

from dataclasses import dataclass, field
import numbers as _pynumbers

import numpy as np

from .numbers import Encoding, OperandType

__all__ = [
    "INT32_MIN", "INT32_MAX", "MULT_MIN", "MULT_MAX", "SHIFT_MAX",
    "sat32", "accumulate", "OutputStage", "conv_output_size", "im2col",
    "conv2d", "dense", "maxpool",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
MULT_MIN = -(1 << 15)
MULT_MAX = (1 << 15) - 1
SHIFT_MAX = 47

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
# Largest magnitude of one partial sum: a saturated int32 register plus it must
# still fit int64, so that every addition is exact before it is saturated.
_PARTIAL_LIMIT = 1 << 62


# --------------------------------------------------------------------------
# input checking
# --------------------------------------------------------------------------

def _int_array(value, name):
    """``value`` as an ``int64`` array; ``TypeError``/``ValueError`` naming ``name``."""
    arr = np.asarray(value)
    kind = arr.dtype.kind
    if kind == "i":
        return arr.astype(np.int64, copy=False)
    if kind == "u":
        if arr.size and int(arr.max()) > _INT64_MAX:
            raise ValueError(f"{name}: value {int(arr.max())} is outside the int64 range")
        return arr.astype(np.int64)
    if kind == "O":
        flat = arr.ravel()
        for v in flat:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, _pynumbers.Integral):
                raise TypeError(f"{name} must hold integers, not {type(v).__name__}")
            if not _INT64_MIN <= int(v) <= _INT64_MAX:
                raise ValueError(f"{name}: value {int(v)} is outside the int64 range")
        return np.array([int(v) for v in flat], dtype=np.int64).reshape(arr.shape)
    raise TypeError(f"{name} must be an integer array, not of dtype {arr.dtype}")


def _check_range(arr, lo, hi, name, what):
    if arr.size == 0:
        return
    bad = (arr < lo) | (arr > hi)
    if bad.any():
        raise ValueError(
            f"{name}: value {int(arr[bad].flat[0])} is outside {what} ({lo}..{hi})")


def _int_scalar(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, _pynumbers.Integral):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    return int(value)


def _pair(value, name, minimum):
    """An int or a pair of ints, each ``>= minimum``, as a tuple of two ints."""
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, not {value!r}")
        pair = (_int_scalar(value[0], name), _int_scalar(value[1], name))
    else:
        v = _int_scalar(value, name)
        pair = (v, v)
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value!r}")
    return pair


def _check_operand_type(arr, typ, name):
    if typ is None:
        return
    if not isinstance(typ, OperandType):
        raise TypeError(f"{name}_type must be an OperandType or None, not {typ!r}")
    try:
        typ.check(arr)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def _chunk_bounds(k, chunk):
    if chunk is None:
        return [(0, k)]
    chunk = _int_scalar(chunk, "chunk")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 or None, not {chunk!r}")
    return [(s, min(s + chunk, k)) for s in range(0, k, chunk)]


def _check_exact(x, w, k, chunk):
    """Refuse operands whose partial sums could leave the exact int64 range."""
    n = k if chunk is None else min(k, int(chunk))
    xmax = int(np.abs(x).max()) if x.size else 0
    wmax = int(np.abs(w).max()) if w.size else 0
    if xmax * wmax * n > _PARTIAL_LIMIT:
        raise ValueError(
            f"x and w too large: partial sums of {n} products of |x| <= {xmax} and "
            f"|w| <= {wmax} may exceed 2**62 and would not be exact")


# --------------------------------------------------------------------------
# accumulation
# --------------------------------------------------------------------------

def sat32(x):
    """Saturate integers to the int32 range.

    Parameters
    ----------
    x : array_like of int
        Values in the int64 range.

    Returns
    -------
    numpy.ndarray of int64
        ``x`` clipped to ``INT32_MIN .. INT32_MAX``, same shape (0-d for a
        scalar input). Whether anything was clipped is ``(sat32(x) != x).any()``.
    """
    return np.clip(_int_array(x, "x"), INT32_MIN, INT32_MAX)


def accumulate(partials):
    """Sum partial sums in order in a saturating int32 accumulator.

    The register starts at 0; for each ``partials[i]`` in order it becomes
    ``sat32(register + partials[i])``, exactly as a hardware int32 saturating
    accumulator would.

    Parameters
    ----------
    partials : array_like of int, shape (chunks, ...)
        Partial sums, the chunk index first; the other axes are independent
        accumulators. Each value must satisfy ``|value| <= 2**62``. ``chunks``
        may be 0 (the result is then 0).

    Returns
    -------
    acc : numpy.ndarray of int64, shape ``partials.shape[1:]``
        The final register values, within the int32 range.
    saturated : bool
        Sticky overflow flag: ``True`` if any addition saturated, for any
        accumulator, even if the final value is back inside the range.

    Raises
    ------
    ValueError
        If ``partials`` is 0-d or a value exceeds ``2**62`` in magnitude.
    TypeError
        If ``partials`` does not hold integers.
    """
    p = _int_array(partials, "partials")
    if p.ndim == 0:
        raise ValueError("partials must have a leading chunk axis (ndim >= 1)")
    _check_range(p, -_PARTIAL_LIMIT, _PARTIAL_LIMIT, "partials", "+-2**62")
    acc = np.zeros(p.shape[1:], dtype=np.int64)
    saturated = False
    for part in p:
        total = acc + part
        acc = np.clip(total, INT32_MIN, INT32_MAX)
        saturated |= bool((acc != total).any())
    return acc, saturated


# --------------------------------------------------------------------------
# output stage
# --------------------------------------------------------------------------

def _channel_param(value, name, lo, hi, what):
    arr = _int_array(value, name)
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D per-channel array, not {arr.ndim}-D")
    if arr.ndim == 1 and arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    _check_range(arr, lo, hi, name, what)
    arr = np.array(np.atleast_1d(arr), dtype=np.int64)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class OutputStage:
    """The per-channel output stage of ARCHITECTURE.md section 1.

    For accumulator ``acc`` of output channel ``c``::

        t = sat32(acc + bias[c])
        p = t * mult[c]                                  # exact, 48-bit
        q = p >> shift[c]                   if shift[c] == 0
        q = (p + (1 << (shift[c]-1))) >> shift[c]        otherwise (round half up)
        q = max(q, 0)                       if relu
        y = clamp(q, out.min, out.max)      or, for a bipolar output,
        y = +1 where q >= 0 else -1

    and for ``out == "int32"`` (raw output, e.g. final logits) ``y = t``;
    ``mult``, ``shift`` and ``relu`` are then checked but do not affect ``y``.

    Parameters
    ----------
    bias : int or 1-D array_like of int
        Per-channel bias, each in the int32 range.
    mult : int or 1-D array_like of int
        Per-channel multiplier, each in ``-32768 .. 32767``.
    shift : int or 1-D array_like of int
        Per-channel right shift, each in ``0 .. 47``.
    relu : bool
        Apply ``max(q, 0)`` before the clamp.
    out : OperandType or str
        Output type: an :class:`OperandType`, a string it parses
        (``"signed4"``, ``"unsigned1"``, ``"bipolar1"``, ...) or ``"int32"``
        for the raw ``t``.

    Notes
    -----
    A scalar parameter applies to every channel. The 1-D parameters must all
    have the same length, the channel count :attr:`channels`; when all three
    are scalars :attr:`channels` is ``None`` and any channel count is accepted.
    The stored ``bias``, ``mult`` and ``shift`` are read-only 1-D int64 arrays
    (length 1 for a scalar).
    """
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    relu: bool = False
    out: object = "int32"
    channels: object = field(init=False)

    def __post_init__(self):
        bias = _channel_param(self.bias, "bias", INT32_MIN, INT32_MAX, "the int32 range")
        mult = _channel_param(self.mult, "mult", MULT_MIN, MULT_MAX, "the signed 16-bit range")
        shift = _channel_param(self.shift, "shift", 0, SHIFT_MAX, "0..47")
        if not isinstance(self.relu, (bool, np.bool_)):
            raise TypeError(f"relu must be a bool, not {type(self.relu).__name__}")
        out = self.out
        if isinstance(out, str):
            if out != "int32":
                try:
                    out = OperandType.parse(out)
                except ValueError as err:
                    raise ValueError(f"out: {err}") from None
        elif not isinstance(out, OperandType):
            raise TypeError(f"out must be an OperandType or 'int32', not {out!r}")
        lengths = {a.size for a, given in ((bias, self.bias), (mult, self.mult),
                                           (shift, self.shift))
                   if np.ndim(given) == 1}
        if len(lengths) > 1:
            raise ValueError(
                f"bias, mult and shift have different channel counts {sorted(lengths)}")
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "mult", mult)
        object.__setattr__(self, "shift", shift)
        object.__setattr__(self, "relu", bool(self.relu))
        object.__setattr__(self, "out", out)
        object.__setattr__(self, "channels", lengths.pop() if lengths else None)

    @property
    def raw(self):
        """``True`` for the raw int32 output (``out == "int32"``)."""
        return isinstance(self.out, str)

    def apply(self, acc):
        """Run accumulators through the output stage.

        Parameters
        ----------
        acc : array_like of int, shape (..., channels)
            Accumulator values in the int32 range, output channel on the last
            axis (e.g. the ``(H_out, W_out, Cout)`` result of :func:`conv2d`).

        Returns
        -------
        y : numpy.ndarray of int64, same shape as ``acc``
            Output *values*: within ``out``'s range; ``-1``/``+1`` for a
            bipolar output; ``t`` (int32 range) for the raw output.
        saturated : bool
            ``True`` if ``acc + bias`` saturated for any element (the sticky
            status flag of the bias addition). Clamping to the output type is
            normal operation and does not set it.

        Raises
        ------
        ValueError
            If ``acc`` is 0-d, leaves the int32 range, or its last axis does
            not match :attr:`channels`.
        """
        a = _int_array(acc, "acc")
        if a.ndim == 0:
            raise ValueError("acc must have the channel axis last (ndim >= 1)")
        if self.channels is not None and a.shape[-1] != self.channels:
            raise ValueError(
                f"acc has {a.shape[-1]} channels on its last axis, the stage {self.channels}")
        _check_range(a, INT32_MIN, INT32_MAX, "acc", "the int32 range")
        total = a + self.bias
        t = np.clip(total, INT32_MIN, INT32_MAX)
        saturated = bool((t != total).any())
        if self.raw:
            return t, saturated
        p = t * self.mult                                    # |p| <= 2**46
        rnd = np.where(self.shift > 0, np.left_shift(1, np.maximum(self.shift - 1, 0)), 0)
        q = (p + rnd) >> self.shift                          # arithmetic shift
        if self.relu:
            q = np.maximum(q, 0)
        if self.out.encoding is Encoding.BIPOLAR:
            y = np.where(q >= 0, 1, -1).astype(np.int64)
        else:
            y = np.clip(q, self.out.min, self.out.max)
        return y, saturated


# --------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------

def conv_output_size(size, kernel, stride=1, padding=0):
    """Output length of a convolution or pooling along one axis.

    ``out = (size + 2 * padding - kernel) // stride + 1``.

    Raises
    ------
    ValueError
        If ``size`` or ``kernel`` is < 1, ``stride`` < 1, ``padding`` < 0, or
        the kernel is larger than the padded input.
    """
    size = _int_scalar(size, "size")
    kernel = _int_scalar(kernel, "kernel")
    stride = _int_scalar(stride, "stride")
    padding = _int_scalar(padding, "padding")
    if size < 1:
        raise ValueError(f"size must be >= 1, not {size}")
    if kernel < 1:
        raise ValueError(f"kernel must be >= 1, not {kernel}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, not {stride}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, not {padding}")
    if kernel > size + 2 * padding:
        raise ValueError(
            f"kernel {kernel} is larger than the padded input {size} + 2 * {padding}")
    return (size + 2 * padding - kernel) // stride + 1


def _check_hwc(x, name):
    if x.ndim != 3:
        raise ValueError(f"{name} must be HWC (3-D), not {x.ndim}-D with shape {x.shape}")
    if 0 in x.shape:
        raise ValueError(f"{name} must not have a zero dimension, shape {x.shape}")


def _out_sizes(x_shape, kh, kw, stride, padding, knames=("kh", "kw")):
    """Output height and width; ``ValueError`` naming the kernel parameter."""
    sizes = []
    for axis, (n, k, s, p, kname) in enumerate(
            zip(x_shape[:2], (kh, kw), stride, padding, knames)):
        if k > n + 2 * p:
            dim = ("height", "width")[axis]
            raise ValueError(
                f"{kname} = {k} is larger than the padded input {dim} {n} + 2 * {p}")
        sizes.append(conv_output_size(n, k, s, p))
    return tuple(sizes)


def _im2col(x, kh, kw, stride, padding, knames=("kh", "kw")):
    (sh, sw), (ph, pw) = stride, padding
    ho, wo = _out_sizes(x.shape, kh, kw, stride, padding, knames)
    h, w_, cin = x.shape
    xp = np.zeros((h + 2 * ph, w_ + 2 * pw, cin), dtype=np.int64)
    xp[ph:ph + h, pw:pw + w_] = x
    cols = np.empty((ho, wo, kh, kw, cin), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            cols[:, :, ky, kx, :] = xp[ky:ky + sh * (ho - 1) + 1:sh,
                                       kx:kx + sw * (wo - 1) + 1:sw, :]
    return cols.reshape(ho, wo, kh * kw * cin)


def im2col(x, kh, kw, stride=1, padding=0):
    """Receptive field of every output pixel, flattened in (ky, kx, cin) order.

    Parameters
    ----------
    x : array_like of int, shape (H, W, Cin)
        Input feature map, HWC.
    kh, kw : int
        Kernel height and width (>= 1).
    stride : int or (int, int)
        ``(sh, sw)``, each >= 1.
    padding : int or (int, int)
        ``(ph, pw)`` rows/columns of zeros (value 0) on each side, each >= 0.

    Returns
    -------
    numpy.ndarray of int64, shape (H_out, W_out, kh * kw * Cin)
        ``cols[oy, ox, (ky * kw + kx) * Cin + c] = xpad[oy*sh + ky, ox*sw + kx, c]``
        where ``xpad`` is ``x`` with ``ph`` zero rows above and below and ``pw``
        zero columns left and right. This is the order in which the patch
        builder packs a pixel's receptive field into DIMC lanes (element 0 in
        the lowest lane). ``H_out = (H + 2*ph - kh) // sh + 1``, likewise
        ``W_out``.

    Raises
    ------
    ValueError
        For a non-3-D or empty ``x``, a kernel larger than the padded input,
        or a bad ``kh``, ``kw``, ``stride`` or ``padding``.
    """
    x = _int_array(x, "x")
    _check_hwc(x, "x")
    kh = _int_scalar(kh, "kh")
    kw = _int_scalar(kw, "kw")
    if kh < 1:
        raise ValueError(f"kh must be >= 1, not {kh}")
    if kw < 1:
        raise ValueError(f"kw must be >= 1, not {kw}")
    return _im2col(x, kh, kw, _pair(stride, "stride", 1), _pair(padding, "padding", 0))


def _matmul_chunked(cols, wmat, chunk):
    """``cols (..., K) @ wmat (Cout, K).T`` with in-order saturating chunks."""
    k = cols.shape[-1]
    parts = [cols[..., s:e] @ wmat[:, s:e].T for s, e in _chunk_bounds(k, chunk)]
    return accumulate(np.stack(parts))


def conv2d(x, w, stride=1, padding=0, chunk=None, x_type=None, w_type=None):
    """2-D convolution (cross-correlation) into saturating int32 accumulators.

    ``acc[oy, ox, co] = sum over (ky, kx, ci) of
    w[co, ky, kx, ci] * xpad[oy*sh + ky, ox*sw + kx, ci]``, the reduction taken
    in :func:`im2col` order, cut into partial sums of ``chunk`` elements and
    accumulated with :func:`accumulate`.

    Parameters
    ----------
    x : array_like of int, shape (H, W, Cin)
        Input feature values, HWC.
    w : array_like of int, shape (Cout, kh, kw, Cin)
        Weight values.
    stride : int or (int, int)
        ``(sh, sw)``, each >= 1.
    padding : int or (int, int)
        ``(ph, pw)``, each >= 0. Padding is the *value* 0 (also for bipolar
        features, whose lanes cannot encode 0: the hardware masks them).
    chunk : int or None
        Reduction elements per partial sum (the DIMC row's ``W / L`` lanes);
        ``None`` for a single exact partial sum.
    x_type, w_type : OperandType or None
        If given, ``x`` / ``w`` values are checked against them.

    Returns
    -------
    acc : numpy.ndarray of int64, shape (H_out, W_out, Cout)
        Accumulators in the int32 range;
        ``H_out = (H + 2*ph - kh) // sh + 1``, ``W_out = (W + 2*pw - kw) // sw + 1``.
    saturated : bool
        Sticky int32 overflow flag of all the accumulations.

    Raises
    ------
    ValueError
        For bad shapes (non-3-D/4-D, zero dimensions, ``Cin`` mismatch, kernel
        larger than the padded input), bad ``stride``/``padding``/``chunk``,
        values outside ``x_type``/``w_type``, or operands so large that a
        partial sum could exceed ``2**62``.
    """
    x = _int_array(x, "x")
    w = _int_array(w, "w")
    _check_hwc(x, "x")
    if w.ndim != 4:
        raise ValueError(f"w must be (Cout, kh, kw, Cin), not {w.ndim}-D with shape {w.shape}")
    if 0 in w.shape:
        raise ValueError(f"w must not have a zero dimension, shape {w.shape}")
    if w.shape[3] != x.shape[2]:
        raise ValueError(f"w has Cin = {w.shape[3]} but x has {x.shape[2]} channels")
    _check_operand_type(x, x_type, "x")
    _check_operand_type(w, w_type, "w")
    stride = _pair(stride, "stride", 1)
    padding = _pair(padding, "padding", 0)
    cout, kh, kw, cin = w.shape
    k = kh * kw * cin
    _chunk_bounds(k, chunk)
    _check_exact(x, w, k, chunk)
    cols = _im2col(x, kh, kw, stride, padding, ("w.shape[1] (kh)", "w.shape[2] (kw)"))
    return _matmul_chunked(cols, w.reshape(cout, k), chunk)


def dense(x, w, chunk=None, x_type=None, w_type=None):
    """Fully connected layer into saturating int32 accumulators.

    ``acc[..., co] = sum over k of w[co, k] * x[..., k]``, ``k`` ascending, cut
    into partial sums of ``chunk`` elements and accumulated with
    :func:`accumulate`.

    Parameters
    ----------
    x : array_like of int, shape (K,) or (N, K)
        Input values (one vector or a batch of ``N``).
    w : array_like of int, shape (Cout, K)
        Weight values.
    chunk, x_type, w_type
        As for :func:`conv2d`.

    Returns
    -------
    acc : numpy.ndarray of int64, shape (Cout,) or (N, Cout)
        Accumulators in the int32 range.
    saturated : bool
        Sticky int32 overflow flag.

    Raises
    ------
    ValueError
        For bad shapes (``x`` not 1-D/2-D, ``w`` not 2-D, zero ``K``, ``Cout``
        or ``N``, ``K`` mismatch), a bad ``chunk``, out-of-type values or
        operands too large for exact partial sums.
    """
    x = _int_array(x, "x")
    w = _int_array(w, "w")
    if x.ndim not in (1, 2):
        raise ValueError(f"x must be (K,) or (N, K), not shape {x.shape}")
    if 0 in x.shape:
        raise ValueError(f"x must not have a zero dimension, shape {x.shape}")
    if w.ndim != 2:
        raise ValueError(f"w must be (Cout, K), not shape {w.shape}")
    if 0 in w.shape:
        raise ValueError(f"w must not have a zero dimension, shape {w.shape}")
    if w.shape[1] != x.shape[-1]:
        raise ValueError(f"w has K = {w.shape[1]} but x has K = {x.shape[-1]}")
    _check_operand_type(x, x_type, "x")
    _check_operand_type(w, w_type, "w")
    _chunk_bounds(w.shape[1], chunk)
    _check_exact(x, w, w.shape[1], chunk)
    return _matmul_chunked(x, w, chunk)


def maxpool(x, kernel, stride=None):
    """Channel-wise max pooling of an HWC map, no padding.

    Parameters
    ----------
    x : array_like of int, shape (H, W, C)
        Input values.
    kernel : int or (int, int)
        Window ``(kh, kw)``, each >= 1, no larger than the input.
    stride : int or (int, int) or None
        ``(sh, sw)``, each >= 1; ``None`` means ``stride = kernel``.

    Returns
    -------
    numpy.ndarray of int64, shape (H_out, W_out, C)
        ``y[oy, ox, c] = max of x[oy*sh + ky, ox*sw + kx, c]`` over the window;
        ``H_out = (H - kh) // sh + 1``, likewise ``W_out``.

    Raises
    ------
    ValueError
        For a non-3-D or empty ``x``, a window larger than the input, or a bad
        ``kernel`` or ``stride``.
    """
    x = _int_array(x, "x")
    _check_hwc(x, "x")
    kh, kw = _pair(kernel, "kernel", 1)
    stride = (kh, kw) if stride is None else _pair(stride, "stride", 1)
    (sh, sw) = stride
    ho, wo = _out_sizes(x.shape, kh, kw, stride, (0, 0), ("kernel[0]", "kernel[1]"))
    y = None
    for ky in range(kh):
        for kx in range(kw):
            win = x[ky:ky + sh * (ho - 1) + 1:sh, kx:kx + sw * (wo - 1) + 1:sw, :]
            y = win.copy() if y is None else np.maximum(y, win)
    return y
