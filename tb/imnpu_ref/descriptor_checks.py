"""The cluster's descriptor checks in plain Python integers.

:func:`descriptor_error` names the first check a layer descriptor fails, in the
priority order of the cluster's error codes (``docs/cluster.md``), or ``"NONE"``.
The RTL computes the same verdict through a register pipeline with clamped
intermediate values; this is the arithmetic it must agree with, written without
either.
"""

__all__ = ["descriptor_error", "MAX_DIM", "RESIDENT_WEIGHTS"]

#: largest height, width or channel count a layer may have
MAX_DIM = 4096
#: ``weights`` value of a layer whose weights stay resident in the tiles
RESIDENT_WEIGHTS = 0xFFFF_FFFF

_CONV, _DENSE, _MAXPOOL = 1, 2, 3
_UNSIGNED, _SIGNED, _BIPOLAR, _RAW32 = 0, 1, 2, 3


def _storage_lane(bits):
    return 0 if bits <= 1 else 1 if bits == 2 else 2


def _lane_bits(code):
    return (1, 2, 4)[min(code, 2)]


def _legal(ty, allow_raw=False):
    bits, enc = ty["bits"], ty["encoding"]
    return ((enc == _SIGNED and 2 <= bits <= 4) or (enc == _UNSIGNED and 1 <= bits <= 4) or
            (enc == _BIPOLAR and bits == 1) or (allow_raw and enc == _RAW32))


def descriptor_error(f, *, tiles, rows, width, parallel, act_word, act_depth):
    """Name of the first failing check of descriptor fields ``f`` (a dict keyed by
    the :data:`Descriptor` field names; the three types as ``{"bits", "encoding"}``,
    ``kind`` and ``lane`` as integer codes) on a cluster of the given geometry;
    ``act_depth`` is the activation memory depth in ``act_word``-bit words."""
    kind, lane = int(f["kind"]), int(f["lane"])
    conv, pool = kind in (_CONV, _DENSE), kind == _MAXPOOL
    x, w, o = f["x_type"], f["w_type"], f["o_type"]
    pad_h, pad_w = (0, 0) if pool else (f["pad_h"], f["pad_w"])
    ext_h, ext_w = f["in_h"] + 2 * pad_h, f["in_w"] + 2 * pad_w

    if not (conv or pool):
        return "BAD_KIND"
    dims = ("in_h", "in_w", "cin", "kh", "kw", "stride_h", "stride_w", "out_h", "out_w",
            "in_pixel_words", "out_pixel_words")
    mapping = ("cout", "ppc", "spp", "nch", "cpt", "passes")
    if any(f[k] == 0 for k in dims) or (conv and any(f[k] == 0 for k in mapping)):
        return "ZERO_DIM"
    if not _legal(x) or (conv and not (_legal(w) and _legal(o, allow_raw=True))):
        return "BAD_TYPE"
    if conv and (lane == 3 or lane < _storage_lane(x["bits"]) or
                 lane < _storage_lane(w["bits"]) or
                 (lane == 0 and x["encoding"] == _BIPOLAR and (f["pad_h"] or f["pad_w"]))):
        return "BAD_LANE"
    if f["kh"] > ext_h or f["kw"] > ext_w:
        return "KERNEL_TOO_LARGE"

    def fits(out, stride, k, ext):
        return (out - 1) * stride + k <= ext < out * stride + k

    dense_ok = (f["kh"] == f["in_h"] and f["kw"] == f["in_w"] and f["pad_h"] == 0 and
                f["pad_w"] == 0 and f["out_h"] == 1 and f["out_w"] == 1)
    if (not fits(f["out_h"], f["stride_h"], f["kh"], ext_h) or
            not fits(f["out_w"], f["stride_w"], f["kw"], ext_w) or
            any(f[k] > MAX_DIM for k in ("in_h", "in_w", "cin", "out_h", "out_w", "cout")) or
            (kind == _DENSE and not dense_ok) or
            (pool and (f["pad_h"] or f["pad_w"]))):
        return "BAD_SHAPE"

    nl = width >> lane
    s_in = _lane_bits(_storage_lane(x["bits"]))
    b_out = 32 if o["encoding"] == _RAW32 else _lane_bits(_storage_lane(o["bits"]))
    cin, cout, ppc, spp, nch, cpt, passes = (f[k] for k in ("cin", "cout", "ppc", "spp", "nch",
                                                            "cpt", "passes"))
    kpos, cpp = f["kh"] * f["kw"], tiles * cpt
    one_slice = (spp == 1 and cin <= nl and ppc * cin <= nl and
                 (nch - 1) * ppc < kpos <= nch * ppc)
    slices = (spp > 1 and ppc == 1 and cin > nl and (spp - 1) * nl < cin <= spp * nl and
              nch == kpos * spp)
    rows_ok = nch * cpt <= rows and cpt % parallel == 0
    passes_ok = ((passes - 1) * cpp < cout <= passes * cpp and
                 (passes == 1 or cpp * b_out % 4 == 0))
    resident_ok = f["weights"] != RESIDENT_WEIGHTS or passes == 1
    ipw, opw = f["in_pixel_words"], f["out_pixel_words"]
    words_ok = (ipw * act_word >= cin * s_in and
                (opw == ipw if pool else opw * act_word >= cout * b_out))
    if (conv and not ((one_slice or slices) and rows_ok and passes_ok and resident_ok)) or \
            not words_ok:
        return "BAD_MAPPING"

    in_end = f["in_base"] + f["in_h"] * f["in_w"] * ipw
    out_end = f["out_base"] + f["out_h"] * f["out_w"] * opw
    if in_end > act_depth or out_end > act_depth:
        return "ACT_OVERFLOW"
    if f["in_base"] < out_end and f["out_base"] < in_end:
        return "OVERLAP"
    return "NONE"
