"""The DIMC tile: an SRAM array that computes row dot products in place.

See ARCHITECTURE.md sections 1 and 2. The array is ``rows`` x ``width`` bits,
kept in ``parallel`` banks of :class:`amaranth.lib.memory.Memory` (row ``r`` in
bank ``r % parallel``) so that synthesis infers block RAM. A compute command
reads one *group* of ``parallel`` rows (rows ``g*P .. g*P+P-1``, one from each
bank) and produces their dot products with the feature register.

The datapath is bit-plane: for every pair (i, j) of bit positions within a
4-bit nibble, a *channel* counts the nibbles whose weight bit i and feature bit
j are both set (features masked to the active lanes); the dot product is the
sum of the 16 channel counts weighted by +-2^s for the command's lane width
and encodings, plus the constant term of bipolar lanes (see ``_coefficients``).
The channel popcounts are carry-save (full adder) trees. Pipeline registers
go after the SRAM read, then on the counts, the carry-save rows and the
weighted terms (``CUT_ORDER``) to reach ``pipeline_depth``.

:class:`DIMCTileGroup` is ``count`` such tiles sharing one feature register and
command path (the cluster's broadcast feature path): one front end, ``count``
arrays.
"""

from amaranth import Cat, Const, Module, Mux, Signal, unsigned, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2
from ..params import positive_int

__all__ = [
    "LaneWidth", "LaneEncoding", "DIMCTile", "DIMCTileGroup",
    "BusRequest", "BusResponse", "FeatureWrite", "ComputeCommand", "ComputeResult", "GroupResult",
    "dot_width",
]


class LaneWidth(enum.Enum, shape=2):
    """Lane width ``L`` of a compute command. Code 3 is illegal."""
    L1 = 0
    L2 = 1
    L4 = 2

    @property
    def bits(self):
        return 1 << self.value


class LaneEncoding(enum.Enum, shape=2):
    """How a lane's bits read as an integer (ARCHITECTURE.md section 1).

    ``UNSIGNED`` at every lane width; ``BIPOLAR`` only in 1-bit lanes (bit 0 is
    -1, bit 1 is +1); ``SIGNED`` only in 2- and 4-bit lanes (a bipolar or
    narrower signed operand is stored sign-extended). Other pairings, and
    code 3, make the command fail with ``error`` set.
    """
    UNSIGNED = 0
    SIGNED = 1
    BIPOLAR = 2


def dot_width(width):
    """Bits of the signed dot product of a ``width``-bit row.

    The largest magnitude is 15 * 15 per 4-bit lane, 3 * 3 per 2-bit lane and
    1 per 1-bit lane.
    """
    return bits_for(max(225 * (width // 4), 9 * (width // 2), width)) + 1


def BusRequest(addr_width, word_width):
    """Memory-mode access: ``addr`` = ``row * words_per_row_pow2 + word``."""
    return data.StructLayout({
        "addr": unsigned(addr_width),
        "write": unsigned(1),
        "data": unsigned(word_width),
    })


def BusResponse(word_width):
    """Answer to every memory-mode access, one cycle after it was accepted."""
    return data.StructLayout({
        "data": unsigned(word_width),   # read data (0 for writes and errors)
        "error": unsigned(1),           # address outside the array
    })


def FeatureWrite(word_index_width, word_width):
    return data.StructLayout({
        "word": unsigned(word_index_width),
        "data": unsigned(word_width),
    })


def ComputeCommand(group_width, width):
    return data.StructLayout({
        "group": unsigned(group_width),          # rows group*P .. group*P+P-1
        "lane_width": LaneWidth,
        "weight_encoding": LaneEncoding,
        "feature_encoding": LaneEncoding,
        "lanes": unsigned(bits_for(width)),      # active lanes 0 .. width/L
    })


def ComputeResult(row_width, parallel, width):
    return data.StructLayout({
        "row": unsigned(row_width),              # row of dot[0]; dot[i] is row + i
        "dot": data.ArrayLayout(signed(dot_width(width)), parallel),
        "error": unsigned(1),                    # illegal command; dot is 0
    })


def GroupResult(row_width, parallel, width, count):
    """Result of a :class:`DIMCTileGroup` command: ``dot[t]`` are tile ``t``'s."""
    return data.StructLayout({
        "row": unsigned(row_width),
        "dot": data.ArrayLayout(data.ArrayLayout(signed(dot_width(width)), parallel), count),
        "error": unsigned(1),
    })


def _or_all(values, width):
    result = Const(0, width)
    for v in values:
        result = result | v
    return result


#: where the tile's pipeline registers go, in the order ``pipeline_depth`` adds them
CUT_ORDER = ("operands", "counts", "rows", "terms")

# -- datapath -----------------------------------------------------------------
#
# Bit-plane formulation. With weight lane value w = sum_i om_i a_i + om_c and
# feature lane value x = sum_j xi_j b_j + xi_c (a, b the lane bits; om_i is 2^i,
# negated for the top bit of a signed lane; bipolar is om_0 = 2, om_c = -1),
#
#   sum_lanes w*x = sum_ij om_i xi_j P_ij + xi_c sum_i om_i A_i
#                   + om_c sum_j xi_j B_j + om_c xi_c N
#
# with P_ij, A_i, B_j popcounts of a_i & b_j, a_i and b_j over the active lanes.
# Nibble bit i of a row is weight bit i of its lane at L=4, bit i % 2 at L=2
# and bit 0 at L=1, so one set of 16 *channels* (i, j), each the popcount over
# the row's W/4 nibbles of weight bit 4k+i AND feature bit 4k+j, serves every
# lane width: P_ij needs i, j in the same lane; the constant terms exist only
# at L=1 (bipolar), where the off-diagonal channels are free to count A and B.
# The channel popcounts are then weighted by +-2^s and summed.
#
# Everything that does not depend on the array contents (feature register,
# command decode, lane mask, masked features, channel weights) is the *front
# end*; the *array* is the SRAM and the popcount / weighting datapath. A
# DIMCTile is one of each; a DIMCTileGroup shares one front end among its
# tiles, as the cluster's broadcast feature path does.

#: the 16 channels (i, j): weight bit i, feature bit j of a nibble
CHANNELS = [(i, j) for i in range(4) for j in range(4)]


def _channel_kind(i, j):
    """``diag``, ``count_w`` (A_i at L=1), ``count_x`` (B_j at L=1) or ``free``."""
    return {0: "diag", 1: "count_w", 2: "count_x", 3: "free"}[(j - i) % 4]


def _channel_options(i, j, l1, l2, l4, ws, xs, wb, xb):
    """``(select, shift, negative)`` of channel ``(i, j)``: with ``select`` the
    channel count weighs ``-2**shift`` if ``negative`` else ``2**shift``."""
    kind = _channel_kind(i, j)
    options = [(l4, i + j, ((i == 3) & ws) ^ ((j == 3) & xs))]
    if i // 2 == j // 2:
        options.append((l2, i % 2 + j % 2, ((i % 2 == 1) & ws) ^ ((j % 2 == 1) & xs)))
    if kind == "diag":
        options += [(l1 & ~wb & ~xb, 0, 0), (l1 & (wb ^ xb), 1, 0), (l1 & wb & xb, 2, 0)]
    elif kind == "count_w":        # xi_c om_0: -(1 or 2) if x bipolar
        options += [(l1 & xb & ~wb, 0, 1), (l1 & xb & wb, 1, 1)]
    elif kind == "count_x":        # om_c xi_0: -(1 or 2) if w bipolar
        options += [(l1 & wb & ~xb, 0, 1), (l1 & wb & xb, 1, 1)]
    return options


def _channel_shifts(i, j):
    """The shifts channel ``(i, j)`` can weigh its count by, ascending."""
    return sorted({shift for _, shift, _ in _channel_options(i, j, *[Const(0)] * 7)})


class _Geometry:
    """Validated parameters of a tile and the sizes derived from them."""

    def __init__(self, rows, width, parallel, word_width, pipeline_depth, feature_width, fault):
        feature_width = word_width if feature_width is None else feature_width
        for name, value in (("rows", rows), ("width", width), ("parallel", parallel),
                            ("word_width", word_width), ("pipeline_depth", pipeline_depth),
                            ("feature_width", feature_width)):
            positive_int(name, value)
        if width % 4:
            raise ValueError(f"width must be a multiple of 4, not {width}")
        if width % word_width:
            raise ValueError(f"width {width} is not a multiple of word_width {word_width}")
        if width % feature_width:
            raise ValueError(f"width {width} is not a multiple of feature_width {feature_width}")
        if rows % parallel:
            raise ValueError(f"parallel {parallel} does not divide rows {rows}")
        tree_levels = ceil_log2(width // 4)
        if not 2 <= pipeline_depth <= 2 + tree_levels:
            raise ValueError(
                f"pipeline_depth must be 2..{2 + tree_levels} for width {width}, "
                f"not {pipeline_depth}")
        if fault not in (None, "sign", "lane"):
            raise ValueError(f"_fault must be None, 'sign' or 'lane', not {fault!r}")
        self.rows, self.width, self.parallel = rows, width, parallel
        self.word_width, self.feature_width = word_width, feature_width
        self.pipeline_depth, self.fault = pipeline_depth, fault
        self.words = width // word_width
        self.feature_words = width // feature_width
        self.word_bits = ceil_log2(self.words)
        self.row_bits = max(1, ceil_log2(rows))
        self.group_bits = max(1, ceil_log2(rows // parallel))
        self.depth = rows // parallel
        # the datapath has four places for the ``pipeline_depth - 2`` cuts (CUT_ORDER):
        # the SRAM read and masked features ("operands"; takes the block RAM's slow
        # output off the datapath), the channel counts, the carry-save rows, the
        # weighted terms; further cuts delay the result.
        self.cuts = CUT_ORDER[:pipeline_depth - 2]
        self.extra_delays = pipeline_depth - 2 - len(self.cuts)
        self.count_bits = bits_for(width // 4)
        self.dot_width = dot_width(width)
        self.shifts = {ch: _channel_shifts(*ch) for ch in CHANNELS}
        self.constant_bits = bits_for(width) + 1
        self.coef_bits = (sum(len(s) for s in self.shifts.values()) + len(CHANNELS) +
                          self.constant_bits)

    def bus_request(self):
        return BusRequest(self.row_bits + self.word_bits, self.word_width)

    def bus_response(self):
        return wiring.Signature({"valid": Out(1), "payload": Out(BusResponse(self.word_width))})

    def feature_write(self):
        return FeatureWrite(max(1, ceil_log2(self.feature_words)), self.feature_width)

    def command(self):
        return ComputeCommand(self.group_bits, self.width)

    def operands(self):
        """What the front end hands every array, at the datapath's first stage."""
        return data.StructLayout({
            "valid": 1,
            "error": 1,                          # illegal command: the dot products are 0
            "row": self.row_bits + 1,            # group * P
            "l1": 1,                             # 1-bit lanes
            "coef": self.coef_bits,              # channel weights, see _coefficients
            "features": self.width,              # features masked to the active lanes
            "count_w": self.width,               # feature operand of the count_w channels
        })

    def bus_address(self, row, word):
        return (row << self.word_bits) | word


def _register(m, advance, value, name):
    r = Signal(value.shape(), name=name)
    with m.If(advance):
        m.d.sync += r.eq(value)
    return r


# -- front end ------------------------------------------------------------------

def _active_mask(m, g, cmd):
    """Bit ``b`` is in an active lane iff ``b < lanes * L`` (thermometer code)."""
    W = g.width
    active_bits = Signal(bits_for(W) + 2)
    m.d.comb += active_bits.eq(Mux(cmd.lane_width == LaneWidth.L1, cmd.lanes,
                                   Mux(cmd.lane_width == LaneWidth.L2,
                                       cmd.lanes << 1, cmd.lanes << 2)))
    hi, lo = active_bits >> 4, active_bits[:4]
    mask = Signal(W)
    below = [Signal(name=f"mask_hi_lt{h}") for h in range((W + 15) // 16)]
    at = [Signal(name=f"mask_hi_eq{h}") for h in range((W + 15) // 16)]
    for h in range(len(below)):
        m.d.comb += [below[h].eq(h < hi), at[h].eq(h == hi)]
    for b in range(W):
        # (b & 15) < lo is never true for b & 15 == 15
        inside = (lo > (b & 15)) if b & 15 != 15 else Const(0)
        m.d.comb += mask[b].eq(below[b >> 4] | (at[b >> 4] & inside))
    return mask


def _coefficients(m, g, cmd):
    """The weights of the channel counts for ``cmd``, packed.

    Per channel the selects of its shifts (:func:`_channel_shifts`; at most one
    is high: the count weighs ``+-2**shift``; none: 0), then the 16 ``negate``
    bits, then ``constant``: the bipolar term plus one per negated channel, so
    that ``sum(count << shift ^ -negate) + constant`` is the dot product
    (``-v == ~v + 1``). :func:`_unpack_coefficients` reads it back.
    """
    l1 = cmd.lane_width == LaneWidth.L1
    l2 = cmd.lane_width == LaneWidth.L2
    l4 = ~l1 & ~l2
    ws = cmd.weight_encoding == LaneEncoding.SIGNED
    xs = cmd.feature_encoding == LaneEncoding.SIGNED
    wb = cmd.weight_encoding == LaneEncoding.BIPOLAR
    xb = cmd.feature_encoding == LaneEncoding.BIPOLAR
    if g.fault == "sign":
        ws = xs = Const(0)
    selects, negates = [], []
    for i, j in CHANNELS:
        by_shift, negative_if = {}, Const(0)
        for select, shift, negative in _channel_options(i, j, l1, l2, l4, ws, xs, wb, xb):
            by_shift[shift] = by_shift.get(shift, Const(0)) | select
            negative_if = negative_if | (select & negative)
        neg = Signal(name=f"neg_{i}{j}")
        m.d.comb += neg.eq(negative_if)
        for shift in g.shifts[i, j]:
            sel = Signal(name=f"sel_{i}{j}_s{shift}")
            m.d.comb += sel.eq(by_shift[shift])
            selects.append(sel)
        negates.append(neg)
    constant = Signal(g.constant_bits)   # om_c xi_c N = N when both bipolar
    m.d.comb += constant.eq(Mux(l1 & wb & xb, cmd.lanes, 0) + sum(negates, Const(0, 5)))
    return Cat(*selects, *negates, constant)


def _unpack_coefficients(g, coef):
    """``(scales, negate, constant)`` of a packed :func:`_coefficients` value:
    ``scales[ch]`` a list of ``(select, shift)``, ``negate[ch]`` a bit."""
    pos, scales, negate = 0, {}, {}
    for ch in CHANNELS:
        scales[ch] = [(coef[pos + n], shift) for n, shift in enumerate(g.shifts[ch])]
        pos += len(g.shifts[ch])
    for ch in CHANNELS:
        negate[ch] = coef[pos]
        pos += 1
    return scales, negate, coef[pos:pos + g.constant_bits]


def _front_end(m, g, feat, cmd, advance, bus_valid):
    """Feature register, command stage and operand preparation.

    Returns the :meth:`_Geometry.operands` of the command in stage B (the cycle
    its SRAM data arrives) and the valid bits of the stages the front end holds.
    """
    W = g.width
    m.d.comb += [feat.ready.eq(advance), cmd.ready.eq(advance & ~bus_valid)]

    feature = Signal(W)
    with m.If(feat.valid & advance):
        if g.feature_words == 1:
            m.d.sync += feature.eq(feat.payload.data)
        else:
            m.d.sync += feature.word_select(feat.payload.word, g.feature_width).eq(feat.payload.data)

    # -- stage A: command accepted, SRAM read in flight ------------------------
    c = cmd.payload
    lane_bad = Signal()
    with m.Switch(c.lane_width):
        for lw in LaneWidth:
            with m.Case(lw):
                if lw.bits == 1:
                    ok = ((c.weight_encoding != LaneEncoding.SIGNED) &
                          (c.feature_encoding != LaneEncoding.SIGNED))
                else:
                    ok = ((c.weight_encoding != LaneEncoding.BIPOLAR) &
                          (c.feature_encoding != LaneEncoding.BIPOLAR))
                ok &= ((c.weight_encoding.as_value() != 3) &
                       (c.feature_encoding.as_value() != 3))
                m.d.comb += lane_bad.eq(~ok | (c.lanes > W // lw.bits))
        with m.Default():
            m.d.comb += lane_bad.eq(1)

    a_valid = Signal()
    a_cmd = Signal(c.shape())
    a_l1 = Signal()                 # a_cmd.lane_width == L1, decoded before its register:
    a_error = Signal()              # it selects each of the W count_w operand bits
    a_mask = Signal(W)
    cmd_mask = _active_mask(m, g, c)
    with m.If(advance):
        m.d.sync += [
            a_valid.eq(cmd.valid & cmd.ready),
            a_cmd.eq(c),
            a_l1.eq(c.lane_width == LaneWidth.L1),
            a_error.eq(lane_bad | (c.group >= g.depth)),
            a_mask.eq(cmd_mask),
        ]

    # -- stage B: operands (the SRAM data arrives in the arrays) ---------------
    # the channel weights are decoded from the command here and travel with it
    ops = Signal(g.operands())
    l1 = a_l1
    features = Signal(W)
    m.d.comb += features.eq(feature & a_mask)
    # count_w channels: at L=1 the mask (they count active weight bits), else the
    # feature bit of their own channel
    shifted = Cat(*[features[4 * k + (i + 1) % 4] for k in range(W // 4) for i in range(4)])
    m.d.comb += [
        ops.valid.eq(a_valid),
        ops.error.eq(a_error),
        ops.row.eq(a_cmd.group * g.parallel),
        ops.l1.eq(l1),
        ops.coef.eq(_coefficients(m, g, a_cmd)),
        ops.features.eq(features),
        ops.count_w.eq(Mux(l1, a_mask, shifted)),
    ]
    return ops, [a_valid]


# -- array ----------------------------------------------------------------------

def _nibble_products(g, rows, wide, features, count_w):
    """Per nibble ``k``, the 16 * P channel input bits (bank-major) as products.

    Returns ``(a, x, fused)`` per nibble: bit ``b`` of the nibble's vector is
    ``a[b] & x[b]``; ``fused`` marks the bits whose ``a`` is a row bit itself, so
    that a full adder can take the product into its own LUT4s (see
    :func:`_compress`). The other bits (the ``count_x`` channels) read the row
    OR'ed with ``l1`` and are built as three-input products.
    """
    vectors = []
    for k in range(g.width // 4):
        if g.fault == "lane" and k == 1:
            continue
        a_bits, x_bits, fused = [], [], 0
        for row, row_or in zip(rows, wide):
            for i, j in CHANNELS:
                kind = _channel_kind(i, j)
                if kind == "count_x":
                    a_bits.append(row_or[4 * k + i])
                    x_bits.append(features[4 * k + j])
                else:
                    fused |= 1 << len(a_bits)
                    a_bits.append(row[4 * k + i])
                    if kind == "count_w":
                        x_bits.append(count_w[4 * k + i])
                    else:
                        x_bits.append(features[4 * k + j])
        vectors.append((Cat(*a_bits), Cat(*x_bits), fused))
    return vectors


class _Product:
    """Column-0 input of :func:`_compress` still unreduced: product number ``n``."""

    def __init__(self, n):
        self.n = n


def _reduce(cols, count_bits, full_adder, cut_at=None, cut=None):
    """Carry-save reduction schedule, shared by the dry run and the build.

    ``cols[c]`` lists column ``c``'s bits (objects; :class:`_Product` for a
    product not yet consumed). Each round makes full adders
    ``full_adder(round, column, first, second, third)`` -> ``(sum, carry)``, the
    first operand the one a product is taken into. In column 0 a full adder
    takes one product and two reduced bits where it can, and otherwise three
    products, holding back as many products as later rounds can take in (one
    per full adder); the other columns are a plain Wallace reduction. Before
    round ``cut_at``, ``cut(cols)`` may replace the columns (pipeline cut).
    Returns the final columns (at most two bits each) and the number of rounds.
    """
    rnd = 0
    while any(len(v) > 2 for v in cols.values()):
        if cut is not None and rnd == cut_at:
            cols = cut(cols)
        new = {}

        def put(c, item):
            if c < count_bits:
                new.setdefault(c, []).append(item)
        for c in sorted(cols):
            items = cols[c]
            if len(items) <= 2:
                for it in items:
                    put(c, it)
                continue
            prods = [it for it in items if isinstance(it, _Product)]
            bits = [it for it in items if not isinstance(it, _Product)]
            triples = []
            for _ in range(min(len(prods), len(bits) // 2)):
                triples.append((prods.pop(0), bits.pop(0), bits.pop(0)))
            # products held back for later rounds: at most one per bit left after this one
            later = len(bits) + len(triples)
            n_ppp = min(len(prods) // 3, max(0, -(-(len(prods) - later) // 4)))
            for _ in range(n_ppp):
                triples.append((prods.pop(0), prods.pop(0), prods.pop(0)))
            while len(bits) >= 3:
                triples.append((bits.pop(0), bits.pop(0), bits.pop(0)))
            if not triples:         # e.g. two products and a bit
                rest = prods + bits
                triples.append(tuple(rest[:3]))
                prods, bits = rest[3:], []
            for q, (x, y, z) in enumerate(triples):
                total, carry = full_adder(rnd, c, q, x, y, z)
                put(c, total)
                put(c + 1, carry)
            for it in prods + bits:
                put(c, it)
        cols = new
        rnd += 1
    return cols, rnd


def _compress(m, products, count_bits, cut=None):
    """Carry-save (full adder) reduction of equal-width product vectors.

    ``products`` are :func:`_nibble_products`. Element-wise, the popcount of
    the products equals ``A + B`` for the two returned lists of per-column
    vectors (column ``c`` weighs ``2**c``); columns at ``count_bits`` and beyond
    are dropped, as the counts fit. A full adder's sum and carry are kept
    (two LUT4s: left to itself, the LUT mapper restructures the XOR trees into
    about an eighth more LUTs). The first full adders of column 0 take three
    products; later ones take one product into their own LUTs (sum and carry
    of ``a & x`` and two bits are four-input functions), so about half of the
    products need no AND gate of their own. ``cut(c, k, vector)``, if given,
    is applied to every vector half way down (after half of the rounds); a
    product still pending there is cut as its two operands.
    """
    width = len(products[0][0])

    def dry(rnd, c, q, x, y, z):
        return object(), object()
    _, rounds = _reduce({0: [_Product(n) for n in range(len(products))]}, count_bits, dry)

    ops = list(products)               # a cut replaces a pending product's operands

    def explicit(item, name):
        if not isinstance(item, _Product):
            return item
        a, x, _ = ops[item.n]
        v = Signal(width, name=name, attrs={"keep": 1})
        m.d.comb += v.eq(a & x)
        return v

    def taken_in(item, name):
        """Operand of a full adder that takes the product into its LUTs."""
        if not isinstance(item, _Product):
            return item
        a, x, fused = ops[item.n]
        rest = [b for b in range(width) if not fused >> b & 1]
        part = Signal(max(1, len(rest)), name=name, attrs={"keep": 1})
        if rest:
            m.d.comb += part.eq(Cat(*[a[b] & x[b] for b in rest]))
        return Cat(*[a[b] & x[b] if fused >> b & 1 else part[rest.index(b)]
                     for b in range(width)])

    def full_adder(rnd, c, q, x, y, z):
        prefix = f"csa{rnd}_c{c}"
        x = taken_in(x, f"{prefix}_pt{q}")
        y, z = explicit(y, f"{prefix}_py{q}"), explicit(z, f"{prefix}_pz{q}")
        total = Signal(width, name=f"{prefix}_s{q}", attrs={"keep": 1})
        carry = Signal(width, name=f"{prefix}_c{q}", attrs={"keep": 1})
        m.d.comb += [total.eq(x ^ y ^ z), carry.eq((x & y) | (x & z) | (y & z))]
        return total, carry

    def apply_cut(cols):
        new = {}
        for c, items in cols.items():
            for k, it in enumerate(items):
                if isinstance(it, _Product):
                    a, x, fused = ops[it.n]
                    ops[it.n] = (cut(c, f"a{it.n}", a), cut(c, f"x{it.n}", x), fused)
                    new.setdefault(c, []).append(it)
                else:
                    new.setdefault(c, []).append(cut(c, k, it))
        return new

    cols = {0: [_Product(n) for n in range(len(products))]}
    cut_at = (rounds + 1) // 2 if cut is not None else None
    cols, _ = _reduce(cols, count_bits, full_adder, cut_at, apply_cut if cut else None)
    if cut is not None and rounds <= 1:     # a tree of at most one round: cut after it
        cols = apply_cut(cols)
    zero = Const(0, width)
    result = []
    for r in range(2):
        result.append([explicit(cols[c][r], f"csa_out_c{c}_{r}") if len(cols.get(c, [])) > r
                       else zero for c in range(count_bits)])
    return result


def _array(m, g, bus, bus_resp, advance, read_group, ops, out):
    """One tile's SRAM banks, memory-mode port and popcount / weighting datapath.

    ``read_group`` is the row group a command accepted this cycle reads; ``ops``
    the front end's operands in stage B; ``out`` the ``(valid, row, error, dots)`` signals
    the result is registered into. Returns the valid bits of the stages held here.
    """
    R, W, P, WW = g.rows, g.width, g.parallel, g.word_width
    m.d.comb += bus.ready.eq(advance)

    # -- SRAM banks ----------------------------------------------------------
    bus_row = Signal(g.row_bits + 1)
    bus_word = Signal(max(1, g.word_bits))
    m.d.comb += [
        bus_row.eq(bus.payload.addr >> g.word_bits),
        bus_word.eq(bus.payload.addr[:g.word_bits] if g.word_bits else 0),
    ]
    bus_bad = Signal()
    m.d.comb += bus_bad.eq((bus_row >= R) | (bus_word >= g.words))
    # Row r lives in bank r % P at address r // P.
    if P & (P - 1) == 0:
        bank_sel = bus_row[:ceil_log2(P)] if P > 1 else Const(0)
        bank_addr = bus_row >> ceil_log2(P)
    else:
        bank_sel, bank_addr = bus_row % P, bus_row // P
    bus_take = Signal()
    m.d.comb += bus_take.eq(bus.valid & advance)

    row_data = []
    for bank in range(P):
        mem = Memory(shape=unsigned(W), depth=g.depth, init=[])
        m.submodules[f"bank{bank}"] = mem
        rd = mem.read_port(domain="sync")
        wr = mem.write_port(granularity=WW)
        m.d.comb += [
            rd.en.eq(advance),
            rd.addr.eq(Mux(bus.valid, bank_addr, read_group)),
            wr.addr.eq(bank_addr),
            wr.data.eq(bus.payload.data.replicate(g.words)),
        ]
        with m.If(bus_take & bus.payload.write & ~bus_bad & (bank_sel == bank)):
            m.d.comb += wr.en.eq(1 << bus_word)
        row_data.append(rd.data)

    # Memory-mode responses, one cycle after acceptance.
    resp_bank = Signal(max(1, ceil_log2(P)))
    resp_word = Signal.like(bus_word)
    resp_read = Signal()
    m.d.sync += bus_resp.valid.eq(bus_take)
    with m.If(bus_take):
        m.d.sync += [
            resp_bank.eq(bank_sel),
            resp_word.eq(bus_word),
            resp_read.eq(~bus.payload.write & ~bus_bad),
            bus_resp.payload.error.eq(bus_bad),
        ]
    resp_row = Signal(W)
    with m.Switch(resp_bank):
        for bank in range(P - 1):
            with m.Case(bank):
                m.d.comb += resp_row.eq(row_data[bank])
        with m.Default():
            m.d.comb += resp_row.eq(row_data[P - 1])
    with m.If(resp_read):
        m.d.comb += bus_resp.payload.data.eq(resp_row.word_select(resp_word, WW))

    # -- channel popcounts, weighting, result ------------------------------------
    valids = []
    rows = row_data
    if "operands" in g.cuts:
        # every tile registers its own copy of the shared operands: the front end's
        # fan-out to the tiles then ends in registers, not in the popcount trees
        rows = [_register(m, advance, r, f"l0_row{bank}") for bank, r in enumerate(rows)]
        ops = _register(m, advance, ops, "l0_ops")
        valids.append(ops.valid)
    ctl = (ops.valid, ops.coef, ops.row, ops.error)

    def register_ctl(level, ctl):
        valid, coef, row, error = ctl
        regs = (Signal(name=f"l{level}_valid"), Signal(coef.shape(), name=f"l{level}_coef"),
                Signal(row.shape(), name=f"l{level}_row"), Signal(name=f"l{level}_error"))
        with m.If(advance):
            m.d.sync += [r.eq(v) for r, v in zip(regs, ctl)]
        valids.append(regs[0])
        return regs

    # weight operand of the count_x channels: at L=1 they count features alone
    wide = [Signal(W, name=f"row_or_l1_{bank}") for bank in range(P)]
    m.d.comb += [w.eq(row | ops.l1.replicate(W)) for w, row in zip(wide, rows)]
    cut = None
    if "rows" in g.cuts:
        # half way down the carry-save tree: its two halves are each about as deep as
        # the weighting after the counts
        def cut(c, k, v):
            return _register(m, advance, v, f"l1_c{c}_{k}")
    csa_rows = _compress(m, _nibble_products(g, rows, wide, ops.features, ops.count_w),
                         g.count_bits, cut)
    if "rows" in g.cuts:
        ctl = register_ctl(1, ctl)
    counts = []                 # counts[bank][channel]
    for bank in range(P):
        chans = {}
        for n, ch in enumerate(CHANNELS):
            bit = bank * len(CHANNELS) + n
            a, b = (Cat(*[col[bit] for col in row]) for row in csa_rows)
            count = Signal(g.count_bits, name=f"count_b{bank}_{ch[0]}{ch[1]}")
            m.d.comb += count.eq(a + b)
            chans[ch] = count
        counts.append(chans)
    if "counts" in g.cuts:
        counts = [{ch: _register(m, advance, v, f"l2_{v.name}") for ch, v in chans.items()}
                  for chans in counts]
        ctl = register_ctl(2, ctl)

    scales, negate, constant = _unpack_coefficients(g, ctl[1])
    dwidth = g.dot_width
    terms = []                  # terms[bank]: the 16 weighted counts and the constant
    for bank, chans in enumerate(counts):
        bank_terms = []
        for ch, count in chans.items():
            scaled = Signal(dwidth, name=f"scaled_b{bank}_{ch[0]}{ch[1]}")
            m.d.comb += scaled.eq(_or_all([Mux(sel, count << shift, 0)
                                           for sel, shift in scales[ch]], dwidth))
            term = Signal(signed(dwidth), name=f"wterm_b{bank}_{ch[0]}{ch[1]}")
            m.d.comb += term.eq(scaled ^ negate[ch].replicate(dwidth))
            bank_terms.append(term)
        bank_terms.append(constant)
        terms.append(bank_terms)
    if "terms" in g.cuts:
        terms = [[_register(m, advance, t, f"l3_b{bank}_{n}") for n, t in enumerate(bank_terms)]
                 for bank, bank_terms in enumerate(terms)]
        ctl = register_ctl(3, ctl)
    valid, _, row, error = ctl
    dots = []
    for bank, bank_terms in enumerate(terms):
        # a tree of two-operand adders whose sums are kept: synthesis would merge a
        # plain sum of the 17 terms into one carry-save tree of full adders (two LUTs
        # a bit and level), where each adder here is a carry chain (one LUT a bit)
        level = 0
        while len(bank_terms) > 1:
            sums = []
            for k in range(0, len(bank_terms) - 1, 2):
                total = Signal(signed(dwidth), name=f"wsum_b{bank}_{level}_{k // 2}",
                               attrs={"keep": 1})
                m.d.comb += total.eq(bank_terms[k] + bank_terms[k + 1])
                sums.append(total)
            bank_terms = sums + bank_terms[len(sums) * 2:]
            level += 1
        dot = Signal(signed(dwidth), name=f"dot_b{bank}")
        m.d.comb += dot.eq(Mux(error, 0, bank_terms[0]))
        dots.append(dot)
    # cuts beyond the four datapath boundaries delay the finished result
    for extra in range(g.extra_delays):
        dots = [_register(m, advance, d, f"delay{extra}_{d.name}") for d in dots]
        ctl = register_ctl(4 + extra, ctl)
        valid, _, row, error = ctl
    out_valid, out_row, out_error, out_dots = out
    with m.If(advance):
        m.d.sync += [out_valid.eq(valid), out_row.eq(row), out_error.eq(error)]
        m.d.sync += [o.eq(d) for o, d in zip(out_dots, dots)]
    return valids


def _parameter_properties(cls):
    for name in ("rows", "width", "parallel", "word_width", "pipeline_depth", "feature_width"):
        setattr(cls, name, property(lambda self, name=name: getattr(self._geometry, name)))
    cls.words_per_row = property(lambda self: self._geometry.words)
    cls.feature_words = property(lambda self: self._geometry.feature_words)

    def bus_address(self, row, word):
        """The memory-mode ``addr`` of word ``word`` of row ``row``."""
        return self._geometry.bus_address(row, word)
    cls.bus_address = bus_address
    return cls


@_parameter_properties
class DIMCTile(wiring.Component):
    """A digital in-memory-computing SRAM tile.

    Parameters
    ----------
    rows : int
        ``R``, rows of the array.
    width : int
        ``W``, bits per row; a multiple of 4 and of ``word_width``.
    parallel : int
        ``P``, rows computed per cycle; divides ``rows``.
    word_width : int
        Width of the memory-mode port.
    feature_width : int
        Width of the feature-register port (default ``word_width``; ``width``
        loads the whole register in one cycle).
    pipeline_depth : int
        Cycles from accepting a command to its result: 2 (SRAM read, then the
        whole dot product) up to ``2 + ceil_log2(width / 4)``.

    Members
    -------
    bus : ``In(stream.Signature(BusRequest))``
        Memory-mode reads and writes of one word; ``addr`` is
        ``row * 2**ceil_log2(words_per_row) + word``, word 0 the row's lowest
        bits. Has priority over ``cmd``.
    bus_resp : ``Out(Signature({"valid": Out(1), "payload": Out(BusResponse)}))``
        One response per access, valid for one cycle, the cycle after the access
        is accepted (it cannot be stalled); ``error`` for an address outside the
        array (a write there changes nothing).
    feat : ``In(stream.Signature(FeatureWrite))``
        Writes one word of the feature register. A command sees every feature
        write accepted up to and including its own cycle.
    cmd : ``In(stream.Signature(ComputeCommand))``
        Computes the dot products of one group of ``P`` rows with the feature
        register, for a lane width and the lane encodings of weights (rows) and
        features; lanes at ``lanes`` and beyond contribute zero. One command a
        cycle.
    res : ``Out(stream.Signature(ComputeResult))``
        Results in command order, ``pipeline_depth`` cycles after acceptance
        when not stalled. ``error`` (and zero dot products) for a group outside
        the array, lane width code 3, an encoding the lane width does not have,
        or ``lanes > width / L``. A stalled ``res`` stalls the whole pipeline.
    busy : ``Out(1)``
        A command is in flight.
    """

    def __init__(self, *, rows, width, parallel=1, word_width=32, pipeline_depth=2,
                 feature_width=None, _fault=None):
        g = self._geometry = _Geometry(rows, width, parallel, word_width, pipeline_depth,
                                       feature_width, _fault)
        super().__init__({
            "bus": In(stream.Signature(g.bus_request())),
            "bus_resp": Out(g.bus_response()),
            "feat": In(stream.Signature(g.feature_write())),
            "cmd": In(stream.Signature(g.command())),
            "res": Out(stream.Signature(ComputeResult(g.row_bits, parallel, width))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        # Global-enable pipeline: every stage moves when the output can.
        advance = Signal()
        m.d.comb += advance.eq(~self.res.valid | self.res.ready)
        ops, front_valids = _front_end(m, g, self.feat, self.cmd, advance, self.bus.valid)
        res = self.res.payload
        array_valids = _array(m, g, self.bus, self.bus_resp, advance, self.cmd.payload.group,
                              ops, (self.res.valid, res.row, res.error,
                                    [res.dot[bank] for bank in range(g.parallel)]))
        m.d.comb += self.busy.eq(Cat(*front_valids, *array_valids, self.res.valid).any())
        return m


class _DIMCArray(wiring.Component):
    """One tile of a :class:`DIMCTileGroup` without its front end (its own
    module, so that synthesis maps the tiles one at a time)."""

    def __init__(self, geometry):
        g = self._geometry = geometry
        super().__init__({
            "bus": In(stream.Signature(g.bus_request())),
            "bus_resp": Out(g.bus_response()),
            "advance": In(1),
            "read_group": In(g.group_bits),
            "ops": In(g.operands()),
            "valid": Out(1),
            "row": Out(g.row_bits),
            "error": Out(1),
            # dot products of banks 0 .. P-1, low bits first; a plain vector, as yosys'
            # abc9 would name its bits after the element views of an array port
            "dot": Out(g.dot_width * g.parallel),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        valids = _array(m, g, self.bus, self.bus_resp, self.advance, self.read_group, self.ops,
                        (self.valid, self.row, self.error,
                         [self.dot.word_select(bank, g.dot_width) for bank in range(g.parallel)]))
        m.d.comb += self.busy.eq(Cat(*valids).any())
        return m


@_parameter_properties
class DIMCTileGroup(wiring.Component):
    """``count`` DIMC tiles that share one feature register and command path.

    The tiles of a cluster see the same features and the same commands (the
    broadcast feature path of ARCHITECTURE.md section 2), so one front end
    (feature register, command decode, lane mask, masked features, channel
    weights) serves them all; each tile keeps its SRAM, its memory-mode port
    and its popcount datapath. Every tile computes exactly what a
    :class:`DIMCTile` with the same parameters would.

    Parameters
    ----------
    count : int
        Number of tiles.
    rows, width, parallel, word_width, pipeline_depth, feature_width
        As :class:`DIMCTile`, the same for every tile.

    Members
    -------
    bus : ``In(stream.Signature(BusRequest)).array(count)``
        Memory-mode access of tile ``t``, as :attr:`DIMCTile.bus`. A valid
        access on any tile holds ``cmd``.
    bus_resp : ``Out(...).array(count)``
        Responses of tile ``t``, as :attr:`DIMCTile.bus_resp`.
    feat : ``In(stream.Signature(FeatureWrite))``
        Writes one word of the shared feature register.
    cmd : ``In(stream.Signature(ComputeCommand))``
        One command for every tile: the same row group, lane width, encodings
        and lane count.
    res : ``Out(stream.Signature(GroupResult))``
        ``dot[t]`` are tile ``t``'s dot products of the command; latency,
        ``error`` and stalling as :attr:`DIMCTile.res`.
    busy : ``Out(1)``
        A command is in flight.
    """

    def __init__(self, *, count, rows, width, parallel=1, word_width=32, pipeline_depth=2,
                 feature_width=None):
        positive_int("count", count)
        g = self._geometry = _Geometry(rows, width, parallel, word_width, pipeline_depth,
                                       feature_width, None)
        self._count = count
        super().__init__({
            "bus": In(stream.Signature(g.bus_request())).array(count),
            "bus_resp": Out(g.bus_response()).array(count),
            "feat": In(stream.Signature(g.feature_write())),
            "cmd": In(stream.Signature(g.command())),
            "res": Out(stream.Signature(GroupResult(g.row_bits, parallel, width, count))),
            "busy": Out(1),
        })

    count = property(lambda self: self._count)

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        advance = Signal()
        m.d.comb += advance.eq(~self.res.valid | self.res.ready)
        bus_valid = Cat(*[bus.valid for bus in self.bus]).any()
        ops, front_valids = _front_end(m, g, self.feat, self.cmd, advance, bus_valid)
        arrays = []
        for t in range(self._count):
            array = m.submodules[f"tile{t}"] = _DIMCArray(g)
            wiring.connect(m, wiring.flipped(self.bus[t]), array.bus)
            wiring.connect(m, array.bus_resp, wiring.flipped(self.bus_resp[t]))
            m.d.comb += [array.advance.eq(advance), array.read_group.eq(self.cmd.payload.group),
                         array.ops.eq(ops),
                         self.res.payload.dot[t].eq(array.dot)]
            arrays.append(array)
        # every tile's result valid, row and error are the same: take tile 0's
        m.d.comb += [self.res.valid.eq(arrays[0].valid), self.res.payload.row.eq(arrays[0].row),
                     self.res.payload.error.eq(arrays[0].error),
                     self.busy.eq(Cat(*front_valids, arrays[0].busy, self.res.valid).any())]
        return m
