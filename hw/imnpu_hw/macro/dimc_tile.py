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
"""

from amaranth import Cat, Const, Module, Mux, Signal, unsigned, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2
from ..params import positive_int

__all__ = [
    "LaneWidth", "LaneEncoding", "DIMCTile",
    "BusRequest", "BusResponse", "FeatureWrite", "ComputeCommand", "ComputeResult",
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


def _or_all(values, width):
    result = Const(0, width)
    for v in values:
        result = result | v
    return result


#: where the tile's pipeline registers go, in the order ``pipeline_depth`` adds them
CUT_ORDER = ("operands", "counts", "rows", "terms")


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
        self._tree_levels = ceil_log2(width // 4)
        if not 2 <= pipeline_depth <= 2 + self._tree_levels:
            raise ValueError(
                f"pipeline_depth must be 2..{2 + self._tree_levels} for width {width}, "
                f"not {pipeline_depth}")
        if _fault not in (None, "sign", "lane"):
            raise ValueError(f"_fault must be None, 'sign' or 'lane', not {_fault!r}")

        self._rows = rows
        self._width = width
        self._parallel = parallel
        self._word_width = word_width
        self._pipeline_depth = pipeline_depth
        self._fault = _fault

        self._feature_width = feature_width
        self._words = width // word_width
        self._feature_words = width // feature_width
        self._word_bits = ceil_log2(self._words)
        self._row_bits = max(1, ceil_log2(rows))
        self._group_bits = max(1, ceil_log2(rows // parallel))
        super().__init__({
            "bus": In(stream.Signature(BusRequest(self._row_bits + self._word_bits, word_width))),
            "bus_resp": Out(wiring.Signature({"valid": Out(1),
                                              "payload": Out(BusResponse(word_width))})),
            "feat": In(stream.Signature(FeatureWrite(max(1, ceil_log2(self._feature_words)),
                                                     feature_width))),
            "cmd": In(stream.Signature(ComputeCommand(self._group_bits, width))),
            "res": Out(stream.Signature(ComputeResult(self._row_bits, parallel, width))),
            "busy": Out(1),
        })

    rows = property(lambda self: self._rows)
    width = property(lambda self: self._width)
    parallel = property(lambda self: self._parallel)
    word_width = property(lambda self: self._word_width)
    pipeline_depth = property(lambda self: self._pipeline_depth)
    feature_width = property(lambda self: self._feature_width)
    words_per_row = property(lambda self: self._words)
    feature_words = property(lambda self: self._feature_words)

    def bus_address(self, row, word):
        """The ``bus.addr`` of word ``word`` of row ``row``."""
        return (row << self._word_bits) | word

    # -- datapath -------------------------------------------------------------
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

    @staticmethod
    def _channel_kind(i, j):
        """``diag``, ``count_w`` (A_i at L=1), ``count_x`` (B_j at L=1) or ``free``."""
        return {0: "diag", 1: "count_w", 2: "count_x", 3: "free"}[(j - i) % 4]

    CHANNELS = [(i, j) for i in range(4) for j in range(4)]

    def _operands(self, m, rows, feature, mask, l1):
        """The AND operands of the channels, prepared before the first cut.

        Returns per bank the row and the row ORed with ``l1`` (weight operand
        of the ``count_x`` channels, which count features alone at L=1), the
        masked features, and the feature operand of the ``count_w`` channels
        (at L=1 the mask, so that they count active weight bits).
        """
        W = self._width
        wide = [Signal(W, name=f"row_or_l1_{bank}") for bank in range(len(rows))]
        m.d.comb += [w.eq(row | l1.replicate(W)) for w, row in zip(wide, rows)]
        features = Signal(W)
        m.d.comb += features.eq(feature & mask)
        shifted = Cat(*[features[4 * k + (i + 1) % 4] for k in range(W // 4) for i in range(4)])
        count_w = Signal(W)
        m.d.comb += count_w.eq(Mux(l1, mask, shifted))
        return rows, wide, features, count_w

    def _nibble_bits(self, m, rows, wide, features, count_w):
        """Per nibble ``k``, one vector of the 16 * P channel input bits (bank-major)."""
        vectors = []
        for k in range(self._width // 4):
            if self._fault == "lane" and k == 1:
                continue
            bits = []
            for row, row_or in zip(rows, wide):
                for i, j in self.CHANNELS:
                    kind = self._channel_kind(i, j)
                    if kind == "count_w":
                        bits.append(row[4 * k + i] & count_w[4 * k + i])
                    elif kind == "count_x":
                        bits.append(row_or[4 * k + i] & features[4 * k + j])
                    else:
                        bits.append(row[4 * k + i] & features[4 * k + j])
            v = Signal(len(bits), name=f"nib{k}")
            m.d.comb += v.eq(Cat(*bits))
            vectors.append(v)
        return vectors

    def _compress(self, m, vectors, count_bits):
        """Carry-save (full adder) reduction of equal-width bit vectors.

        Element-wise, the popcount over ``vectors`` equals ``A + B`` for the two
        returned lists of per-column vectors (column ``c`` weighs ``2**c``);
        columns at ``count_bits`` and beyond are dropped, as the counts fit.
        """
        width = len(vectors[0])
        cols = {0: list(vectors)}
        step = 0
        while any(len(v) > 2 for v in cols.values()):
            new = {}
            for c in sorted(cols):
                vs = cols[c]
                n = len(vs) // 3
                for q in range(n):
                    a, b, d = vs[3 * q:3 * q + 3]
                    total = Signal(width, name=f"csa{step}_c{c}_s{q}")
                    carry = Signal(width, name=f"csa{step}_c{c}_c{q}")
                    m.d.comb += [total.eq(a ^ b ^ d), carry.eq((a & b) | (a & d) | (b & d))]
                    new.setdefault(c, []).append(total)
                    if c + 1 < count_bits:
                        new.setdefault(c + 1, []).append(carry)
                new.setdefault(c, []).extend(vs[3 * n:])
            cols = new
            step += 1
        zero = Const(0, width)
        rows = []
        for r in range(2):
            rows.append([cols[c][r] if len(cols.get(c, [])) > r else zero
                         for c in range(count_bits)])
        return rows

    def _coefficients(self, m, cmd):
        """The weights of the channel counts for ``cmd``.

        Returns ``scales``, per channel a list of ``(select, shift)`` (at most
        one ``select`` is high: the count weighs ``+-2**shift``; none: 0),
        ``negate`` per channel, and ``constant``: the bipolar term plus one per
        negated channel, so that ``sum(count << shift ^ -negate) + constant`` is
        the dot product (``-v == ~v + 1``).
        """
        l1 = cmd.lane_width == LaneWidth.L1
        l2 = cmd.lane_width == LaneWidth.L2
        l4 = ~l1 & ~l2
        ws = cmd.weight_encoding == LaneEncoding.SIGNED
        xs = cmd.feature_encoding == LaneEncoding.SIGNED
        wb = cmd.weight_encoding == LaneEncoding.BIPOLAR
        xb = cmd.feature_encoding == LaneEncoding.BIPOLAR
        if self._fault == "sign":
            ws = xs = Const(0)
        scales, negate = {}, {}
        for i, j in self.CHANNELS:
            kind = self._channel_kind(i, j)
            options = [(l4, i + j, ((i == 3) & ws) ^ ((j == 3) & xs))]
            if i // 2 == j // 2:
                options.append((l2, i % 2 + j % 2, ((i % 2 == 1) & ws) ^ ((j % 2 == 1) & xs)))
            if kind == "diag":
                options += [(l1 & ~wb & ~xb, 0, 0), (l1 & (wb ^ xb), 1, 0), (l1 & wb & xb, 2, 0)]
            elif kind == "count_w":        # xi_c om_0: -(1 or 2) if x bipolar
                options += [(l1 & xb & ~wb, 0, 1), (l1 & xb & wb, 1, 1)]
            elif kind == "count_x":        # om_c xi_0: -(1 or 2) if w bipolar
                options += [(l1 & wb & ~xb, 0, 1), (l1 & wb & xb, 1, 1)]
            by_shift, negative_if = {}, Const(0)
            for select, shift, negative in options:
                by_shift[shift] = by_shift.get(shift, Const(0)) | select
                negative_if = negative_if | (select & negative)
            neg = Signal(name=f"neg_{i}{j}")
            m.d.comb += neg.eq(negative_if)
            sels = []
            for shift, select in sorted(by_shift.items()):
                sel = Signal(name=f"sel_{i}{j}_s{shift}")
                m.d.comb += sel.eq(select)
                sels.append((sel, shift))
            scales[i, j], negate[i, j] = sels, neg
        constant = Signal(bits_for(self._width) + 1)   # om_c xi_c N = N when both bipolar
        m.d.comb += constant.eq(Mux(l1 & wb & xb, cmd.lanes, 0) +
                                sum(negate.values(), Const(0, 5)))
        return scales, negate, constant

    def _active_mask(self, m, cmd):
        """Bit ``b`` is in an active lane iff ``b < lanes * L`` (thermometer code)."""
        W = self._width
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

    def elaborate(self, platform):
        m = Module()
        R, W, P = self._rows, self._width, self._parallel
        WW = self._word_width
        depth = R // P

        # Global-enable pipeline: every stage moves when the output can.
        advance = Signal()
        m.d.comb += advance.eq(~self.res.valid | self.res.ready)
        m.d.comb += [
            self.bus.ready.eq(advance),
            self.feat.ready.eq(advance),
            self.cmd.ready.eq(advance & ~self.bus.valid),
        ]

        # -- SRAM banks ----------------------------------------------------
        bus_row = Signal(self._row_bits + 1)
        bus_word = Signal(max(1, self._word_bits))
        m.d.comb += [
            bus_row.eq(self.bus.payload.addr >> self._word_bits),
            bus_word.eq(self.bus.payload.addr[:self._word_bits] if self._word_bits else 0),
        ]
        bus_bad = Signal()
        m.d.comb += bus_bad.eq((bus_row >= R) | (bus_word >= self._words))
        # Row r lives in bank r % P at address r // P.
        if P & (P - 1) == 0:
            bank_sel = bus_row[:ceil_log2(P)] if P > 1 else Const(0)
            bank_addr = bus_row >> ceil_log2(P)
        else:
            bank_sel, bank_addr = bus_row % P, bus_row // P
        bus_take = Signal()
        m.d.comb += bus_take.eq(self.bus.valid & advance)

        row_data = []
        for bank in range(P):
            mem = Memory(shape=unsigned(W), depth=depth, init=[])
            m.submodules[f"bank{bank}"] = mem
            rd = mem.read_port(domain="sync")
            wr = mem.write_port(granularity=WW)
            m.d.comb += [
                rd.en.eq(advance),
                rd.addr.eq(Mux(self.bus.valid, bank_addr, self.cmd.payload.group)),
                wr.addr.eq(bank_addr),
                wr.data.eq(self.bus.payload.data.replicate(self._words)),
            ]
            with m.If(bus_take & self.bus.payload.write & ~bus_bad & (bank_sel == bank)):
                m.d.comb += wr.en.eq(1 << bus_word)
            row_data.append(rd.data)

        # Memory-mode responses, one cycle after acceptance.
        resp_bank = Signal(max(1, ceil_log2(P)))
        resp_word = Signal.like(bus_word)
        resp_read = Signal()
        m.d.sync += self.bus_resp.valid.eq(bus_take)
        with m.If(bus_take):
            m.d.sync += [
                resp_bank.eq(bank_sel),
                resp_word.eq(bus_word),
                resp_read.eq(~self.bus.payload.write & ~bus_bad),
                self.bus_resp.payload.error.eq(bus_bad),
            ]
        resp_row = Signal(W)
        with m.Switch(resp_bank):
            for bank in range(P - 1):
                with m.Case(bank):
                    m.d.comb += resp_row.eq(row_data[bank])
            with m.Default():
                m.d.comb += resp_row.eq(row_data[P - 1])
        with m.If(resp_read):
            m.d.comb += self.bus_resp.payload.data.eq(resp_row.word_select(resp_word, WW))

        # -- feature register ------------------------------------------------
        feature = Signal(W)
        with m.If(self.feat.valid & advance):
            if self._feature_words == 1:
                m.d.sync += feature.eq(self.feat.payload.data)
            else:
                m.d.sync += feature.word_select(self.feat.payload.word,
                                                self._feature_width).eq(self.feat.payload.data)

        # -- stage A: command accepted, SRAM read in flight ------------------
        cmd = self.cmd.payload
        lane_bad = Signal()
        with m.Switch(cmd.lane_width):
            for lw in LaneWidth:
                with m.Case(lw):
                    if lw.bits == 1:
                        ok = ((cmd.weight_encoding != LaneEncoding.SIGNED) &
                              (cmd.feature_encoding != LaneEncoding.SIGNED))
                    else:
                        ok = ((cmd.weight_encoding != LaneEncoding.BIPOLAR) &
                              (cmd.feature_encoding != LaneEncoding.BIPOLAR))
                    ok &= ((cmd.weight_encoding.as_value() != 3) &
                           (cmd.feature_encoding.as_value() != 3))
                    m.d.comb += lane_bad.eq(~ok | (cmd.lanes > W // lw.bits))
            with m.Default():
                m.d.comb += lane_bad.eq(1)

        a_valid = Signal()
        a_cmd = Signal(cmd.shape())
        a_error = Signal()
        a_mask = Signal(W)
        cmd_mask = self._active_mask(m, cmd)
        with m.If(advance):
            m.d.sync += [
                a_valid.eq(self.cmd.valid & self.cmd.ready),
                a_cmd.eq(cmd),
                a_error.eq(lane_bad | (cmd.group >= depth)),
                a_mask.eq(cmd_mask),
            ]

        # -- stage B onwards: channel popcounts, weighting, result ------------
        # The datapath has four places for the ``pipeline_depth - 2`` cuts, taken
        # in this order: the SRAM read and masked features ("operands"; takes the
        # block RAM's slow output off the datapath), the channel counts, the
        # carry-save rows, the weighted terms; further cuts delay the result.
        cuts = CUT_ORDER[:self._pipeline_depth - 2]
        stage_valids = [a_valid]
        # the channel weights are decoded from the command here and travel with it
        scales, negate, constant = self._coefficients(m, a_cmd)
        coef_fields = [sel for ch in self.CHANNELS for sel, _ in scales[ch]]
        coef_fields += [negate[ch] for ch in self.CHANNELS] + [constant]
        coef = Signal(sum(len(f) for f in coef_fields))
        m.d.comb += coef.eq(Cat(*coef_fields))
        ctl = (a_valid, coef, a_cmd.group * P, a_error)

        def register_ctl(level, ctl):
            valid, c, tag, error = ctl
            out = (Signal(name=f"l{level}_valid"), Signal(c.shape(), name=f"l{level}_coef"),
                   Signal(self._row_bits + 1, name=f"l{level}_row"),
                   Signal(name=f"l{level}_error"))
            with m.If(advance):
                m.d.sync += [o.eq(v) for o, v in zip(out, ctl)]
            stage_valids.append(out[0])
            return out

        def register(value, name):
            r = Signal(value.shape(), name=name)
            with m.If(advance):
                m.d.sync += r.eq(value)
            return r

        rows, wide, features, count_w = self._operands(
            m, row_data, feature, a_mask, a_cmd.lane_width == LaneWidth.L1)
        if "operands" in cuts:
            rows = [register(r, f"l0_row{bank}") for bank, r in enumerate(rows)]
            wide = [register(r, f"l0_row_or_l1_{bank}") for bank, r in enumerate(wide)]
            features, count_w = register(features, "l0_features"), register(count_w, "l0_count_w")
            ctl = register_ctl(0, ctl)
        count_bits = bits_for(W // 4)
        csa_rows = self._compress(m, self._nibble_bits(m, rows, wide, features, count_w), count_bits)
        if "rows" in cuts:
            csa_rows = [[register(v, f"l1_r{r}_c{col}") for col, v in enumerate(row)]
                        for r, row in enumerate(csa_rows)]
            ctl = register_ctl(1, ctl)
        counts = []                 # counts[bank][channel]
        for bank in range(P):
            chans = {}
            for n, ch in enumerate(self.CHANNELS):
                bit = bank * len(self.CHANNELS) + n
                a, b = (Cat(*[col[bit] for col in row]) for row in csa_rows)
                count = Signal(count_bits, name=f"count_b{bank}_{ch[0]}{ch[1]}")
                m.d.comb += count.eq(a + b)
                chans[ch] = count
            counts.append(chans)
        if "counts" in cuts:
            counts = [{ch: register(v, f"l2_{v.name}") for ch, v in chans.items()}
                      for chans in counts]
            ctl = register_ctl(2, ctl)

        pos, unpacked = 0, []
        for f in coef_fields:
            unpacked.append(ctl[1][pos:pos + len(f)])
            pos += len(f)
        fields = iter(unpacked)
        scales = {ch: [(next(fields), shift) for _, shift in scales[ch]] for ch in self.CHANNELS}
        negate = {ch: next(fields) for ch in self.CHANNELS}
        constant = next(fields)
        dwidth = dot_width(W)
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
        if "terms" in cuts:
            terms = [[register(t, f"l3_b{bank}_{n}") for n, t in enumerate(bank_terms)]
                     for bank, bank_terms in enumerate(terms)]
            ctl = register_ctl(3, ctl)
        valid, c, tag, error = ctl
        dots = []
        for bank, bank_terms in enumerate(terms):
            while len(bank_terms) > 1:
                bank_terms = [bank_terms[k] + bank_terms[k + 1] if k + 1 < len(bank_terms)
                              else bank_terms[k] for k in range(0, len(bank_terms), 2)]
            dot = Signal(signed(dwidth), name=f"dot_b{bank}")
            m.d.comb += dot.eq(Mux(error, 0, bank_terms[0]))
            dots.append(dot)
        # cuts beyond the four datapath boundaries delay the finished result
        for extra in range(self._pipeline_depth - 2 - len(cuts)):
            dots = [register(d, f"delay{extra}_{d.name}") for d in dots]
            ctl = register_ctl(4 + extra, ctl)
            valid, c, tag, error = ctl
        with m.If(advance):
            m.d.sync += [
                self.res.valid.eq(valid),
                self.res.payload.row.eq(tag),
                self.res.payload.error.eq(error),
            ]
            for bank in range(P):
                m.d.sync += self.res.payload.dot[bank].eq(dots[bank])

        m.d.comb += self.busy.eq(Cat(*stage_valids, self.res.valid).any())
        return m
