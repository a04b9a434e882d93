"""The patch builder: a cluster's im2col engine.

See ARCHITECTURE.md sections 1 and 2. The builder reads an input activation
tensor from the cluster's activation memory and emits, for every output pixel
of a ``conv2d`` (or ``dense``: a 1 x 1 kernel on a 1 x 1 input) layer, the
pixel's receptive field cut into ``W``-bit feature vectors ("chunks") for the
DIMC tiles, each element widened from its storage lane width ``S`` to the
compute lane width ``L``.

Activation memory format (``imnpu_sw.tensor``): a tensor ``(H, Wd, C)`` is
stored HWC, element codes at the storage lane width ``S`` with the tensor's
encoding, channel ``c`` at bits ``c*S`` of its pixel's bit vector; every pixel
starts on a word boundary and spans ``pixel_words`` words, pixel ``(y, x)``
from word ``base + (y*Wd + x) * pixel_words``, word 0 holding the lowest bits.

Chunk order and content (``NL = W / L`` lanes, ``K = kh * kw`` positions,
position ``p = ky * kw + kx`` of output pixel ``(oy, ox)`` is input pixel
``(oy*stride_h - pad_h + ky, ox*stride_w - pad_w + kx)``)::

    for pass in range(passes):
        for oy in range(out_h):
            for ox in range(out_w):
                for c in range(chunks):
                    emit chunk c of (oy, ox)

* ``slices_per_position == 1`` (``Cin <= NL``): chunk ``c`` holds positions
  ``c*ppc .. min(c*ppc + ppc, K) - 1``; position ``p`` is channels
  ``0 .. Cin-1`` at lanes ``(p - c*ppc) * Cin ...``. This is the
  :func:`imnpu_ref.im2col` order, cut into pieces of ``ppc * Cin`` lanes.
* ``slices_per_position = spp > 1`` (``Cin > NL``): chunk ``c = p*spp + s``
  holds channels ``s*NL .. min(s*NL + NL, Cin) - 1`` of position ``p`` from
  lane 0. ``positions_per_chunk`` is then ignored (taken as 1).
* A position outside the input (padding) is lanes of code 0. An element is
  widened from ``S`` to ``L`` bits: unsigned zero-extends, signed sign-extends,
  bipolar (``S = 1``) is copied at ``L = 1`` and becomes the signed code of
  +1 (bit 1) or -1 (bit 0) at ``L >= 2``. Bits at ``lanes * L`` and beyond are 0.

Descriptor. The sequencer supplies the derived fields consistently:
``out_h = (H + 2*pad_h - kh) // stride_h + 1`` (likewise ``out_w``); for
``Cin <= NL``: ``spp = 1``, ``1 <= ppc <= NL // Cin`` (normally equal),
``chunks = ceil(K / ppc)``; for ``Cin > NL``: ``spp = ceil(Cin / NL)``,
``chunks = K * spp``. Inconsistent values give undefined chunk contents but
never a hang, and reads never leave the tensor (``base`` .. ``base + H*Wd*
pixel_words - 1``): the kernel window is clipped to the input. Descriptors the
datapath cannot run (see ``error``) are refused at ``start``.

Datapath. An *issue* stage walks the layer and presents one activation memory
read a cycle (the read port has one cycle of latency); for every word it sends
down the pipeline the bit offset of the word's first needed element, the
number of needed elements and their destination lane. The *place* stage
widens the word's elements to ``L`` bits, masks the unneeded ones, shifts them
to their lane (a logarithmic shifter of ``W`` bits) and ORs them into a ``W``-
bit staging register; the last word of a chunk moves the chunk into the
``chunk`` stream's output register, and the staging register starts on the
next chunk while that one waits to be taken.

The issue stage reads only the words of a pixel that hold needed channels (a
slice's words when ``spp > 1``), never reads a padded position and skips any
number of padded positions without spending a cycle on them: the valid kernel
window of an output pixel is the rectangle ``ky_lo <= ky < ky_hi``,
``kx_lo <= kx < kx_hi``, and the walk steps from one valid position to the next.

Timing
------
Let ``words(c)`` be the activation words chunk ``c`` reads:

* ``spp == 1``: ``pixel_words`` for every position of the chunk that is inside
  the input, 0 for padded ones;
* ``spp > 1``: 0 if the position is padded, else
  ``ceil(((s*NL*S) % AW + n*S) / AW)`` with ``n = min(NL, Cin - s*NL)``: the
  words the slice's bits ``s*NL*S .. (s*NL + n)*S - 1`` touch.

Chunk ``c`` takes exactly ``cycles(c) = max(1, words(c))`` cycles of the
issue stage: no overhead between chunks, positions, slices, output pixels or
passes (an all-padding chunk costs one cycle). With ``chunk.ready`` held high
the ``k``-th chunk of a layer (from 0) is valid, and taken, in cycle
``START_LATENCY + cycles(0) + ... + cycles(k)`` counting the cycle in which
``start`` is high as cycle 0; ``busy`` is low from the cycle after the last
chunk is taken. Backpressure only stalls the builder while the output register
is full *and* the staging register holds a finished chunk.
:func:`chunk_words` computes ``words(c)`` for a layer.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from ..macro.dimc_tile import LaneEncoding, LaneWidth
from ..params import positive_int

__all__ = ["PatchLayer", "PatchChunk", "PatchBuilder", "chunk_words", "START_LATENCY"]


#: With ``start`` high in cycle 0 and ``chunk.ready`` held high, chunk ``k`` of
#: the layer is valid (and taken) in cycle ``START_LATENCY + sum(cycles(0..k))``;
#: the first activation read is issued in cycle 4.
START_LATENCY = 5


def PatchLayer(addr_width, width, max_dim, max_kernel, max_passes):
    """Layout of the ``layer`` descriptor of a :class:`PatchBuilder`.

    Every field is held constant while the builder is busy.
    """
    dim = unsigned(bits_for(max_dim))
    ker = unsigned(bits_for(max_kernel))
    return data.StructLayout({
        "in_base": unsigned(addr_width),                  # word address of pixel (0, 0)
        "in_h": dim,                                      # input height H
        "in_w": dim,                                      # input width Wd
        "cin": dim,                                       # input channels Cin
        "in_pixel_words": unsigned(addr_width + 1),       # words per stored pixel
        "in_lane": LaneWidth,                             # storage lane width S
        "in_encoding": LaneEncoding,                      # encoding of the stored codes
        "lane": LaneWidth,                                # compute lane width L >= S
        "kh": ker,
        "kw": ker,
        "stride_h": ker,
        "stride_w": ker,
        "pad_h": ker,
        "pad_w": ker,
        "out_h": dim,
        "out_w": dim,
        "positions_per_chunk": unsigned(bits_for(width)),          # ppc (spp == 1)
        "slices_per_position": dim,                                # spp
        "chunks": unsigned(bits_for(max_kernel * max_kernel * max_dim)),  # per output pixel
        "passes": unsigned(bits_for(max_passes)),
    })


def PatchChunk(width):
    """Payload of the ``chunk`` stream of a :class:`PatchBuilder`."""
    return data.StructLayout({
        "features": unsigned(width),     # lane codes, lane 0 in the lowest bits
        "lanes": unsigned(bits_for(width)),   # active lanes, 0 .. W / L
        "last": unsigned(1),             # last chunk of this output pixel
        "first": unsigned(1),            # first chunk of this output pixel
        "pixel_last": unsigned(1),       # chunk of the pass's last output pixel
        "pass_last": unsigned(1),        # chunk of the layer's last pass
    })


def chunk_words(*, width, word_width, in_h, in_w, cin, in_lane, lane, kh, kw,
                stride=(1, 1), padding=(0, 0), positions_per_chunk=None):
    """Activation words read for each chunk of one pass, in emission order.

    A pure-Python statement of the timing contract for performance models:
    chunk ``c`` takes ``max(1, words[c])`` cycles. ``in_lane`` and ``lane`` are
    the bit widths ``S`` and ``L``; ``positions_per_chunk`` defaults to
    ``(width // lane) // cin`` when ``cin <= width // lane``.

    Returns
    -------
    list of int
        ``out_h * out_w * chunks`` word counts.
    """
    sh, sw = stride
    ph, pw = padding
    nl = width // lane
    pixel_words = -(-cin * in_lane // word_width)
    out_h = (in_h + 2 * ph - kh) // sh + 1
    out_w = (in_w + 2 * pw - kw) // sw + 1
    k = kh * kw
    words = []
    for oy in range(out_h):
        for ox in range(out_w):
            def inside(p):
                iy, ix = oy * sh - ph + p // kw, ox * sw - pw + p % kw
                return 0 <= iy < in_h and 0 <= ix < in_w
            if cin <= nl:
                ppc = positions_per_chunk or nl // cin
                for c0 in range(0, k, ppc):
                    words.append(sum(pixel_words for p in range(c0, min(c0 + ppc, k))
                                     if inside(p)))
            else:
                for p in range(k):
                    for lo in range(0, cin, nl):
                        n = min(nl, cin - lo)
                        first = lo * in_lane // word_width
                        last = ((lo + n) * in_lane - 1) // word_width
                        words.append(last - first + 1 if inside(p) else 0)
    return words


class _State(enum.Enum, shape=3):
    IDLE = 0
    SETUP1 = 1
    SETUP2 = 2
    FIRST = 3
    RUN = 4


class PatchBuilder(wiring.Component):
    """The im2col engine of a cluster (see the module docstring for the format).

    Parameters
    ----------
    width : int
        ``W``, bits of a chunk (a DIMC row); a multiple of 4.
    word_width : int
        ``AW``, bits of an activation memory word; a multiple of 4 (``W`` need
        not be a multiple of it).
    depth : int
        Words of the activation memory; sets the address width
        ``ceil_log2(depth)`` (at least 1).
    max_dim : int
        Largest ``H``, ``Wd``, ``Cin``, ``out_h``, ``out_w`` and
        ``slices_per_position``; sets descriptor field widths.
    max_kernel : int
        Largest ``kh``, ``kw``, stride and padding.
    max_passes : int
        Largest ``passes``.

    Members
    -------
    layer : ``In(PatchLayer(...))``
        The layer descriptor, held constant while ``busy``.
    start : ``In(1)``
        One-cycle pulse that starts a layer; ignored while ``busy``.
    busy : ``Out(1)``
        High from the cycle after ``start`` until the last chunk is taken.
    error : ``Out(1)``
        The last ``start`` was refused (no chunk is emitted), held until the
        next ``start``: a lane width code 3, ``L < S``, an encoding that ``S``
        does not have (bipolar needs ``S = 1``, signed ``S >= 2``, code 3), or
        a zero ``cin``, ``in_pixel_words``, ``kh``, ``kw``, stride, ``out_h``,
        ``out_w``, ``slices_per_position``, ``chunks`` or ``passes``.
    rd_addr, rd_en : ``Out(addr_width)``, ``Out(1)``
        Activation memory read port (synchronous, transparent off): the word
        at ``rd_addr`` of a cycle with ``rd_en`` high is on ``rd_data`` in the
        next cycle and held while ``rd_en`` is low.
    rd_data : ``In(word_width)``
    chunk : ``Out(stream.Signature(PatchChunk(width)))``
        The chunks, in order; ``payload`` holds still while ``valid`` waits.
    """

    def __init__(self, *, width, word_width, depth, max_dim=4096, max_kernel=16,
                 max_passes=256):
        for name, value in (("width", width), ("word_width", word_width), ("depth", depth),
                            ("max_dim", max_dim), ("max_kernel", max_kernel),
                            ("max_passes", max_passes)):
            positive_int(name, value)
        if width % 4:
            raise ValueError(f"width must be a multiple of 4, not {width}")
        if word_width % 4:
            raise ValueError(f"word_width must be a multiple of 4, not {word_width}")

        self._width = width
        self._word_width = word_width
        self._depth = depth
        self._max_dim = max_dim
        self._max_kernel = max_kernel
        self._max_passes = max_passes
        self._addr_bits = max(1, ceil_log2(depth))
        super().__init__({
            "layer": In(PatchLayer(self._addr_bits, width, max_dim, max_kernel, max_passes)),
            "start": In(1),
            "busy": Out(1),
            "error": Out(1),
            "rd_addr": Out(self._addr_bits),
            "rd_en": Out(1),
            "rd_data": In(word_width),
            "chunk": Out(stream.Signature(PatchChunk(width))),
        })

    width = property(lambda self: self._width)
    word_width = property(lambda self: self._word_width)
    depth = property(lambda self: self._depth)
    addr_width = property(lambda self: self._addr_bits)
    max_dim = property(lambda self: self._max_dim)
    max_kernel = property(lambda self: self._max_kernel)
    max_passes = property(lambda self: self._max_passes)
    start_latency = property(lambda self: START_LATENCY)

    # -- place stage ---------------------------------------------------------

    def _place(self, m, word, bit, count, dest, lg_lane, lg_store, bipolar, is_signed):
        """``W`` bits holding ``count`` elements of ``word`` from bit ``bit`` on,
        widened to ``L`` bits and placed from lane ``dest``; zero elsewhere."""
        W, AW = self._width, self._word_width
        raw = Signal(AW)
        m.d.comb += raw.eq(word >> bit)
        needed = Signal(AW)                       # needed[k]: element k is placed
        m.d.comb += needed.eq(Cat(*(count > k for k in range(AW))))

        widened = Signal(W)                       # placed from lane 0
        with m.Switch(Cat(lg_store, lg_lane)):
            for lane in (1, 2, 4):
                for store in (1, 2, 4):
                    if store > lane:
                        continue
                    lanes = []
                    for k in range(min(AW // store, W // lane)):
                        code = raw[k * store:(k + 1) * store]
                        if store == lane:
                            ext = code
                        elif store == 1:     # unsigned or bipolar (signed needs S >= 2)
                            ext = Cat(code | bipolar, (bipolar & ~code).replicate(lane - 1))
                        else:
                            ext = Cat(code, (is_signed & code[-1]).replicate(lane - store))
                        lanes.append(Mux(needed[k], ext, 0))
                    with m.Case(ceil_log2(store) | ceil_log2(lane) << 2):
                        m.d.comb += widened.eq(Cat(*lanes))
            with m.Default():                   # L < S or code 3: refused at start
                m.d.comb += widened.eq(0)

        # Logarithmic shifter by dest * L bits, cut to W bits at every level.
        amount = Signal(range(4 * W + 1))
        m.d.comb += amount.eq(dest << lg_lane)
        value = widened
        for level in range(bits_for(W)):
            step = 1 << level
            shifted = Signal(W, name=f"shift{step}")
            m.d.comb += shifted.eq(Mux(amount[level], value << step, value))
            value = shifted
        placed = Signal(W)
        m.d.comb += placed.eq(Mux(amount > W, 0, value))
        return placed

    # -- the whole builder ---------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        W, AW, A = self._width, self._word_width, self._addr_bits
        ly = self.layer
        dim_bits = bits_for(self._max_dim)
        ker_bits = bits_for(self._max_kernel)
        lane_bits = bits_for(W)

        lg_store = ly.in_lane.as_value()
        lg_lane = ly.lane.as_value()
        bipolar = Signal()
        is_signed = Signal()
        multi = Signal()                      # spp > 1: one position per chunk, sliced
        nl = Signal(lane_bits)                # lanes of a chunk, W / L
        m.d.comb += [
            bipolar.eq(ly.in_encoding == LaneEncoding.BIPOLAR),
            is_signed.eq(ly.in_encoding == LaneEncoding.SIGNED),
            multi.eq(ly.slices_per_position > 1),
            nl.eq(Const(W, lane_bits) >> lg_lane),
        ]

        state = Signal(_State)
        stall = Signal()
        issue = Signal()
        m.d.comb += issue.eq((state == _State.RUN) & ~stall)

        # -- descriptor check and per-layer constants ---------------------------
        bad = Signal()
        m.d.comb += bad.eq(
            (lg_store == 3) | (lg_lane == 3) | (lg_lane < lg_store) |
            (ly.in_encoding.as_value() == 3) |
            (bipolar & (lg_store != 0)) | (is_signed & (lg_store == 0)) |
            (ly.cin == 0) | (ly.in_pixel_words == 0) | (ly.kh == 0) | (ly.kw == 0) |
            (ly.stride_h == 0) | (ly.stride_w == 0) | (ly.out_h == 0) | (ly.out_w == 0) |
            (ly.slices_per_position == 0) | (ly.chunks == 0) | (ly.passes == 0))

        row_step = Signal(A)          # in_w * pixel_words: one input row
        x_step = Signal(A)            # stride_w * pixel_words: next output column
        y_step = Signal(A)            # stride_h * row_step: next output row
        pad_x = Signal(A)             # pad_w * pixel_words
        origin0 = Signal(A)           # (modular) address of input pixel (-pad_h, -pad_w)
        kk = Signal(bits_for(self._max_kernel ** 2))
        lanes_all = Signal(bits_for(self._max_kernel ** 2 * self._max_dim))   # K * Cin
        lanes_full = Signal(lane_bits + dim_bits)                              # ppc * Cin

        with m.If(state == _State.IDLE):
            with m.If(self.start & ~self.busy):
                m.d.sync += self.error.eq(bad)
                with m.If(~bad):
                    m.d.sync += state.eq(_State.SETUP1)
        with m.Elif(state == _State.SETUP1):
            m.d.sync += [
                row_step.eq(ly.in_w * ly.in_pixel_words),
                x_step.eq(ly.stride_w * ly.in_pixel_words),
                pad_x.eq(ly.pad_w * ly.in_pixel_words),
                kk.eq(ly.kh * ly.kw),
                lanes_full.eq(ly.positions_per_chunk * ly.cin),
                state.eq(_State.SETUP2),
            ]
        with m.Elif(state == _State.SETUP2):
            m.d.sync += [
                y_step.eq(ly.stride_h * row_step),
                origin0.eq(ly.in_base - ly.pad_h * row_step - pad_x),
                lanes_all.eq(kk * ly.cin),
                state.eq(_State.FIRST),
            ]
        with m.Elif(state == _State.FIRST):
            m.d.sync += state.eq(_State.RUN)

        # -- walk state --------------------------------------------------------
        coord = signed(dim_bits + ker_bits + 2)
        n_pass = Signal.like(ly.passes)
        oy = Signal.like(ly.out_h)
        ox = Signal.like(ly.out_w)
        iy0 = Signal(coord)           # input row of kernel row 0
        ix0 = Signal(coord)           # input column of kernel column 0
        origin = Signal(A)            # (modular) address of input pixel (iy0, ix0)
        origin_row = Signal(A)        # origin at ox = 0
        ky_lo, ky_hi, kx_lo, kx_hi = (Signal(ker_bits, name=n)
                                      for n in ("ky_lo", "ky_hi", "kx_lo", "kx_hi"))
        ky = Signal(ker_bits)         # current valid position
        kx = Signal(ker_bits)
        cur_valid = Signal()          # a valid position is left in this output pixel
        chunk_no = Signal.like(ly.chunks)
        p_bits = bits_for(self._max_kernel ** 2 + W) + 1
        cstart = Signal(p_bits)       # first position of the current chunk
        slice_no = Signal.like(ly.slices_per_position)
        slice_word = Signal(A + 1)    # word, bit and channels left of the current slice
        slice_bit = Signal(range(AW))
        slice_rem = Signal(dim_bits)
        word_first = Signal()         # next word is a position's first
        word_idx = Signal(A + 1)
        word_rem = Signal(dim_bits)
        lanes_left = Signal.like(lanes_all)
        fresh = Signal()              # nothing issued yet for the current chunk

        # -- the next output pixel (or the first one) --------------------------
        last_ox = ox == ly.out_w - 1
        last_oy = oy == ly.out_h - 1
        last_pass = n_pass == ly.passes - 1
        first_load = state == _State.FIRST
        nxt_iy0 = Signal(coord)
        nxt_ix0 = Signal(coord)
        nxt_origin = Signal(A)
        nxt_origin_row = Signal(A)
        with m.If(first_load | last_ox & last_oy):
            m.d.comb += [nxt_iy0.eq(-ly.pad_h), nxt_ix0.eq(-ly.pad_w),
                         nxt_origin.eq(origin0), nxt_origin_row.eq(origin0)]
        with m.Elif(last_ox):
            m.d.comb += [nxt_iy0.eq(iy0 + ly.stride_h), nxt_ix0.eq(-ly.pad_w),
                         nxt_origin.eq(origin_row + y_step),
                         nxt_origin_row.eq(origin_row + y_step)]
        with m.Else():
            m.d.comb += [nxt_iy0.eq(iy0), nxt_ix0.eq(ix0 + ly.stride_w),
                         nxt_origin.eq(origin + x_step), nxt_origin_row.eq(origin_row)]

        def window(start, size, kernel, name):
            """Valid kernel offsets ``lo <= k < hi``: ``0 <= start + k < size``."""
            lo, hi = Signal(ker_bits, name=f"{name}_lo"), Signal(ker_bits, name=f"{name}_hi")
            room = Signal(signed(coord.width + 1), name=f"{name}_room")
            m.d.comb += room.eq(size - start)
            m.d.comb += [
                lo.eq(Mux(start >= 0, 0, Mux(-start < kernel, -start, kernel))),
                hi.eq(Mux(room <= 0, 0, Mux(room < kernel, room, kernel))),
            ]
            return lo, hi

        n_ky_lo, n_ky_hi = window(nxt_iy0, ly.in_h, ly.kh, "nxt_ky")
        n_kx_lo, n_kx_hi = window(nxt_ix0, ly.in_w, ly.kw, "nxt_kx")

        def load_pixel():
            m.d.sync += [
                iy0.eq(nxt_iy0), ix0.eq(nxt_ix0),
                origin.eq(nxt_origin), origin_row.eq(nxt_origin_row),
                ky_lo.eq(n_ky_lo), ky_hi.eq(n_ky_hi), kx_lo.eq(n_kx_lo), kx_hi.eq(n_kx_hi),
                ky.eq(n_ky_lo), kx.eq(n_kx_lo),
                cur_valid.eq((n_ky_lo < n_ky_hi) & (n_kx_lo < n_kx_hi)),
                chunk_no.eq(0), cstart.eq(0),
                slice_no.eq(0), slice_word.eq(0), slice_bit.eq(0), slice_rem.eq(ly.cin),
                word_first.eq(1), fresh.eq(1),
                lanes_left.eq(lanes_all),
            ]

        with m.If(first_load):
            m.d.sync += [n_pass.eq(0), oy.eq(0), ox.eq(0)]
            load_pixel()

        # -- issue stage -------------------------------------------------------
        p = Signal(p_bits)
        m.d.comb += p.eq(ky * ly.kw + kx)
        group = Mux(multi, 1, ly.positions_per_chunk)
        cend = Signal(p_bits)
        m.d.comb += cend.eq(cstart + group)
        in_chunk = Signal()
        m.d.comb += in_chunk.eq(cur_valid & (p < cend))

        # The valid position after (ky, kx), in (ky, kx) order.
        row_more = Signal()
        nxt_ky, nxt_kx = Signal(ker_bits), Signal(ker_bits)
        nxt_valid = Signal()
        nxt_p = Signal(p_bits)
        m.d.comb += [
            row_more.eq(kx + 1 < kx_hi),
            nxt_ky.eq(Mux(row_more, ky, ky + 1)),
            nxt_kx.eq(Mux(row_more, kx + 1, kx_lo)),
            nxt_valid.eq(row_more | (ky + 1 < ky_hi)),
            nxt_p.eq(Mux(row_more, p + 1, p + ly.kw - kx + kx_lo)),
        ]

        # This word.
        n_ch = Signal(dim_bits)       # channels of the position in this chunk
        m.d.comb += n_ch.eq(Mux(multi, Mux(slice_rem < nl, slice_rem, nl), ly.cin))
        widx = Signal(A + 1)
        wbit = Signal(range(AW))
        wrem = Signal(dim_bits)
        m.d.comb += [
            widx.eq(Mux(word_first, slice_word, word_idx)),
            wbit.eq(Mux(word_first, slice_bit, 0)),
            wrem.eq(Mux(word_first, n_ch, word_rem)),
        ]
        avail = Signal(range(AW + 1))          # elements from wbit to the word's end
        m.d.comb += avail.eq((AW - wbit) >> lg_store)
        last_word = Signal()
        m.d.comb += last_word.eq(wrem <= avail)
        count = Signal(range(AW + 1))
        m.d.comb += count.eq(Mux(last_word, wrem, avail))
        seg = Signal(lane_bits + 1)            # lane of the position's channel 0
        m.d.comb += seg.eq(Mux(multi, 0, (p - cstart)[:lane_bits] * ly.cin))
        dest = Signal(lane_bits + 1)
        m.d.comb += dest.eq(seg + n_ch - wrem)

        m.d.comb += [
            self.rd_addr.eq(origin + ky * row_step + kx * ly.in_pixel_words + widx),
            self.rd_en.eq(issue & in_chunk),
        ]

        close = Signal()                       # this cycle ends the chunk
        m.d.comb += close.eq(~in_chunk | last_word & (multi | ~nxt_valid | (nxt_p >= cend)))
        slice_last = slice_no == ly.slices_per_position - 1
        chunk_last = chunk_no == ly.chunks - 1
        chunk_lanes = Signal(lane_bits)
        m.d.comb += chunk_lanes.eq(Mux(multi, n_ch,
                                       Mux(lanes_left < lanes_full, lanes_left, lanes_full)))

        # Slice advance: NL * S = W >> (log2 L - log2 S) bits further.
        slice_carry = Signal(range(2 * AW))
        slice_words = Signal(range(W // AW + 2))
        with m.Switch(lg_lane - lg_store):
            for d in range(3):
                with m.Case(d):
                    m.d.comb += [slice_carry.eq(slice_bit + (W >> d) % AW),
                                 slice_words.eq((W >> d) // AW)]
            with m.Default():                   # L < S: refused at start
                m.d.comb += [slice_carry.eq(slice_bit), slice_words.eq(0)]

        with m.If(issue):
            m.d.sync += fresh.eq(close)
            with m.If(in_chunk):
                with m.If(last_word):
                    m.d.sync += word_first.eq(1)
                    with m.If(~multi | slice_last):
                        m.d.sync += [ky.eq(nxt_ky), kx.eq(nxt_kx), cur_valid.eq(nxt_valid)]
                with m.Else():
                    m.d.sync += [word_first.eq(0), word_idx.eq(widx + 1),
                                 word_rem.eq(wrem - count)]
            with m.If(close):
                m.d.sync += chunk_no.eq(chunk_no + 1)
                with m.If(multi):
                    with m.If(slice_last):
                        m.d.sync += [slice_no.eq(0), slice_word.eq(0), slice_bit.eq(0),
                                     slice_rem.eq(ly.cin), cstart.eq(cstart + 1)]
                    with m.Else():
                        m.d.sync += [
                            slice_no.eq(slice_no + 1),
                            slice_bit.eq(Mux(slice_carry >= AW, slice_carry - AW, slice_carry)),
                            slice_word.eq(slice_word + slice_words + (slice_carry >= AW)),
                            slice_rem.eq(slice_rem - nl),
                        ]
                with m.Else():
                    m.d.sync += [cstart.eq(cstart + ly.positions_per_chunk),
                                 lanes_left.eq(lanes_left - chunk_lanes)]
                with m.If(chunk_last):
                    m.d.sync += [
                        ox.eq(Mux(last_ox, 0, ox + 1)),
                        oy.eq(Mux(last_ox, Mux(last_oy, 0, oy + 1), oy)),
                        n_pass.eq(n_pass + (last_ox & last_oy)),
                    ]
                    load_pixel()
                    with m.If(last_ox & last_oy & last_pass):
                        m.d.sync += state.eq(_State.IDLE)

        # -- place stage -------------------------------------------------------
        s1_valid = Signal()
        s1_read = Signal()
        s1_bit = Signal.like(wbit)
        s1_count = Signal.like(count)
        s1_dest = Signal.like(dest)
        s1_clear = Signal()
        s1_close = Signal()
        s1_meta = Signal(PatchChunk(W))        # everything but the features

        m.d.comb += stall.eq(s1_valid & s1_close & self.chunk.valid & ~self.chunk.ready)
        with m.If(~stall):
            m.d.sync += s1_valid.eq(issue)
        with m.If(issue):
            m.d.sync += [
                s1_read.eq(in_chunk),
                s1_bit.eq(wbit),
                s1_count.eq(Mux(in_chunk, count, 0)),
                s1_dest.eq(dest),
                s1_clear.eq(fresh),
                s1_close.eq(close),
                s1_meta.lanes.eq(chunk_lanes),
                s1_meta.first.eq(chunk_no == 0),
                s1_meta.last.eq(chunk_last),
                s1_meta.pixel_last.eq(last_ox & last_oy),
                s1_meta.pass_last.eq(last_pass),
            ]

        placed = self._place(m, Mux(s1_read, self.rd_data, 0), s1_bit, s1_count, s1_dest,
                             lg_lane, lg_store, bipolar, is_signed)
        staging = Signal(W)
        built = Signal(W)
        m.d.comb += built.eq(Mux(s1_clear, 0, staging) | placed)

        with m.If(self.chunk.ready):
            m.d.sync += self.chunk.valid.eq(0)
        with m.If(s1_valid & ~stall):
            with m.If(s1_close):
                m.d.sync += [
                    self.chunk.valid.eq(1),
                    self.chunk.payload.eq(s1_meta),
                    self.chunk.payload.features.eq(built),
                ]
            with m.Else():
                m.d.sync += staging.eq(built)

        m.d.comb += self.busy.eq((state != _State.IDLE) | s1_valid | self.chunk.valid)
        return m
