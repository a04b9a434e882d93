"""The DIMC tile: an SRAM array that computes row dot products in place.

See ARCHITECTURE.md sections 1 and 2. The array is ``rows`` x ``width`` bits,
kept in ``parallel`` banks of :class:`amaranth.lib.memory.Memory` (row ``r`` in
bank ``r % parallel``) so that synthesis infers block RAM. A compute command
reads one *group* of ``parallel`` rows (rows ``g*P .. g*P+P-1``, one from each
bank) and produces their dot products with the feature register.

The datapath works on 4-bit *nibbles*: each nibble of a row computes its
contribution at the current lane width (one 4-bit lane, two 2-bit lanes or
four 1-bit lanes), and one adder tree of ``width / 4`` leaves sums them. Pipeline
registers are spread over that tree to reach ``pipeline_depth``.
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

    def _decode(self, code, lane, is_signed, is_bipolar):
        """Value of a lane code as a signed integer (ARCHITECTURE.md section 1)."""
        if lane == 1:
            return Mux(is_bipolar, Mux(code, 1, -1), code)
        if self._fault == "sign":
            is_signed = Const(0)
        return Mux(is_signed, code.as_signed(), code)

    def _datapath(self, m, rows, feature, cmd):
        """Per-row lists of nibble contributions (bits 4k .. 4k+3 of each row).

        Decoding of the command and of the features is shared by the ``P`` rows.
        """
        W = self._width
        sel = {lane: Signal(name=f"sel_l{lane}") for lane in (1, 2)}
        w_signed, w_bipolar = Signal(), Signal()
        x_signed, x_bipolar = Signal(), Signal()
        m.d.comb += [
            sel[1].eq(cmd.lane_width == LaneWidth.L1),
            sel[2].eq(cmd.lane_width == LaneWidth.L2),
            w_signed.eq(cmd.weight_encoding == LaneEncoding.SIGNED),
            w_bipolar.eq(cmd.weight_encoding == LaneEncoding.BIPOLAR),
            x_signed.eq(cmd.feature_encoding == LaneEncoding.SIGNED),
            x_bipolar.eq(cmd.feature_encoding == LaneEncoding.BIPOLAR),
        ]
        # Bit b of a row is in an active lane iff b < lanes * L.
        active_bits = Signal(bits_for(W) + 2)
        m.d.comb += active_bits.eq(Mux(sel[1], cmd.lanes,
                                       Mux(sel[2], cmd.lanes << 1, cmd.lanes << 2)))
        active = Signal(W)
        m.d.comb += [active[b].eq(b < active_bits) for b in range(W)]

        lanes_of = {}   # (lane, bit offset) -> (decoded feature, active)
        for lane in (1, 2, 4):
            for offset in range(0, W, lane):
                if self._fault == "lane" and offset == lane:
                    continue
                x = Signal(signed(lane + 1), name=f"x{lane}_{offset}")
                m.d.comb += x.eq(self._decode(feature[offset:offset + lane], lane,
                                              x_signed, x_bipolar))
                lanes_of[lane, offset] = x

        contributions = []
        for row in rows:
            nibbles = []
            for k in range(W // 4):
                sums = {}
                for lane in (1, 2, 4):
                    terms = []
                    for offset in range(4 * k, 4 * k + 4, lane):
                        if (lane, offset) not in lanes_of:
                            continue
                        w = self._decode(row[offset:offset + lane], lane, w_signed, w_bipolar)
                        terms.append(Mux(active[offset], w * lanes_of[lane, offset], 0))
                    sums[lane] = sum(terms[1:], terms[0]) if terms else Const(0)
                nibbles.append(Mux(sel[1], sums[1], Mux(sel[2], sums[2], sums[4])))
            contributions.append(nibbles)
        return contributions

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
        with m.If(advance):
            m.d.sync += [
                a_valid.eq(self.cmd.valid & self.cmd.ready),
                a_cmd.eq(cmd),
                a_error.eq(lane_bad | (cmd.group >= depth)),
            ]

        # -- stage B onwards: nibbles, adder tree, result ---------------------
        dwidth = dot_width(W)
        cuts = {(i * self._tree_levels) // (self._pipeline_depth - 2)
                for i in range(self._pipeline_depth - 2)}
        valid, tag, error = a_valid, a_cmd.group * P, a_error
        stage_valids = [a_valid]
        level_values = self._datapath(m, row_data, feature, a_cmd)

        def register(values, level):
            regs = []
            for bank, vals in enumerate(values):
                row = []
                for k, v in enumerate(vals):
                    r = Signal(signed(dwidth), name=f"l{level}_b{bank}_{k}")
                    with m.If(advance):
                        m.d.sync += r.eq(v)
                    row.append(r)
                regs.append(row)
            return regs

        def register_ctl(level, valid, tag, error):
            out = (Signal(name=f"l{level}_valid"), Signal(self._row_bits + 1, name=f"l{level}_row"),
                   Signal(name=f"l{level}_error"))
            with m.If(advance):
                m.d.sync += [out[0].eq(valid), out[1].eq(tag), out[2].eq(error)]
            return out

        for level in range(self._tree_levels + 1):
            if level in cuts:
                level_values = register(level_values, level)
                valid, tag, error = register_ctl(level, valid, tag, error)
                stage_valids.append(valid)
            if level == self._tree_levels:
                break
            level_values = [
                [vals[i] + vals[i + 1] if i + 1 < len(vals) else vals[i]
                 for i in range(0, len(vals), 2)]
                for vals in level_values]

        with m.If(advance):
            m.d.sync += [
                self.res.valid.eq(valid),
                self.res.payload.row.eq(tag),
                self.res.payload.error.eq(error),
            ]
            for bank in range(P):
                m.d.sync += self.res.payload.dot[bank].eq(Mux(error, 0, level_values[bank][0]))

        m.d.comb += self.busy.eq(Cat(*stage_valids, self.res.valid).any())
        return m
