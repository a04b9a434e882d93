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
number of needed elements and their destination lane. The word arrives in
a *capture* register (the cycle after the read data; the block RAM's
clock-to-out leaves no time for logic), then three register stages place it:
*select* shifts the word to its first needed element and masks the unneeded ones, *widen* widens the elements
to ``L`` bits and shifts them by the low bits of the lane offset, and *place*
shifts them by the high bits (together a logarithmic shifter of ``W`` bits)
and ORs them into a ``W``-bit staging register; the last word of a chunk
moves the chunk into the ``chunk`` stream's output register, and the staging
register starts on the next chunk while that one waits to be taken.

The issue stage reads only the words of a pixel that hold needed channels (a
slice's words when ``spp > 1``), never reads a padded position and skips any
number of padded positions without spending a cycle on them: the valid kernel
window of an output pixel is the rectangle ``ky_lo <= ky < ky_hi``,
``kx_lo <= kx < kx_hi``, and the walk steps from one valid position to the next.

The issue stage has no multiplier: the position index ``p = ky*kw + kx``, the
pixel's word address and the lane offset ``(p - cstart) * Cin`` are registers
stepped with ``(ky, kx)``, the kernel windows and products of the next output
row and column are computed a row (column) ahead, and the per-layer products
come from the setup cycles before the first read.

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
is full *and* the place stage holds the last word of the next chunk.
:func:`chunk_words` computes ``words(c)`` for a layer.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from ..macro.dimc_tile import LaneEncoding, LaneWidth
from ..params import positive_int

__all__ = ["PatchLayer", "PatchChunk", "ChunkHold", "PatchBuilder", "chunk_words",
           "START_LATENCY"]


#: With ``start`` high in cycle 0 and ``chunk.ready`` held high, chunk ``k`` of
#: the layer is valid (and taken) in cycle ``START_LATENCY + sum(cycles(0..k))``;
#: the first activation read is issued in cycle 5.
START_LATENCY = 9


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


#: ``hold`` of a :class:`PatchBuilder` with ``registered_hold``: the consumer will
#: not take a pixel's first chunk (``first``) / any other chunk (``other``) this cycle
ChunkHold = data.StructLayout({"first": 1, "other": 1})


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
    SETUP3 = 3
    FIRST = 4
    RUN = 5


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
        next cycle. The builder keeps that word itself, so ``rd_data`` may
        change in any other cycle: the memory can read every cycle (``rd_en``
        need not reach its enable, which is on the builder's longest path).
    rd_data : ``In(word_width)``
    chunk : ``Out(stream.Signature(PatchChunk(width)))``
        The chunks, in order; ``payload`` holds still while ``valid`` waits.
    hold : ``In(ChunkHold)``, with ``registered_hold`` only
        Whether ``chunk.ready`` is low this cycle for a pixel's first chunk
        (``hold.first``) and for any other chunk (``hold.other``). The consumer
        drives it from registers it sets a cycle ahead; the builder then stalls
        on it instead of on ``chunk.ready``, so no path runs from the consumer's
        logic into the builder's stall. It must equal ``~chunk.ready`` for the
        presented chunk whenever ``chunk.valid`` is high.

    Other parameters
    ----------------
    registered_hold : bool
        Add the ``hold`` member (default: the builder stalls on ``chunk.ready``).
    """

    def __init__(self, *, width, word_width, depth, max_dim=4096, max_kernel=16,
                 max_passes=256, registered_hold=False):
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
        if not isinstance(registered_hold, bool):
            raise TypeError(f"registered_hold must be a bool, not {registered_hold!r}")
        self._registered_hold = registered_hold
        members = {
            "layer": In(PatchLayer(self._addr_bits, width, max_dim, max_kernel, max_passes)),
            "start": In(1),
            "busy": Out(1),
            "error": Out(1),
            "rd_addr": Out(self._addr_bits),
            "rd_en": Out(1),
            "rd_data": In(word_width),
            "chunk": Out(stream.Signature(PatchChunk(width))),
        }
        if registered_hold:
            members["hold"] = In(ChunkHold)
        super().__init__(members)

    width = property(lambda self: self._width)
    word_width = property(lambda self: self._word_width)
    depth = property(lambda self: self._depth)
    addr_width = property(lambda self: self._addr_bits)
    max_dim = property(lambda self: self._max_dim)
    max_kernel = property(lambda self: self._max_kernel)
    max_passes = property(lambda self: self._max_passes)
    start_latency = property(lambda self: START_LATENCY)
    registered_hold = property(lambda self: self._registered_hold)

    # -- place pipeline ------------------------------------------------------

    def _widen(self, m, raw, needed, lg_lane, lg_store, bipolar, is_signed):
        """``W`` bits holding the elements ``k`` of ``raw`` with ``needed[k]``,
        widened to ``L`` bits, element 0 at lane 0; zero elsewhere."""
        W, AW = self._width, self._word_width
        widened = Signal(W)
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
        return widened

    def _shift(self, m, value, amount, levels, name):
        """``value << amount`` for the bits ``levels`` of ``amount``, cut to ``W``
        bits at every level (a slice of a logarithmic shifter)."""
        for level in levels:
            step = 1 << level
            shifted = Signal(self._width, name=f"{name}{step}")
            m.d.comb += shifted.eq(Mux(amount[level], value << step, value))
            value = shifted
        return value

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
        nl = Signal(lane_bits)                # lanes of a chunk, W / L
        m.d.comb += [
            bipolar.eq(ly.in_encoding == LaneEncoding.BIPOLAR),
            is_signed.eq(ly.in_encoding == LaneEncoding.SIGNED),
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

        # Per-layer constants, computed in SETUP1 and SETUP3 (the only
        # multipliers of the builder). Addresses are modulo 2**A, positions
        # modulo 2**p_bits and lane offsets modulo 2**seg_bits like the
        # registers they feed.
        coord = signed(dim_bits + ker_bits + 3)
        p_bits = bits_for(self._max_kernel ** 2 + W) + 1
        seg_bits = lane_bits + 1
        multi = Signal()              # spp > 1: one position per chunk, sliced
        full = Signal(range(AW + 1))  # elements of a whole word, AW / S
        nch0 = Signal(dim_bits)       # channels of a position's first slice
        row_step = Signal(A)          # in_w * pixel_words: one input row
        x_step = Signal(A)            # stride_w * pixel_words: next output column
        y_step = Signal(A)            # stride_h * row_step: next output row
        neg_pad_x = Signal(A)         # -pad_w * pixel_words
        base_row = Signal(A)          # in_base + row_step
        kk = Signal(bits_for(self._max_kernel ** 2))
        lanes_all = Signal(bits_for(self._max_kernel ** 2 * self._max_dim))   # K * Cin
        lanes_full = Signal(lane_bits + dim_bits)                              # ppc * Cin
        pad_h_kw = Signal(p_bits)     # pad_h * kw
        sh_kw = Signal(p_bits)        # stride_h * kw
        kw_cin = Signal(seg_bits)     # kw * Cin
        pad_w_cin = Signal(seg_bits)  # pad_w * Cin
        sw_cin = Signal(seg_bits)     # stride_w * Cin
        sh_kwcin = Signal(seg_bits)   # stride_h * kw * Cin
        cin_lf = Signal(seg_bits)     # Cin - ppc * Cin
        kwcin_lf = Signal(seg_bits)   # kw * Cin - ppc * Cin
        # SETUP2 copies of the SETUP3 products' operands
        f_stride_h, f_cin = Signal.like(ly.stride_h), Signal.like(ly.cin)
        f_row_step, f_kk, f_kw_cin = Signal.like(row_step), Signal.like(kk), Signal.like(kw_cin)
        # "count == 1" flags and "count - 2" values: the last-of flags below are
        # kept in registers (the next one is last if this one is number count - 2).
        out_w_1, out_h_1, passes_1, spp_1, chunks_1 = (
            Signal(name=f"{n}_1") for n in ("out_w", "out_h", "passes", "spp", "chunks"))
        out_w_2 = Signal.like(ly.out_w)
        out_h_2 = Signal.like(ly.out_h)
        passes_2 = Signal.like(ly.passes)
        spp_2 = Signal.like(ly.slices_per_position)
        chunks_2 = Signal.like(ly.chunks)

        # -- kernel windows of output rows and columns ---------------------------
        # Output row oy reads input rows iy0 .. iy0 + kh - 1, iy0 = oy*stride_h -
        # pad_h; the valid kernel rows are ky_lo = clamp(-iy0) <= ky < ky_hi =
        # clamp(H - iy0), clamp(v) = min(max(v, 0), kh). If that window is not
        # empty, ky_lo = max(0, -iy0): its first valid position is input row
        # max(iy0, 0). Likewise for output column ox. A *raw* row holds -iy0,
        # H - iy0 and the (modular) products of iy0 the walk needs; its *view*
        # holds the window and those products clamped at the first valid row,
        # for ky_lo and for ky_lo + 1. The views of the next output row and
        # column are kept in registers, computed a row (column) ahead from raw
        # rows (columns) two ahead, so that loading an output pixel is one adder.
        y_raw = data.StructLayout({
            "neg": coord, "room": coord,
            "addr": unsigned(A), "addr1": unsigned(A),      # in_base + iy0*row_step, + row_step
            "kw": unsigned(p_bits), "kw1": unsigned(p_bits),  # -iy0*kw, + kw
            "kc": unsigned(seg_bits), "kc1": unsigned(seg_bits),  # -iy0*kw*Cin, + kw*Cin
        })
        y_view = data.StructLayout({
            "lo": unsigned(ker_bits), "hi": unsigned(ker_bits), "ok": unsigned(1),
            "more": unsigned(1),                            # lo + 1 < hi
            "addr": unsigned(A), "addr1": unsigned(A),      # pixel (iy0 + ky_lo (+ 1), 0)
            "kw": unsigned(p_bits), "kw1": unsigned(p_bits),  # ky_lo (+ 1) * kw
            "kc": unsigned(seg_bits), "kc1": unsigned(seg_bits),  # ky_lo (+ 1) * kw * Cin
        })
        x_raw = data.StructLayout({
            "neg": coord, "room": coord,
            "addr": unsigned(A),                            # ix0 * pixel_words
            "kc": unsigned(seg_bits),                       # -ix0 * Cin
        })
        x_view = data.StructLayout({
            "lo": unsigned(ker_bits), "lo1": unsigned(ker_bits + 1), "hi": unsigned(ker_bits),
            "ok": unsigned(1), "more": unsigned(1),        # lo + 1 < hi
            "addr": unsigned(A),                            # (kx_lo + ix0) * pixel_words
            "kc": unsigned(seg_bits),                       # kx_lo * Cin
        })

        def clamp(v, k):
            return Mux(v <= 0, 0, Mux(v < k, v, k))

        def view_y(raw, name, base_row=base_row):
            """The view of a raw row (combinational)."""
            v = Signal(y_view, name=name)
            inside = raw.neg <= 0                 # iy0 >= 0
            m.d.comb += [
                v.lo.eq(clamp(raw.neg, ly.kh)),
                v.hi.eq(clamp(raw.room, ly.kh)),
                v.ok.eq((raw.neg < ly.kh) & (raw.room > 0) & (ly.in_h != 0)),
                v.more.eq(v.lo + 1 < v.hi),
                v.addr.eq(Mux(inside, raw.addr, ly.in_base)),
                v.addr1.eq(Mux(inside, raw.addr1, base_row)),
                v.kw.eq(Mux(inside, 0, raw.kw)),
                v.kw1.eq(Mux(inside, ly.kw, raw.kw1)),
                v.kc.eq(Mux(inside, 0, raw.kc)),
                v.kc1.eq(Mux(inside, kw_cin, raw.kc1)),
            ]
            return v

        def view_x(raw, name):
            v = Signal(x_view, name=name)
            inside = raw.neg <= 0                 # ix0 >= 0
            m.d.comb += [
                v.lo.eq(clamp(raw.neg, ly.kw)),
                v.lo1.eq(Mux(raw.neg <= 0, 1, Mux(raw.neg < ly.kw, raw.neg + 1, ly.kw + 1))),
                v.hi.eq(clamp(raw.room, ly.kw)),
                v.ok.eq((raw.neg < ly.kw) & (raw.room > 0) & (ly.in_w != 0)),
                v.more.eq(v.lo1 < v.hi),
                v.addr.eq(Mux(inside, raw.addr, 0)),
                v.kc.eq(Mux(inside, 0, raw.kc)),
            ]
            return v

        def step_y(raw, name):
            """The raw row stride_h further (combinational)."""
            r = Signal(y_raw, name=name)
            m.d.comb += [
                r.neg.eq(raw.neg - ly.stride_h), r.room.eq(raw.room - ly.stride_h),
                r.addr.eq(raw.addr + y_step), r.addr1.eq(raw.addr1 + y_step),
                r.kw.eq(raw.kw - sh_kw), r.kw1.eq(raw.kw1 - sh_kw),
                r.kc.eq(raw.kc - sh_kwcin), r.kc1.eq(raw.kc1 - sh_kwcin),
            ]
            return r

        def step_x(raw, name):
            r = Signal(x_raw, name=name)
            m.d.comb += [
                r.neg.eq(raw.neg - ly.stride_w), r.room.eq(raw.room - ly.stride_w),
                r.addr.eq(raw.addr + x_step), r.kc.eq(raw.kc - sw_cin),
            ]
            return r

        # Constant raw row and column 1 (set in FIRST) and the views of row and
        # column 0 (set in SETUP3; the first valid row and column of pixel 0 are
        # input row and column 0).
        y_raw1, x_raw1 = Signal(y_raw, name="y_raw1"), Signal(x_raw, name="x_raw1")
        y_view0, x_view0 = Signal(y_view, name="y_view0"), Signal(x_view, name="x_view0")
        y_raw0_c = Signal(y_raw, name="y_raw0_c")
        x_raw0_c = Signal(x_raw, name="x_raw0_c")
        m.d.comb += [
            y_raw0_c.neg.eq(ly.pad_h), y_raw0_c.room.eq(ly.in_h + ly.pad_h),
            y_raw0_c.addr.eq(ly.in_base), y_raw0_c.addr1.eq(ly.in_base + row_step),
            y_raw0_c.kw.eq(pad_h_kw), y_raw0_c.kw1.eq(pad_h_kw + ly.kw),
            y_raw0_c.kc.eq(ly.pad_h * kw_cin), y_raw0_c.kc1.eq((ly.pad_h + 1) * kw_cin),
            x_raw0_c.neg.eq(ly.pad_w), x_raw0_c.room.eq(ly.in_w + ly.pad_w),
            x_raw0_c.addr.eq(neg_pad_x), x_raw0_c.kc.eq(pad_w_cin),
        ]
        y_view0_c = view_y(y_raw0_c, "y_view0_c", base_row=y_raw0_c.addr1)
        x_view0_c = view_x(x_raw0_c, "x_view0_c")

        def y_raw_const(r, k):
            # its two products are free-running registers, written outside the
            # state machine: row_step and kw_cin are set in SETUP1, so they hold
            # the products from FIRST on, and no state decode sits in front of
            # their multipliers (yosys would share one multiplier between states)
            # (iy and -iy are registers too: the layer fields are held from the start,
            # and the subtraction in front of the multipliers made a 19.5 ns path
            # through a DSP on the ECP5 self-test)
            iy = Signal(signed(ker_bits + 3), name=f"y_raw{k}_iy")  # k*stride_h - pad_h
            neg_iy = Signal(signed(ker_bits + 4), name=f"y_raw{k}_neg_iy")
            rows = Signal(A, name=f"y_raw{k}_rows")                 # iy * row_step
            kc = Signal(seg_bits, name=f"y_raw{k}_kc")
            m.d.sync += [iy.eq(k * ly.stride_h - ly.pad_h), neg_iy.eq(ly.pad_h - k * ly.stride_h)]
            m.d.sync += [rows.eq(iy * row_step), kc.eq(neg_iy * kw_cin)]
            return [
                r.neg.eq(neg_iy), r.room.eq(ly.in_h - iy),
                r.addr.eq(ly.in_base + rows), r.addr1.eq(ly.in_base + row_step + rows),
                r.kw.eq(pad_h_kw - k * sh_kw), r.kw1.eq(pad_h_kw - k * sh_kw + ly.kw),
                r.kc.eq(kc), r.kc1.eq(kc + kw_cin),
            ]

        def x_raw_const(r, k):
            ix = Signal(signed(ker_bits + 3), name=f"x_raw{k}_ix")  # k*stride_w - pad_w
            m.d.comb += ix.eq(k * ly.stride_w - ly.pad_w)
            return [
                r.neg.eq(-ix), r.room.eq(ly.in_w - ix),
                r.addr.eq(neg_pad_x + k * x_step), r.kc.eq(pad_w_cin - k * sw_cin),
            ]

        raw1_const = [*y_raw_const(y_raw1, 1), *x_raw_const(x_raw1, 1)]

        with m.If(state == _State.IDLE):
            with m.If(self.start & ~self.busy):
                m.d.sync += self.error.eq(bad)
                with m.If(~bad):
                    m.d.sync += state.eq(_State.SETUP1)
        with m.Elif(state == _State.SETUP1):
            m.d.sync += [
                multi.eq(ly.slices_per_position > 1),
                full.eq(AW >> lg_store),
                nch0.eq(Mux((ly.slices_per_position > 1) & (nl < ly.cin), nl, ly.cin)),
                row_step.eq(ly.in_w * ly.in_pixel_words),
                x_step.eq(ly.stride_w * ly.in_pixel_words),
                neg_pad_x.eq(-(ly.pad_w * ly.in_pixel_words)),
                kk.eq(ly.kh * ly.kw),
                lanes_full.eq(ly.positions_per_chunk * ly.cin),
                pad_h_kw.eq(ly.pad_h * ly.kw),
                sh_kw.eq(ly.stride_h * ly.kw),
                kw_cin.eq(ly.kw * ly.cin),
                pad_w_cin.eq(ly.pad_w * ly.cin),
                sw_cin.eq(ly.stride_w * ly.cin),
                out_w_1.eq(ly.out_w == 1), out_w_2.eq(ly.out_w - 2),
                out_h_1.eq(ly.out_h == 1), out_h_2.eq(ly.out_h - 2),
                passes_1.eq(ly.passes == 1), passes_2.eq(ly.passes - 2),
                spp_1.eq(ly.slices_per_position == 1), spp_2.eq(ly.slices_per_position - 2),
                chunks_1.eq(ly.chunks == 1), chunks_2.eq(ly.chunks - 2),
                state.eq(_State.SETUP2),
            ]
        with m.Elif(state == _State.SETUP2):
            # the operands of the second products, copied into registers that feed
            # only their multipliers (so that they sit beside the DSPs: a SETUP1
            # product into a DSP and out again in one cycle was 20.3 ns on the
            # `fpga` self-test)
            m.d.sync += [
                f_stride_h.eq(ly.stride_h), f_row_step.eq(row_step), f_kk.eq(kk),
                f_cin.eq(ly.cin), f_kw_cin.eq(kw_cin),
                state.eq(_State.SETUP3),
            ]
        with m.Elif(state == _State.SETUP3):
            m.d.sync += [
                y_step.eq(f_stride_h * f_row_step),
                base_row.eq(ly.in_base + row_step),
                lanes_all.eq(f_kk * f_cin),
                sh_kwcin.eq(f_stride_h * f_kw_cin),
                cin_lf.eq(ly.cin - lanes_full),
                kwcin_lf.eq(kw_cin - lanes_full),
                y_view0.eq(y_view0_c), x_view0.eq(x_view0_c),
                state.eq(_State.FIRST),
            ]
        with m.Elif(state == _State.FIRST):
            # raw row and column 1 are first read in the cycle after the first load
            m.d.sync += [*raw1_const, state.eq(_State.RUN)]

        # -- walk state --------------------------------------------------------
        # The current position (ky, kx) and its products are kept in registers
        # updated incrementally with ky and kx (no multiplier in the walk):
        # p = ky*kw + kx, addr = the address of input pixel (iy0+ky, ix0+kx),
        # seg_r = (p - cstart) * Cin with cstart = cend - group the chunk's first
        # position; pn = p + 1, and prow, nrow_addr, segrow_r the same for the
        # first valid position of kernel row ky + 1.
        n_pass = Signal.like(ly.passes)
        oy = Signal.like(ly.out_h)
        ox = Signal.like(ly.out_w)
        last_ox = Signal()            # ox == out_w - 1
        last_oy = Signal()            # oy == out_h - 1
        last_pass = Signal()          # n_pass == passes - 1
        y_cur = Signal(y_view)        # view of output row oy
        y_nxt = Signal(y_view)        # view of output row oy + 1
        y_ahead = Signal(y_raw)       # raw output row oy + 2
        x_nxt = Signal(x_view)        # view of output column ox + 1
        x_ahead = Signal(x_raw)       # raw output column ox + 2
        kx_lo, kx_hi = Signal(ker_bits), Signal(ker_bits)
        ky = Signal(ker_bits)         # current valid position
        kx = Signal(ker_bits)
        row_more = Signal()           # kx + 1 < kx_hi
        row_more0 = Signal()          # kx_lo + 1 < kx_hi
        rows_more = Signal()          # ky + 1 < ky_hi
        cur_valid = Signal()          # a valid position is left in this output pixel
        p = Signal(p_bits)            # ky * kw + kx
        pn = Signal(p_bits)           # p + 1
        prow = Signal(p_bits)         # (ky + 1) * kw + kx_lo
        addr = Signal(A)              # word address of the current position's pixel
        nrow_addr = Signal(A)         # the same for position (ky + 1, kx_lo)
        seg_r = Signal(seg_bits)      # (p - cstart) * Cin
        segrow_r = Signal(seg_bits)   # (prow - cstart) * Cin
        chunk_no = Signal.like(ly.chunks)
        chunk_last = Signal()         # chunk_no == chunks - 1
        cend = Signal(p_bits)         # end of the current chunk: its first position + group
        slice_no = Signal.like(ly.slices_per_position)
        slice_last = Signal()         # slice_no == spp - 1
        slice_word = Signal(A + 1)    # word, bit and channels left of the current slice
        slice_bit = Signal(range(AW))
        slice_rem = Signal(dim_bits)
        n_ch = Signal(dim_bits)       # channels of the position in this chunk
        first_avail = Signal(range(AW + 1))   # elements from slice_bit to the word's end
        word_first = Signal()         # next word is a position's first
        word_idx = Signal(A + 1)
        word_rem = Signal(dim_bits)
        word_done = Signal(lane_bits + 1)     # n_ch - word_rem
        # The two comparisons behind ``last_word``, kept in registers next to the
        # registers they compare (written with them): computed in the issue cycle
        # they headed the builder's longest paths, which fan out from ``close``.
        # ``rem_fits`` is read only while ``word_first`` is 0, that is after a
        # word_rem write in the same pixel (every load sets ``word_first``).
        first_fits = Signal(init=1)   # n_ch <= first_avail
        rem_fits = Signal(init=1)     # word_rem <= full
        lanes_left = Signal.like(lanes_all)
        fresh = Signal()              # nothing issued yet for the current chunk

        group = Mux(multi, 1, ly.positions_per_chunk)

        # -- the next output pixel (or the first one) --------------------------
        first_load = state == _State.FIRST
        new_row0 = Signal()           # the next pixel is (0, 0)
        new_row = Signal()            # the next pixel starts an output row
        m.d.comb += [new_row0.eq(first_load | last_ox & last_oy),
                     new_row.eq(first_load | last_ox)]
        # The look-ahead registers (view of the next row and column, raw row and
        # column two ahead) are not written by the load itself: that would put
        # several hundred flip-flop enables behind the chunk-close decision, the
        # builder's longest path. A load only sets a *pending* flag; in the cycle
        # after it the registers step from their source (``*_raw1`` after a load
        # that starts the output row or pass, else the raw register itself),
        # and a load in that cycle takes the next view straight from the source.
        y_pend = Signal()             # step y_nxt / y_ahead from y_ahead
        y_pend0 = Signal()            # ... from y_raw1
        x_pend = Signal()
        x_pend0 = Signal()
        y_src = Signal(y_raw)
        x_src = Signal(x_raw)
        m.d.comb += [y_src.eq(Mux(y_pend0, y_raw1, y_ahead)),
                     x_src.eq(Mux(x_pend0, x_raw1, x_ahead))]
        y_stale, x_stale = y_pend | y_pend0, x_pend | x_pend0
        y_src_view = view_y(y_src, "y_src_view")
        x_src_view = view_x(x_src, "x_src_view")
        with m.If(y_stale):
            m.d.sync += [y_nxt.eq(y_src_view), y_ahead.eq(step_y(y_src, "y_src_step"))]
        with m.If(x_stale):
            m.d.sync += [x_nxt.eq(x_src_view), x_ahead.eq(step_x(x_src, "x_src_step"))]
        y_sel = Signal(y_view)
        x_sel = Signal(x_view)
        m.d.comb += [
            y_sel.eq(Mux(new_row0, y_view0,
                         Mux(last_ox, Mux(y_stale, y_src_view, y_nxt), y_cur))),
            x_sel.eq(Mux(new_row, x_view0, Mux(x_stale, x_src_view, x_nxt))),
        ]
        loading = Signal()            # load_pixel() this cycle
        m.d.sync += [y_pend0.eq(loading & new_row0), y_pend.eq(loading & new_row & ~new_row0),
                     x_pend0.eq(loading & new_row), x_pend.eq(loading & ~new_row)]

        # The chunk's bounds against the positions, (p < cend), (pn >= cend) and
        # (prow >= cend), are registers too, written with p, pn, prow and cend from
        # their next values (``*_nxt``, selected by the issue stage's moves below;
        # a load sets all four): compared in the issue cycle they headed its longest
        # paths.
        # The issue stage moves the positions one of three ways (not at all,
        # ``walk_row``: to pn, ``walk_down``: to prow) and cend one of two (by
        # ``group`` on ``cend_move``), so each comparison it can need is made from
        # registers alone and the issue decision only selects among the results:
        # the carry chains are off the path from that decision to the flags.
        p_lt = Signal()
        pn_ge = Signal(init=1)
        prow_ge = Signal(init=1)
        p_nxt, pn_nxt = Signal.like(p), Signal.like(pn)
        prow_nxt, cend_nxt = Signal.like(prow), Signal.like(cend)
        pn_inc, prow_inc = Signal.like(pn), Signal.like(prow)       # pn + 1, prow + 1
        prow_kw, cend_inc = Signal.like(prow), Signal.like(cend)    # prow + kw, cend + group
        walk_row, walk_down, cend_move = Signal(), Signal(), Signal()
        m.d.comb += [pn_inc.eq(pn + 1), prow_inc.eq(prow + 1), prow_kw.eq(prow + ly.kw),
                     cend_inc.eq(cend + group),
                     p_nxt.eq(Mux(walk_row, pn, Mux(walk_down, prow, p))),
                     pn_nxt.eq(Mux(walk_row, pn_inc, Mux(walk_down, prow_inc, pn))),
                     prow_nxt.eq(Mux(walk_down, prow_kw, prow)),
                     cend_nxt.eq(Mux(cend_move, cend_inc, cend))]

        def bounds(c, name):
            """(p < c, pn >= c, prow >= c) after each walk: the flags the issue
            stage selects from when cend becomes ``c``."""
            p_lt_c, pn_ge_c, prow_ge_c, pn1_ge_c, prow1_ge_c, prowkw_ge_c = (
                Signal(name=f"{name}_{n}") for n in
                ("p_lt", "pn_ge", "prow_ge", "pn_inc_ge", "prow_inc_ge", "prow_kw_ge"))
            m.d.comb += [p_lt_c.eq(p < c), pn_ge_c.eq(pn >= c), prow_ge_c.eq(prow >= c),
                         pn1_ge_c.eq(pn_inc >= c), prow1_ge_c.eq(prow_inc >= c),
                         prowkw_ge_c.eq(prow_kw >= c)]
            stay = (p_lt_c, pn_ge_c, prow_ge_c)
            row = (~pn_ge_c, pn1_ge_c, prow_ge_c)
            down = (~prow_ge_c, prow1_ge_c, prowkw_ge_c)
            return [Mux(walk_row, r, Mux(walk_down, d, s)) for s, r, d in zip(stay, row, down)]
        flags = [Mux(cend_move, moved, kept)
                 for kept, moved in zip(bounds(cend, "at_cend"), bounds(cend_inc, "at_cend_inc"))]
        m.d.sync += [p.eq(p_nxt), pn.eq(pn_nxt), prow.eq(prow_nxt), cend.eq(cend_nxt),
                     p_lt.eq(flags[0]), pn_ge.eq(flags[1]), prow_ge.eq(flags[2])]
        load_p, load_pn, load_prow = Signal.like(p), Signal.like(pn), Signal.like(prow)
        m.d.comb += [load_p.eq(y_sel.kw + x_sel.lo), load_pn.eq(y_sel.kw + x_sel.lo1),
                     load_prow.eq(y_sel.kw1 + x_sel.lo)]

        def load_pixel():
            m.d.sync += [
                y_cur.eq(y_sel),
                kx_lo.eq(x_sel.lo), kx_hi.eq(x_sel.hi),
                ky.eq(y_sel.lo), kx.eq(x_sel.lo),
                row_more.eq(x_sel.more), row_more0.eq(x_sel.more), rows_more.eq(y_sel.more),
                cur_valid.eq(y_sel.ok & x_sel.ok),
                p.eq(load_p), pn.eq(load_pn), prow.eq(load_prow),
                p_lt.eq(load_p < group), pn_ge.eq(load_pn >= group),
                prow_ge.eq(load_prow >= group),
                addr.eq(y_sel.addr + x_sel.addr), nrow_addr.eq(y_sel.addr1 + x_sel.addr),
                seg_r.eq(y_sel.kc + x_sel.kc), segrow_r.eq(y_sel.kc1 + x_sel.kc),
                chunk_no.eq(0), chunk_last.eq(chunks_1), cend.eq(group),
                slice_no.eq(0), slice_last.eq(spp_1),
                slice_word.eq(0), slice_bit.eq(0), slice_rem.eq(ly.cin),
                n_ch.eq(nch0), first_avail.eq(full), first_fits.eq(nch0 <= full),
                word_first.eq(1), fresh.eq(1),
                lanes_left.eq(lanes_all),
            ]
            m.d.comb += loading.eq(1)

        with m.If(first_load):
            m.d.sync += [n_pass.eq(0), oy.eq(0), ox.eq(0),
                         last_pass.eq(passes_1), last_oy.eq(out_h_1), last_ox.eq(out_w_1)]
            load_pixel()

        # -- issue stage -------------------------------------------------------
        in_chunk = Signal()
        m.d.comb += in_chunk.eq(cur_valid & p_lt)

        # The valid position after (ky, kx), in (ky, kx) order: p + 1 in this
        # kernel row, else prow.
        nxt_ky, nxt_kx = Signal(ker_bits), Signal(ker_bits)
        nxt_valid = Signal()
        nxt_out = Signal()                     # that position is beyond the chunk
        m.d.comb += [
            nxt_ky.eq(Mux(row_more, ky, ky + 1)),
            nxt_kx.eq(Mux(row_more, kx + 1, kx_lo)),
            nxt_valid.eq(row_more | rows_more),
            nxt_out.eq(Mux(row_more, pn_ge, prow_ge)),
        ]

        # This word.
        widx = Signal(A + 1)
        wbit = Signal(range(AW))
        wrem = Signal(dim_bits)
        avail = Signal(range(AW + 1))          # elements from wbit to the word's end
        m.d.comb += [
            widx.eq(Mux(word_first, slice_word, word_idx)),
            wbit.eq(Mux(word_first, slice_bit, 0)),
            wrem.eq(Mux(word_first, n_ch, word_rem)),
            avail.eq(Mux(word_first, first_avail, full)),
        ]
        last_word = Signal()
        m.d.comb += last_word.eq(Mux(word_first, first_fits, rem_fits))
        count = Signal(range(AW + 1))
        m.d.comb += count.eq(Mux(last_word, wrem, avail))
        done = Signal(lane_bits + 1)           # channels of the position already placed
        m.d.comb += done.eq(Mux(word_first, 0, word_done))
        seg = Signal(seg_bits)                 # lane of the position's channel 0
        m.d.comb += seg.eq(Mux(multi, 0, seg_r))
        dest = Signal(lane_bits + 1)
        m.d.comb += dest.eq(seg + done)

        m.d.comb += [
            self.rd_addr.eq(addr + widx),
            self.rd_en.eq(issue & in_chunk),
        ]

        close = Signal()                       # this cycle ends the chunk
        m.d.comb += close.eq(~in_chunk | last_word & (multi | ~nxt_valid | nxt_out))
        # min(lanes_left, lanes_full) and lanes_left minus it (at lane_bits) from
        # one comparison.
        lanes_short = Signal()
        m.d.comb += lanes_short.eq(lanes_left < lanes_full)
        chunk_lanes = Signal(lane_bits)
        m.d.comb += chunk_lanes.eq(Mux(multi, n_ch, Mux(lanes_short, lanes_left, lanes_full)))
        lanes_after = Signal.like(lanes_left)
        m.d.comb += lanes_after.eq(Mux(lanes_short,
                                       lanes_left & ~((1 << lane_bits) - 1),
                                       lanes_left - lanes_full[:lane_bits]))

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
        nxt_slice_bit = Signal.like(slice_bit)
        nxt_slice_rem = Signal.like(slice_rem)
        nxt_first_avail = Signal.like(first_avail)
        nxt_n_ch = Signal.like(n_ch)
        nxt_word_rem = Signal.like(word_rem)
        m.d.comb += [
            nxt_slice_bit.eq(Mux(slice_carry >= AW, slice_carry - AW, slice_carry)),
            nxt_slice_rem.eq(slice_rem - nl),
            nxt_first_avail.eq((AW - nxt_slice_bit) >> lg_store),
            nxt_n_ch.eq(Mux(nxt_slice_rem < nl, nxt_slice_rem, nl)),
            nxt_word_rem.eq(wrem - count),
        ]

        # The position registers after this cycle.
        # The lane offsets' next values, summed from registers alone (the chunk's end,
        # ``to_next_chunk``, only selects among them, as for the bounds above).
        seg_cin, seg_cin_lf, seg_lf = (Signal(seg_bits, name=n)
                                       for n in ("seg_cin", "seg_cin_lf", "seg_lf"))
        segrow_kwcin, segrow_kwcin_lf, segrow_lf = (
            Signal(seg_bits, name=n) for n in ("segrow_kwcin", "segrow_kwcin_lf", "segrow_lf"))
        m.d.comb += [seg_cin.eq(seg_r + ly.cin), seg_cin_lf.eq(seg_r + cin_lf),
                     seg_lf.eq(seg_r - lanes_full), segrow_kwcin.eq(segrow_r + kw_cin),
                     segrow_kwcin_lf.eq(segrow_r + kwcin_lf), segrow_lf.eq(segrow_r - lanes_full)]
        advance = Signal()                     # moves to the next valid position
        m.d.comb += advance.eq(in_chunk & last_word & (~multi | slice_last))
        to_next_chunk = Signal()               # spp == 1 and the chunk ends: cstart += ppc
        m.d.comb += to_next_chunk.eq(close & ~multi)
        m.d.comb += [walk_row.eq(issue & advance & row_more),
                     walk_down.eq(issue & advance & ~row_more),
                     cend_move.eq(issue & close & (~multi | slice_last))]
        with m.If(issue):
            m.d.sync += fresh.eq(close)
            with m.If(in_chunk):
                with m.If(last_word):
                    m.d.sync += word_first.eq(1)
                    with m.If(~multi | slice_last):
                        m.d.sync += [ky.eq(nxt_ky), kx.eq(nxt_kx), cur_valid.eq(nxt_valid)]
                        with m.If(row_more):
                            m.d.sync += row_more.eq(kx + 2 < kx_hi)
                        with m.Else():
                            m.d.sync += [row_more.eq(row_more0), rows_more.eq(ky + 2 < y_cur.hi)]
                with m.Else():
                    m.d.sync += [word_first.eq(0), word_idx.eq(widx + 1),
                                 word_rem.eq(nxt_word_rem), rem_fits.eq(nxt_word_rem <= full),
                                 word_done.eq(done + count)]
            with m.If(advance):
                with m.If(row_more):
                    m.d.sync += [addr.eq(addr + ly.in_pixel_words),
                                 seg_r.eq(Mux(to_next_chunk, seg_cin_lf, seg_cin)),
                                 segrow_r.eq(Mux(to_next_chunk, segrow_lf, segrow_r))]
                with m.Else():
                    m.d.sync += [addr.eq(nrow_addr), nrow_addr.eq(nrow_addr + row_step),
                                 seg_r.eq(Mux(to_next_chunk, segrow_lf, segrow_r)),
                                 segrow_r.eq(Mux(to_next_chunk, segrow_kwcin_lf, segrow_kwcin))]
            with m.Elif(to_next_chunk):
                m.d.sync += [seg_r.eq(seg_lf), segrow_r.eq(segrow_lf)]
            with m.If(close):
                m.d.sync += [chunk_no.eq(chunk_no + 1), chunk_last.eq(chunk_no == chunks_2)]
                with m.If(multi):
                    with m.If(slice_last):
                        m.d.sync += [slice_no.eq(0), slice_last.eq(spp_1),
                                     slice_word.eq(0), slice_bit.eq(0),
                                     slice_rem.eq(ly.cin), n_ch.eq(nch0), first_avail.eq(full),
                                     first_fits.eq(nch0 <= full)]
                    with m.Else():
                        m.d.sync += [
                            slice_no.eq(slice_no + 1),
                            slice_last.eq(slice_no == spp_2),
                            slice_bit.eq(nxt_slice_bit),
                            first_avail.eq(nxt_first_avail),
                            first_fits.eq(nxt_n_ch <= nxt_first_avail),
                            slice_word.eq(slice_word + slice_words + (slice_carry >= AW)),
                            slice_rem.eq(nxt_slice_rem),
                            n_ch.eq(nxt_n_ch),
                        ]
                with m.Else():
                    m.d.sync += lanes_left.eq(lanes_after)
                with m.If(chunk_last):
                    m.d.sync += [
                        ox.eq(Mux(last_ox, 0, ox + 1)),
                        last_ox.eq(Mux(last_ox, out_w_1, ox == out_w_2)),
                    ]
                    with m.If(last_ox):
                        m.d.sync += [
                            oy.eq(Mux(last_oy, 0, oy + 1)),
                            last_oy.eq(Mux(last_oy, out_h_1, oy == out_h_2)),
                        ]
                        with m.If(last_oy):
                            m.d.sync += [n_pass.eq(n_pass + 1), last_pass.eq(n_pass == passes_2)]
                    load_pixel()
                    with m.If(last_ox & last_oy & last_pass):
                        m.d.sync += state.eq(_State.IDLE)

        # -- place pipeline ----------------------------------------------------
        # Four stages after the issue stage, each a register stage that moves
        # while not ``stall``: *capture* (the read data), *select* shifts
        # the word to its first needed element and masks the unneeded ones;
        # *widen* widens the elements to L bits and shifts them by the low bits
        # of the lane offset; *place* shifts by the high bits and ORs the result
        # into the staging register. A stall holds every stage (no read is
        # issued while stalled; the word in flight waits in ``rd_word``).
        lo_levels = range(bits_for(W) // 2)
        hi_levels = range(bits_for(W) // 2, bits_for(W))
        s1_valid = Signal()
        s1_read = Signal()
        s1_bit = Signal.like(wbit)
        s1_count = Signal.like(count)
        s1_dest = Signal.like(dest)
        s1_clear = Signal()
        s1_close = Signal()
        s1_meta = Signal(PatchChunk(W))        # everything but the features

        last_valid = Signal()
        last_close = Signal()
        if self._registered_hold:
            held = Mux(self.chunk.payload.first, self.hold.first, self.hold.other)
        else:
            held = ~self.chunk.ready
        m.d.comb += stall.eq(last_valid & last_close & self.chunk.valid & held)
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

        # capture: rd_data (the word read by the issue cycle before) into a register
        # next to the block RAM, whose clock-to-out leaves no time for the shifter.
        # rd_data is the word only in the cycle after its read: if the capture stage
        # is stalled then, ``rd_word`` keeps it until the stall ends
        rd_fresh = Signal()
        rd_word = Signal(AW)
        m.d.sync += rd_fresh.eq(self.rd_en)
        with m.If(rd_fresh):
            m.d.sync += rd_word.eq(self.rd_data)
        c_valid, c_read, c_clear, c_close = Signal(), Signal(), Signal(), Signal()
        c_bit, c_count, c_dest = Signal.like(wbit), Signal.like(count), Signal.like(dest)
        c_meta = Signal(PatchChunk(W))
        c_word = Signal(AW)
        with m.If(~stall):
            m.d.sync += [
                c_valid.eq(s1_valid), c_read.eq(s1_read), c_clear.eq(s1_clear),
                c_close.eq(s1_close), c_bit.eq(s1_bit), c_count.eq(s1_count),
                c_dest.eq(s1_dest), c_meta.eq(s1_meta),
                c_word.eq(Mux(rd_fresh, self.rd_data, rd_word)),
            ]

        # select
        s2_valid, s2_clear, s2_close = Signal(), Signal(), Signal()
        s2_meta = Signal(PatchChunk(W))
        s2_raw = Signal(AW)                    # the word from its first needed element
        s2_needed = Signal(AW)                 # s2_needed[k]: element k is placed
        s2_amount = Signal(range(4 * W + 1))   # lane offset in bits, dest * L
        with m.If(~stall):
            m.d.sync += [
                s2_valid.eq(c_valid), s2_clear.eq(c_clear), s2_close.eq(c_close),
                s2_meta.eq(c_meta),
                s2_raw.eq(Mux(c_read, c_word, 0) >> c_bit),
                s2_needed.eq(Cat(*(c_count > k for k in range(AW)))),
                s2_amount.eq(c_dest << lg_lane),
            ]

        # widen
        s3_valid, s3_clear, s3_close = Signal(), Signal(), Signal()
        s3_meta = Signal(PatchChunk(W))
        s3_value = Signal(W)                   # widened, shifted by the low bits
        s3_amount = Signal.like(s2_amount)
        widened = self._widen(m, s2_raw, s2_needed, lg_lane, lg_store, bipolar, is_signed)
        with m.If(~stall):
            m.d.sync += [
                s3_valid.eq(s2_valid), s3_clear.eq(s2_clear), s3_close.eq(s2_close),
                s3_meta.eq(s2_meta),
                s3_value.eq(self._shift(m, widened, s2_amount, lo_levels, "shift")),
                s3_amount.eq(s2_amount),
            ]

        # place
        m.d.comb += [last_valid.eq(s3_valid), last_close.eq(s3_close)]
        placed = Signal(W)
        m.d.comb += placed.eq(Mux(s3_amount > W, 0,
                                  self._shift(m, s3_value, s3_amount, hi_levels, "shift")))
        staging = Signal(W)
        built = Signal(W)
        m.d.comb += built.eq(Mux(s3_clear, 0, staging) | placed)

        with m.If(self.chunk.ready):
            m.d.sync += self.chunk.valid.eq(0)
        with m.If(s3_valid & ~stall):
            with m.If(s3_close):
                m.d.sync += [
                    self.chunk.valid.eq(1),
                    self.chunk.payload.eq(s3_meta),
                    self.chunk.payload.features.eq(built),
                ]
            with m.Else():
                m.d.sync += staging.eq(built)

        m.d.comb += self.busy.eq((state != _State.IDLE) | s1_valid | c_valid | s2_valid | s3_valid |
                                 self.chunk.valid)
        return m
