"""Channel-wise max pooling from the activation memory back into it.

See ARCHITECTURE.md section 2 (layer kind ``maxpool``) and the activation
tensor storage format of :mod:`imnpu_sw.tensor`: a tensor ``(H, W, C)`` is
stored HWC, element codes at the storage lane width ``S`` (1, 2 or 4 bits) in
the tensor's lane encoding, channel ``c`` at bits ``c*S`` of its pixel's bit
vector; each pixel starts on a word boundary and takes ``pixel_words`` words;
pixel ``(y, x)`` starts at word ``base + (y*W + x) * pixel_words``.

Because channel ``c`` sits at the same bit position of the same word index in
every pixel, the max over a pooling window is an element-wise max of whole
words: for each output word the unit reads the ``kh * kw`` input words at the
same word index of the window's pixels, one read a cycle, and keeps a running
lane-wise max of the ``word_width / S`` lanes. The lane max is an unsigned
compare for ``UNSIGNED``, a two's complement compare for ``SIGNED`` (a 3-bit
element is stored sign-extended in a 4-bit lane, so the 4-bit compare is
right), and the OR of the bits for ``BIPOLAR`` (code 1 = +1 beats code 0 = -1).

Unused bits. The bits of a pixel beyond ``C*S`` are whole zero lanes in the
input (the storage format says unused bits are zero); the max of zero lanes is
zero in every encoding, so the output's unused bits are zero too. (The unit
does not know ``C``: an input whose unused bits are not zero gives their
lane-wise max there.)
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from ..macro.dimc_tile import LaneEncoding, LaneWidth
from ..params import positive_int

__all__ = ["MaxPoolLayer", "MaxPoolUnit", "maxpool_cycles",
           "MAXPOOL_OVERHEAD_CYCLES", "MAXPOOL_ERROR_CYCLES"]


#: Cycles of a legal layer beyond its reads: three set-up cycles (operand
#: products, copies of the region products' operands, then the region products
#: and the legality check), the read-data and the read-word register cycles of
#: the last read and the cycle that presents the last write (with ``done``).
MAXPOOL_OVERHEAD_CYCLES = 6

#: Cycles from ``start`` to ``done`` of an illegal layer (``error`` set).
MAXPOOL_ERROR_CYCLES = 4


def maxpool_cycles(out_h, out_w, pixel_words, kh, kw):
    """Cycles from the ``start`` cycle to the ``done`` cycle of a legal layer.

    ``out_h * out_w * pixel_words * kh * kw + 6``: one read a cycle, one output
    word written every ``kh * kw`` cycles, plus :data:`MAXPOOL_OVERHEAD_CYCLES`.
    If ``start`` is high in cycle 0, ``done`` is high in cycle ``maxpool_cycles``,
    ``busy`` in cycles 1 to ``maxpool_cycles``, and the next ``start`` is taken
    from the cycle after ``done``: back-to-back layers take ``maxpool_cycles + 1``
    cycles each.
    """
    for name, value in (("out_h", out_h), ("out_w", out_w), ("pixel_words", pixel_words),
                        ("kh", kh), ("kw", kw)):
        positive_int(name, value)
    return out_h * out_w * pixel_words * kh * kw + MAXPOOL_OVERHEAD_CYCLES


def MaxPoolLayer(addr_width, words_width, dim_width, kernel_width, stride_width):
    """Layout of :attr:`MaxPoolUnit.layer`: one max pooling layer."""
    return data.StructLayout({
        "in_base": unsigned(addr_width),        # word address of input pixel (0, 0)
        "out_base": unsigned(addr_width),       # word address of output pixel (0, 0)
        "in_h": unsigned(dim_width),
        "in_w": unsigned(dim_width),
        "pixel_words": unsigned(words_width),   # words per pixel, input and output
        "lane": LaneWidth,                      # storage lane width S
        "encoding": LaneEncoding,               # storage lane encoding
        "kh": unsigned(kernel_width),
        "kw": unsigned(kernel_width),
        "stride_h": unsigned(stride_width),
        "stride_w": unsigned(stride_width),
        "out_h": unsigned(dim_width),
        "out_w": unsigned(dim_width),
    })


class MaxPoolUnit(wiring.Component):
    """Channel-wise max pooling of an activation tensor, memory to memory.

    Pools the input tensor ``(in_h, in_w, C)`` at ``in_base`` into the output
    tensor ``(out_h, out_w, C)`` at ``out_base``, both in the activation memory
    format of :mod:`imnpu_sw.tensor` with the same lane width, encoding and
    ``pixel_words``; no padding: ``y[oy, ox, c]`` is the max of
    ``x[oy*stride_h + ky, ox*stride_w + kx, c]`` over ``ky < kh``, ``kx < kw``
    (``imnpu_ref.maxpool``). ``out_h`` may be smaller than
    ``(in_h - kh) // stride_h + 1`` (likewise ``out_w``), never larger.

    For each output pixel (row-major) and each word index ``w`` of it, the unit
    reads word ``w`` of the ``kh * kw`` window pixels (``ky`` outer, ``kx``
    inner), one read a cycle with no bubbles, keeps the lane-wise running max
    and writes the output word; output words are written in ascending address
    order, each exactly once, and nothing else is written.

    Timing. With ``start`` high in cycle 0 and
    ``N = out_h * out_w * pixel_words * kh * kw``: set-up in cycles 1 to 3,
    reads in cycles 4 .. ``N + 3`` (``rd_en`` high throughout), the write of
    the output word completed by the read of cycle ``t`` is presented in cycle
    ``t + 3`` (the read word passes a register first), and ``done`` pulses in
    cycle ``N + 6`` together with the last write. So a layer takes
    :func:`maxpool_cycles` ``= N + 6`` cycles from start to done, ``busy`` is
    high in cycles 1 .. ``N + 6`` and a new ``start`` is taken from cycle
    ``N + 7`` on. An illegal layer (see ``error``) makes no
    access and finishes with ``done`` and ``error`` in cycle 4.

    Parameters
    ----------
    word_width : int
        ``AW``, bits of a memory word; a multiple of 4.
    depth : int
        Words of the activation memory; addresses are ``ceil_log2(depth)`` bits
        (at least 1), and both tensors must lie below ``depth``.
    max_dim : int
        Largest ``in_h``, ``in_w``, ``out_h``, ``out_w``: those fields are
        ``bits_for(max_dim)`` bits wide.
    max_kernel : int
        Largest ``kh``, ``kw``: those fields are ``bits_for(max_kernel)`` bits.
    max_stride : int
        Largest ``stride_h``, ``stride_w``: those fields are
        ``bits_for(max_stride)`` bits.

    Members
    -------
    layer : ``In(MaxPoolLayer(...))``
        The layer (:attr:`layer_layout`). Must be valid in the ``start`` cycle
        and held until ``done``.
    start : ``In(1)``
        Starts the layer; taken when ``busy`` is low, ignored otherwise.
    busy : ``Out(1)``
        High from the cycle after ``start`` up to and including the ``done``
        cycle.
    done : ``Out(1)``
        One-cycle pulse: the layer is finished (its last write is presented in
        the same cycle and happens at the clock edge that ends it).
    error : ``Out(1)``
        Valid with ``done`` and held until the next ``start``: the layer was
        illegal and nothing was read or written. Illegal: lane code 3,
        encoding code 3, ``SIGNED`` in 1-bit lanes, ``BIPOLAR`` in 2- or 4-bit
        lanes, a zero dimension, ``pixel_words``, kernel size or stride, a
        window outside the input (``(out_h - 1)*stride_h + kh > in_h`` or
        likewise in width), a tensor reaching beyond ``depth`` words, or
        overlapping input and output regions.
    rd_addr : ``Out(ceil_log2(depth))``, rd_en : ``Out(1)``, rd_data : ``In(AW)``
        Synchronous read port: the word at ``rd_addr``, requested with ``rd_en``
        in cycle ``n``, is on ``rd_data`` in cycle ``n + 1``.
    wr_addr : ``Out(ceil_log2(depth))``, wr_data : ``Out(AW)``, wr_en : ``Out(1)``
        Whole-word write port; the write happens at the clock edge ending the
        cycle ``wr_en`` is high. Registered outputs.
    """

    def __init__(self, *, word_width=32, depth=1024, max_dim=4096, max_kernel=255,
                 max_stride=255):
        for name, value in (("word_width", word_width), ("depth", depth), ("max_dim", max_dim),
                            ("max_kernel", max_kernel), ("max_stride", max_stride)):
            positive_int(name, value)
        if word_width % 4:
            raise ValueError(f"word_width must be a multiple of 4, not {word_width}")
        if max_kernel > max_dim:
            raise ValueError(f"max_kernel {max_kernel} exceeds max_dim {max_dim}")
        self._word_width = word_width
        self._depth = depth
        self._max_dim = max_dim
        self._max_kernel = max_kernel
        self._max_stride = max_stride
        self._addr_width = max(1, ceil_log2(depth))
        self._layout = MaxPoolLayer(self._addr_width, bits_for(depth), bits_for(max_dim),
                                    bits_for(max_kernel), bits_for(max_stride))
        super().__init__({
            "layer": In(self._layout),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "rd_addr": Out(self._addr_width),
            "rd_en": Out(1),
            "rd_data": In(word_width),
            "wr_addr": Out(self._addr_width),
            "wr_data": Out(word_width),
            "wr_en": Out(1),
        })

    word_width = property(lambda self: self._word_width)
    depth = property(lambda self: self._depth)
    max_dim = property(lambda self: self._max_dim)
    max_kernel = property(lambda self: self._max_kernel)
    max_stride = property(lambda self: self._max_stride)
    addr_width = property(lambda self: self._addr_width)
    layer_layout = property(lambda self: self._layout)

    @staticmethod
    def cycles(out_h, out_w, pixel_words, kh, kw):
        """:func:`maxpool_cycles`."""
        return maxpool_cycles(out_h, out_w, pixel_words, kh, kw)

    # -- datapath -------------------------------------------------------------

    def _lane_max(self, a, b, lane, flip):
        """Lane-wise max of words ``a`` and ``b`` in ``lane``-bit lanes.

        ``flip`` (1 bit) inverts each lane's top bit before an unsigned compare,
        turning it into a two's complement compare. 1-bit lanes OR.
        """
        if lane == 1:
            return a | b
        parts = []
        top = Cat(Const(0, lane - 1), flip)
        for i in range(0, self._word_width, lane):
            x, y = a[i:i + lane], b[i:i + lane]
            parts.append(Mux((x ^ top) > (y ^ top), x, y))
        return Cat(*parts)

    def elaborate(self, platform):
        m = Module()
        L = self.layer
        aw = self._addr_width

        # -- set-up, stage 1: products of layer fields and field checks -----
        # Free-running registers: the layer is valid from the start cycle, so
        # stage 1 holds it from cycle 1, stage 2 from cycle 2 and stage 3 from cycle 3.
        row_pitch = Signal(len(L.in_w) + len(L.pixel_words))     # in_w * pw
        step_x = Signal(len(L.stride_w) + len(L.pixel_words))    # stride_w * pw
        out_row = Signal(len(L.out_w) + len(L.pixel_words))      # out_w * pw
        sel1, sel2, flip = Signal(), Signal(), Signal()
        ok1 = Signal()
        lane_ok = Signal()
        with m.Switch(L.lane):
            with m.Case(LaneWidth.L1):
                m.d.comb += lane_ok.eq((L.encoding == LaneEncoding.UNSIGNED) |
                                       (L.encoding == LaneEncoding.BIPOLAR))
            with m.Case(LaneWidth.L2, LaneWidth.L4):
                m.d.comb += lane_ok.eq((L.encoding == LaneEncoding.UNSIGNED) |
                                       (L.encoding == LaneEncoding.SIGNED))
        nonzero = Cat(L.in_h != 0, L.in_w != 0, L.out_h != 0, L.out_w != 0,
                      L.pixel_words != 0, L.kh != 0, L.kw != 0,
                      L.stride_h != 0, L.stride_w != 0).all()
        # (out - 1) * stride + k <= in, without the subtraction (out >= 1); the
        # products are registered here and compared in stage 2 (multiply, add and
        # compare in one cycle was the fpga cluster's critical path, 20.8 ns)
        span_h = Signal(len(L.out_h) + len(L.stride_h))
        span_w = Signal(len(L.out_w) + len(L.stride_w))
        m.d.sync += [
            row_pitch.eq(L.in_w * L.pixel_words),
            step_x.eq(L.stride_w * L.pixel_words),
            out_row.eq(L.out_w * L.pixel_words),
            sel1.eq(L.lane == LaneWidth.L1),
            sel2.eq(L.lane == LaneWidth.L2),
            flip.eq(L.encoding == LaneEncoding.SIGNED),
            span_h.eq(L.out_h * L.stride_h),
            span_w.eq(L.out_w * L.stride_w),
            ok1.eq(lane_ok & nonzero),
        ]

        # -- set-up, stage 2: copies of the region products' operands, the
        # window check. The copies feed only their multipliers, so that they sit
        # beside the DSPs (a product of stage-1 results into a DSP and out again
        # in one cycle was the `fpga` self-test's critical path, 20.9 ns)
        f_stride_h, f_in_h, f_out_h = (Signal.like(L.stride_h), Signal.like(L.in_h),
                                       Signal.like(L.out_h))
        f_row_pitch, f_out_row = Signal.like(row_pitch), Signal.like(out_row)
        ok2 = Signal()
        # the window check's sums here, their comparison in stage 3 (adds and
        # compares in one stage were 20.9 ns routed on the `fpga` self-test)
        need_h, have_h = Signal(len(span_h) + 1), Signal(len(span_h) + 1)
        need_w, have_w = Signal(len(span_w) + 1), Signal(len(span_w) + 1)
        m.d.sync += [
            f_stride_h.eq(L.stride_h), f_in_h.eq(L.in_h), f_out_h.eq(L.out_h),
            f_row_pitch.eq(row_pitch), f_out_row.eq(out_row),
            need_h.eq(span_h + L.kh), have_h.eq(L.in_h + L.stride_h),
            need_w.eq(span_w + L.kw), have_w.eq(L.in_w + L.stride_w),
            ok2.eq(ok1),
        ]

        # -- set-up, stage 3: region sizes, the row step ----------------------
        step_y = Signal(len(L.stride_h) + len(row_pitch))        # stride_h * in_w * pw
        in_size = Signal(len(L.in_h) + len(row_pitch))
        out_size = Signal(len(L.out_h) + len(out_row))
        ok3 = Signal()
        m.d.sync += [
            step_y.eq(f_stride_h * f_row_pitch),
            in_size.eq(f_in_h * f_row_pitch),
            out_size.eq(f_out_h * f_out_row),
            ok3.eq(ok2 & (need_h <= have_h) & (need_w <= have_w)),
        ]
        # The regions' bounds, in_base + in_size <= depth and so on, compared as
        # in_size <= depth - in_base: the differences come from the layer fields
        # alone (free-running registers, like stage 1), so the check in CHECK is
        # one comparison behind the stage-3 products, not an add and a compare
        # (that was 21.4 ns routed on the `fpga` self-test).
        room = signed(max(len(in_size), len(out_size), aw) + 2)
        in_room, out_room = Signal(room), Signal(room)         # depth - base
        in_gap, out_gap = Signal(room), Signal(room)           # out_base - in_base, ...
        m.d.sync += [
            in_room.eq(self._depth - L.in_base), out_room.eq(self._depth - L.out_base),
            in_gap.eq(L.out_base - L.in_base), out_gap.eq(L.in_base - L.out_base),
        ]
        legal = Signal()
        m.d.comb += legal.eq(ok3 & (in_size <= in_room) & (out_size <= out_room) &
                             ((in_size <= in_gap) | (out_size <= out_gap)))

        # -- read address generation -----------------------------------------
        kx = Signal.like(L.kw)
        ky = Signal.like(L.kh)
        w = Signal.like(L.pixel_words)
        ox = Signal.like(L.out_w)
        oy = Signal.like(L.out_h)
        ptr = Signal(aw)        # the read address
        ptr_row = Signal(aw)    # pixel (ky, 0) of the window, word w
        win_w = Signal(aw)      # pixel (0, 0) of the window, word w
        win = Signal(aw)        # pixel (0, 0) of the window, word 0
        row = Signal(aw)        # pixel (0, 0) of the first window of this output row

        # kx + 1 == kw, ... as registers, set with the counters from comparisons of
        # their present values (at_zero: their values with the counters at 0): the READ
        # state's priority chain then starts at flip-flops, not behind five adders and
        # comparators (a critical path on the ECP5)
        last_x = Signal()
        last_y = Signal()
        last_w = Signal()
        last_ox = Signal()
        last_oy = Signal()
        at_zero = [last_x.eq(L.kw == 1), last_y.eq(L.kh == 1), last_w.eq(L.pixel_words == 1),
                   last_ox.eq(L.out_w == 1), last_oy.eq(L.out_h == 1)]

        reading = Signal()
        m.d.comb += [
            self.rd_en.eq(reading),
            self.rd_addr.eq(ptr),
        ]

        # -- read data: running max, write -----------------------------------
        d_valid = Signal()
        d_first = Signal()
        d_last = Signal()
        m.d.sync += [
            d_valid.eq(reading),
            d_first.eq((kx == 0) & (ky == 0)),
            d_last.eq(last_x & last_y),
        ]
        # the read word first into a register next to the block RAM (whose
        # clock-to-out leaves no time for the lane compare)
        e_valid, e_first, e_last = Signal(), Signal(), Signal()
        e_word = Signal(self._word_width)
        m.d.sync += [e_valid.eq(d_valid), e_first.eq(d_first), e_last.eq(d_last),
                     e_word.eq(self.rd_data)]
        acc = Signal(self._word_width)
        out_ptr = Signal(aw)
        best = Signal(self._word_width)
        merged = Signal(self._word_width)
        m.d.comb += [
            best.eq(Mux(sel1, self._lane_max(acc, e_word, 1, flip),
                        Mux(sel2, self._lane_max(acc, e_word, 2, flip),
                            self._lane_max(acc, e_word, 4, flip)))),
            merged.eq(Mux(e_first, e_word, best)),
        ]
        m.d.sync += self.wr_en.eq(e_valid & e_last)
        with m.If(e_valid):
            m.d.sync += acc.eq(merged)
            with m.If(e_last):
                m.d.sync += [
                    self.wr_data.eq(merged),
                    self.wr_addr.eq(out_ptr),
                    out_ptr.eq(out_ptr + 1),
                ]

        # -- control -------------------------------------------------------
        with m.FSM(name="maxpool"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        self.error.eq(0),
                        kx.eq(0), ky.eq(0), w.eq(0), ox.eq(0), oy.eq(0),
                        ptr.eq(L.in_base), ptr_row.eq(L.in_base), win_w.eq(L.in_base),
                        win.eq(L.in_base), row.eq(L.in_base),
                        out_ptr.eq(L.out_base),
                    ]
                    m.next = "SETUP"
            with m.State("SETUP"):
                m.d.comb += self.busy.eq(1)
                m.next = "SETUP2"
            with m.State("SETUP2"):
                m.d.comb += self.busy.eq(1)
                m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += at_zero                 # the counters are all 0
                with m.If(legal):
                    m.next = "READ"
                with m.Else():
                    m.d.sync += self.error.eq(1)
                    m.next = "FINISH"
            with m.State("READ"):
                m.d.comb += [self.busy.eq(1), reading.eq(1)]
                with m.If(~last_x):
                    m.d.sync += [kx.eq(kx + 1), ptr.eq(ptr + L.pixel_words),
                                 last_x.eq(kx + 2 == L.kw)]
                with m.Elif(~last_y):
                    m.d.sync += [kx.eq(0), ky.eq(ky + 1),
                                 ptr_row.eq(ptr_row + row_pitch), ptr.eq(ptr_row + row_pitch),
                                 at_zero[0], last_y.eq(ky + 2 == L.kh)]
                with m.Elif(~last_w):
                    m.d.sync += [kx.eq(0), ky.eq(0), w.eq(w + 1),
                                 win_w.eq(win_w + 1), ptr_row.eq(win_w + 1), ptr.eq(win_w + 1),
                                 *at_zero[:2], last_w.eq(w + 2 == L.pixel_words)]
                with m.Elif(~last_ox):
                    nxt = win + step_x
                    m.d.sync += [kx.eq(0), ky.eq(0), w.eq(0), ox.eq(ox + 1),
                                 win.eq(nxt), win_w.eq(nxt), ptr_row.eq(nxt), ptr.eq(nxt),
                                 *at_zero[:3], last_ox.eq(ox + 2 == L.out_w)]
                with m.Elif(~last_oy):
                    nxt = row + step_y
                    m.d.sync += [kx.eq(0), ky.eq(0), w.eq(0), ox.eq(0), oy.eq(oy + 1),
                                 row.eq(nxt), win.eq(nxt), win_w.eq(nxt), ptr_row.eq(nxt),
                                 ptr.eq(nxt), *at_zero[:4], last_oy.eq(oy + 2 == L.out_h)]
                with m.Else():
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                m.next = "DRAIN_WORD"
            with m.State("DRAIN_WORD"):
                m.d.comb += self.busy.eq(1)
                m.next = "FINISH"
            with m.State("FINISH"):
                m.d.comb += [self.busy.eq(1), self.done.eq(1)]
                m.next = "IDLE"
        return m
