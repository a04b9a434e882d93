"""The cluster: DIMC tiles turned into a layer engine (ARCHITECTURE.md section 2).

A sequencer fetches layer descriptors (:mod:`.descriptor`) from system memory,
checks them, loads each weight pass and the per-channel parameters into the
tiles, and runs the layer:

``PatchBuilder -> tiles -> accumulators -> OutputStage x T -> packer -> activation memory``

* The patch builder packs one chunk of an output pixel's receptive field into
  a ``W``-bit feature vector. The compute engine loads it into every tile's
  feature register in the cycle of the chunk's first command, then issues one
  command a cycle for the ``cpt / P`` row groups of that chunk, so the builder
  already works on the next chunk while the tiles compute.
* Tile results accumulate (int32, saturating, sticky flag) in one of three
  accumulator banks; when a pixel's last chunk is in, the bank goes to the
  ``T`` output stages (channel ``j*T + t`` of the pass on stage ``t``) while
  the next pixel accumulates in the other bank.
* The packer appends the output codes (``S_out`` bits each, or 32 for raw
  int32) to the output pixel and writes whole words with 4-bit enables.
* Max pooling runs on its own unit straight from and to the activation memory.

System memory is reached through ``mem_req`` (word address and length) and
``mem_resp`` (one 32-bit word per response, in order, with an error bit); the
host reads and writes the activation memory through ``act`` while the cluster
is idle.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2, exact_log2

from ..macro import DIMCTileGroup, LaneEncoding, LaneWidth
from ..macro.dimc_tile import BusRequest, BusResponse
from ..params import positive_int
from .accumulator import saturating_add
from .descriptor import DESCRIPTOR_WORDS, ClusterError, Descriptor, LayerKind
from .maxpool import MaxPoolUnit
from .output_stage import OutputKind, OutputStage
from .patch_builder import PatchBuilder

__all__ = ["Cluster", "MemRequest", "MemResponse", "RESIDENT_WEIGHTS"]

SYSTEM_WORD = 32
#: accumulator banks: one pixel accumulates while one is in the output stages and a
#: third can start before the oldest is fully read out
BANKS = 3
#: largest tensor height, width or channel count a descriptor may name
MAX_DIM = 4096

#: descriptor ``weights`` value meaning "the weights are already in the tiles" (loaded
#: by the host through ``tile_bus``); legal only with ``passes == 1``
RESIDENT_WEIGHTS = 0xFFFFFFFF

MemRequest = data.StructLayout({"addr": 32, "length": 16})
MemResponse = data.StructLayout({"data": 32, "error": 1})


def storage_lane(bits):
    """The :class:`LaneWidth` code an operand of ``bits`` (1..4) is stored in:
    1 -> L1, 2 -> L2, 3 or 4 -> L4."""
    return Mux(bits <= 1, LaneWidth.L1, Mux(bits == 2, LaneWidth.L2, LaneWidth.L4))


class Cluster(wiring.Component):
    """A cluster of ``T`` DIMC tiles with its sequencer.

    Parameters
    ----------
    tiles, rows, width, parallel : int
        ``T``, ``R``, ``W``, ``P`` (``W`` a multiple of 32).
    act_bytes : int
        ``A``, activation memory bytes.
    act_word : int
        Activation memory word width: 32 or 64.
    tile_depth : int
        Tile pipeline depth.
    output_depth : int
        Output stage pipeline depth (6: the multiplier operands copied, the
        partial products, their 48-bit sum, the rounding shift and the
        rounding, clamp and lane code each in their own cycle; the performance
        model ``imnpu_sw.perf_model`` assumes the default).

    Members
    -------
    start : ``In(1)``
        Pulse (while idle): run the descriptor list at word address ``desc_addr``.
    desc_addr : ``In(32)``
    busy, done : ``Out(1)``
        ``done`` pulses when the list ends or a layer fails.
    error_code : ``Out(ClusterError)``
        Result of the last run (``NONE`` when every layer ran).
    saturated : ``Out(1)``
        Sticky since ``start``: an accumulation or ``acc + bias`` saturated.
    layer_done : ``Out(1)``
        Pulses when a layer ends; ``layer_index`` and ``layer_cycles`` (cycles
        from the start of its descriptor fetch) describe it.
    cycles : ``Out(32)``
        Cycles since ``start`` (stops at ``done``).
    mem_req : ``Out(stream.Signature(MemRequest))``
    mem_resp : ``In(stream.Signature(MemResponse))``
    act : ``In(stream.Signature(BusRequest))``, act_resp : response
        Host access to the activation memory (word address), as the tile's
        memory-mode port (answered the cycle after the request); refused with
        ``error`` while busy.
    tile_bus : ``In(stream.Signature(BusRequest))``, tile_bus_resp : response
        Host access to the tile arrays in memory mode: ``addr`` is
        ``tile << tile_addr_bits | tile.bus_address(row, word)`` (32-bit words);
        refused with ``error`` while busy or for a tile ``>= T``. Answered three
        cycles after the request (it passes a register on its way to the tile, and
        the tile's answer one next to the tile).
        Weights loaded this way are used by layers whose descriptor has
        ``weights = RESIDENT_WEIGHTS``.
    """

    def __init__(self, *, tiles, rows, width, parallel=1, act_bytes, act_word=32,
                 tile_depth=2, output_depth=6):
        for name, value in (("tiles", tiles), ("rows", rows), ("width", width),
                            ("parallel", parallel), ("act_bytes", act_bytes),
                            ("act_word", act_word)):
            positive_int(name, value)
        if width % SYSTEM_WORD:
            raise ValueError(f"width must be a multiple of {SYSTEM_WORD}, not {width}")
        if act_word not in (32, 64):
            raise ValueError(f"act_word must be 32 or 64, not {act_word}")
        if (act_bytes * 8) % act_word:
            raise ValueError(f"act_bytes {act_bytes} is not a whole number of {act_word}-bit words")
        self._T, self._R, self._W, self._P = tiles, rows, width, parallel
        self._act_word = act_word
        self._act_depth = act_bytes * 8 // act_word
        self._act_bytes = act_bytes
        # the tiles share one feature register and command path (one front end)
        self._tiles = DIMCTileGroup(count=tiles, rows=rows, width=width, parallel=parallel,
                                    word_width=SYSTEM_WORD, pipeline_depth=tile_depth,
                                    feature_width=width)
        self._builder = self.patch_builder(width, act_word, self._act_depth)
        self._pool = MaxPoolUnit(word_width=act_word, depth=self._act_depth, max_dim=MAX_DIM)
        self._stages = [OutputStage(tag_width=1, pipeline_depth=output_depth)
                        for _ in range(tiles)]
        self._addr_bits = max(1, ceil_log2(self._act_depth))
        self._tile_addr_bits = len(self._tiles.bus[0].payload.addr)
        tile_sel_bits = max(1, ceil_log2(tiles))
        super().__init__({
            "start": In(1),
            "desc_addr": In(32),
            "busy": Out(1),
            "done": Out(1),
            "error_code": Out(ClusterError),
            "saturated": Out(1),
            "layer_done": Out(1),
            "layer_index": Out(16),
            "layer_cycles": Out(32),
            "cycles": Out(32),
            "mem_req": Out(stream.Signature(MemRequest)),
            "mem_resp": In(stream.Signature(MemResponse)),
            "act": In(stream.Signature(BusRequest(self._addr_bits, act_word))),
            "act_resp": Out(wiring.Signature({"valid": Out(1),
                                              "payload": Out(BusResponse(act_word))})),
            "tile_bus": In(stream.Signature(BusRequest(self._tile_addr_bits + tile_sel_bits,
                                                       SYSTEM_WORD))),
            "tile_bus_resp": Out(wiring.Signature({"valid": Out(1),
                                                   "payload": Out(BusResponse(SYSTEM_WORD))})),
        })

    T = property(lambda self: self._T)
    R = property(lambda self: self._R)
    W = property(lambda self: self._W)
    P = property(lambda self: self._P)
    act_word = property(lambda self: self._act_word)
    act_depth = property(lambda self: self._act_depth)
    tile_latency = property(lambda self: self._tiles.pipeline_depth)
    tile_addr_bits = property(lambda self: self._tile_addr_bits)

    @staticmethod
    def patch_builder(width, act_word, act_depth):
        """The :class:`PatchBuilder` a cluster of these parameters has (the FPGA
        flow builds it alone, with its activation memory, as ``BLOCK=builder``)."""
        return PatchBuilder(width=width, word_width=act_word, depth=act_depth,
                            max_dim=MAX_DIM, max_kernel=255, max_passes=1,
                            registered_hold=True)

    # -- descriptor checks ----------------------------------------------------

    def _check(self, m, d):
        """Error code of descriptor ``d`` and some products, through free-running registers.

        The sequencer fetches the descriptor word by word into its own slot. The
        fields the checks read are final early: words 0 .. 10 at least five response
        cycles before DECODE, ``weights`` (word 11) at least four (words 12 .. 15
        follow). So the checks run as a five-stage pipeline, valid in DECODE:

        1. operands: copies of the fields a product reads (placed next to its DSP),
           ``x - 1`` terms, and the flags that need no product;
        2. products of operands, nothing else (a DSP and a register);
        3. sums and second products of stage 2, comparisons of stage 2;
        4. comparisons of stage 3, region ends, the mapping verdict;
        5. region checks and the priority-encoded code.

        The result equals that of the combinational checks: every intermediate
        register holds its expression exactly, except the region volumes, which
        are clamped (a volume whose factor exceeds the activation memory is marked
        too big instead, and overflows all the same). Also returns registered
        products the sequencer and packer use (valid from DECODE until the next
        fetch).
        """
        T, R, W, P, AW = self._T, self._R, self._W, self._P, self._act_word
        depth = self._act_depth

        def reg(value, name):
            value = Value.cast(value)
            r = Signal(value.shape(), name=f"chk_{name}")
            m.d.sync += r.eq(value)
            return r

        chains = {}     # one register chain per delayed value, shared by its users

        def delay(value, name, stages):
            chain = chains.setdefault(id(value), [value])
            while len(chain) <= stages:
                chain.append(reg(chain[-1], f"{name}_d{len(chain)}"))
            return chain[stages]

        def times_t(value):
            return value << exact_log2(T) if T & (T - 1) == 0 else value * T

        def legal_type(ty, allow_raw=False):
            bits, enc = ty.bits, ty.encoding
            ok = (((enc == LaneEncoding.SIGNED.value) & (bits >= 2) & (bits <= 4)) |
                  ((enc == LaneEncoding.UNSIGNED.value) & (bits >= 1) & (bits <= 4)) |
                  ((enc == LaneEncoding.BIPOLAR.value) & (bits == 1)))
            if allow_raw:
                ok |= enc == OutputKind.RAW32.value
            return ok

        conv_kind = (d.kind == LayerKind.CONV) | (d.kind == LayerKind.DENSE)

        # -- stage 1: operands and flags (words 0 .. 10) -----------------------------
        conv = reg(conv_kind, "conv")
        pool = reg(d.kind == LayerKind.MAXPOOL, "pool")
        kh, kw = reg(d.kh, "kh"), reg(d.kw, "kw")
        in_h, in_w = reg(d.in_h, "in_h"), reg(d.in_w, "in_w")
        out_h, out_w = reg(d.out_h, "out_h"), reg(d.out_w, "out_w")
        out_h1, out_w1 = reg(d.out_h - 1, "out_h1"), reg(d.out_w - 1, "out_w1")
        stride_h, stride_w = reg(d.stride_h, "stride_h"), reg(d.stride_w, "stride_w")
        cin, cout, cpt = reg(d.cin, "cin"), reg(d.cout, "cout"), reg(d.cpt, "cpt")
        ppc, nch, nch1 = reg(d.ppc, "ppc"), reg(d.nch, "nch"), reg(d.nch - 1, "nch1")
        spp, spp1 = reg(d.spp, "spp"), reg(d.spp - 1, "spp1")
        passes, passes1 = reg(d.passes, "passes"), reg(d.passes - 1, "passes1")
        nl = reg(Const(W, range(W + 1)) >> d.lane.as_value(), "nl")
        # the input lane and output code widths s_in, b_out are powers of two:
        # products with them are shifts by their logarithms
        lg_in = reg(storage_lane(d.x_type.bits), "lg_in")
        raw = d.o_type.encoding == OutputKind.RAW32.value
        lg_out = reg(Mux(raw, 5, storage_lane(d.o_type.bits)), "lg_out")
        ph = Mux(d.kind == LayerKind.MAXPOOL, 0, d.pad_h)
        pw = Mux(d.kind == LayerKind.MAXPOOL, 0, d.pad_w)
        ext_h = reg(d.in_h + 2 * ph, "ext_h")
        ext_w = reg(d.in_w + 2 * pw, "ext_w")
        # region volumes: a factor beyond the activation memory overflows it (the
        # other factor is at least 1, or ZERO_DIM, which comes first, fails)
        vol_bits = bits_for(depth)
        in_pw, out_pw = reg(d.in_pixel_words[:vol_bits], "in_pw"), \
            reg(d.out_pixel_words[:vol_bits], "out_pw")
        in_pw_big = reg(d.in_pixel_words > depth, "in_pw_big")
        out_pw_big = reg(d.out_pixel_words > depth, "out_pw_big")

        zero = reg((d.in_h == 0) | (d.in_w == 0) | (d.cin == 0) | (d.kh == 0) | (d.kw == 0) |
                   (d.stride_h == 0) | (d.stride_w == 0) | (d.out_h == 0) | (d.out_w == 0) |
                   (d.in_pixel_words == 0) | (d.out_pixel_words == 0) |
                   (conv_kind &
                    ((d.cout == 0) | (d.ppc == 0) | (d.spp == 0) | (d.nch == 0) |
                     (d.cpt == 0) | (d.passes == 0))), "zero")
        bad_type = reg(~legal_type(d.x_type) |
                       (conv_kind & (~legal_type(d.w_type) | ~legal_type(d.o_type, allow_raw=True))),
                       "bad_type")
        lane_code = d.lane.as_value()
        bad_lane = reg(conv_kind &
                       ((lane_code == 3) |
                        (lane_code < storage_lane(d.x_type.bits)) |
                        (lane_code < storage_lane(d.w_type.bits)) |
                        ((lane_code == 0) & (d.x_type.encoding == LaneEncoding.BIPOLAR.value) &
                         ((d.pad_h != 0) | (d.pad_w != 0)))), "bad_lane")
        too_big = reg((d.in_h > MAX_DIM) | (d.in_w > MAX_DIM) | (d.cin > MAX_DIM) |
                      (d.out_h > MAX_DIM) | (d.out_w > MAX_DIM) | (d.cout > MAX_DIM), "too_big")
        dense_ok = ((d.kh == d.in_h) & (d.kw == d.in_w) & (d.pad_h == 0) & (d.pad_w == 0) &
                    (d.out_h == 1) & (d.out_w == 1))
        bad_kind_shape = reg(((d.kind == LayerKind.DENSE) & ~dense_ok) |
                             ((d.kind == LayerKind.MAXPOOL) & ((d.pad_h != 0) | (d.pad_w != 0))),
                             "bad_kind_shape")
        spp_is1 = reg(d.spp == 1, "spp_is1")
        spp_gt1 = reg(d.spp > 1, "spp_gt1")
        ppc_is1 = reg(d.ppc == 1, "ppc_is1")
        passes_is1 = reg(d.passes == 1, "passes_is1")
        rows_cpt_ok = reg((d.cpt % P) == 0 if P > 1 else Const(1), "cpt_ok")
        pool_words = reg(d.out_pixel_words == d.in_pixel_words, "pool_words")

        # -- stage 2: products of operands ------------------------------------------
        kpos = reg(kh * kw, "kpos")
        in_area = reg(in_h * in_w, "in_area")
        out_area = reg(out_h * out_w, "out_area")
        cpp = reg(times_t(cpt), "cpp")
        cpp_bout = reg(times_t(cpt) << lg_out, "cpp_bout")
        prod_h1, prod_h2 = reg(out_h1 * stride_h, "prod_h1"), reg(out_h * stride_h, "prod_h2")
        prod_w1, prod_w2 = reg(out_w1 * stride_w, "prod_w1"), reg(out_w * stride_w, "prod_w2")
        ppc_cin = reg(ppc * cin, "ppc_cin")
        nch1_ppc = reg(nch1 * ppc, "nch1_ppc")
        nch_ppc = reg(nch * ppc, "nch_ppc")
        nch_cpt = reg(nch * cpt, "nch_cpt")
        passes1_cpt = reg(passes1 * cpt, "passes1_cpt")
        passes_cpt = reg(passes * cpt, "passes_cpt")
        spp1_nl = reg(spp1 * nl, "spp1_nl")
        spp_nl = reg(spp * nl, "spp_nl")
        in_bits = reg(d.in_pixel_words * AW, "in_bits")
        cin_bits = reg(cin << lg_in, "cin_bits")
        out_bits = reg(d.out_pixel_words * AW, "out_bits")
        cout_bits = reg(cout << lg_out, "cout_bits")
        too_large = reg((kh > ext_h) | (kw > ext_w), "too_large")
        cin_le_nl = reg(cin <= nl, "cin_le_nl")
        slices_a = reg(spp_gt1 & ppc_is1 & (cin > nl), "slices_a")
        kh2, kw2 = delay(kh, "kh", 1), delay(kw, "kw", 1)
        cin2, spp2, nl2 = delay(cin, "cin", 1), delay(spp, "spp", 1), delay(nl, "nl", 1)
        in_pw2, out_pw2 = delay(in_pw, "in_pw", 1), delay(out_pw, "out_pw", 1)

        # -- stage 3: sums, second products, comparisons of stage 2 -----------------
        shape_h1, shape_h2 = reg(prod_h1 + kh2, "shape_h1"), reg(prod_h2 + kh2, "shape_h2")
        shape_w1, shape_w2 = reg(prod_w1 + kw2, "shape_w1"), reg(prod_w2 + kw2, "shape_w2")
        in_vol = reg(in_area[:vol_bits] * in_pw2, "in_vol")
        out_vol = reg(out_area[:vol_bits] * out_pw2, "out_vol")
        in_big = reg(delay(in_pw_big, "in_pw_big", 1) | (in_area > depth), "in_big")
        out_big = reg(delay(out_pw_big, "out_pw_big", 1) | (out_area > depth), "out_big")
        kpos_spp = reg(kpos * spp2, "kpos_spp")
        one_slice_a = reg(delay(spp_is1, "spp_is1", 1) & cin_le_nl & (ppc_cin <= nl2) &
                          (nch1_ppc < kpos) & (kpos <= nch_ppc), "one_slice_a")
        slices_b = reg((spp1_nl < cin2) & (cin2 <= spp_nl), "slices_b")
        rows_ok = reg((nch_cpt <= R) & delay(rows_cpt_ok, "cpt_ok", 1), "rows_ok")
        pass_words = reg(delay(passes_is1, "passes_is1", 1) | ((cpp_bout & 3) == 0), "pass_words")
        words_ok = reg((in_bits >= cin_bits) &
                       Mux(delay(pool, "pool", 1), delay(pool_words, "pool_words", 1),
                           out_bits >= cout_bits), "words_ok")
        passes1_cpp = reg(times_t(passes1_cpt), "passes1_cpp")
        passes_cpp = reg(times_t(passes_cpt), "passes_cpp")
        ext_h3, ext_w3 = delay(ext_h, "ext_h", 2), delay(ext_w, "ext_w", 2)

        # -- stage 4: comparisons of stage 3, region ends, the mapping ---------------
        shape_ok = reg((shape_h1 <= ext_h3) & (shape_h2 > ext_h3) &
                       (shape_w1 <= ext_w3) & (shape_w2 > ext_w3), "shape_ok")
        in_end = reg(d.in_base + in_vol, "in_end")
        out_end = reg(d.out_base + out_vol, "out_end")
        vol_big = reg(in_big | out_big, "vol_big")
        slices = delay(slices_a, "slices_a", 1) & slices_b & \
            (delay(nch, "nch", 2) == kpos_spp)
        cout3 = delay(cout, "cout", 2)
        passes_ok = (passes1_cpp < cout3) & (cout3 <= passes_cpp) & pass_words
        # weights (word 11) is final at least four cycles before DECODE: read here
        resident_ok = ((d.weights != RESIDENT_WEIGHTS) |
                       delay(passes_is1, "passes_is1", 2))
        bad_mapping = reg((delay(conv, "conv", 2) &
                           ~((one_slice_a | slices) & rows_ok & passes_ok & resident_ok)) |
                          ~words_ok, "bad_mapping")
        flags = [(delay(~conv & ~pool, "bad_kind", 3), ClusterError.BAD_KIND),
                 (delay(zero, "zero", 3), ClusterError.ZERO_DIM),
                 (delay(bad_type, "bad_type", 3), ClusterError.BAD_TYPE),
                 (delay(bad_lane, "bad_lane", 3), ClusterError.BAD_LANE),
                 (delay(too_large, "too_large", 2), ClusterError.KERNEL_TOO_LARGE)]
        shape_flags = reg(delay(too_big, "too_big", 2) | delay(bad_kind_shape, "bks", 2),
                          "shape_flags")

        # -- stage 5: region checks, the first failing check names the error -------
        overflow = vol_big | (in_end > depth) | (out_end > depth)
        overlap = (d.in_base < out_end) & (d.out_base < in_end)
        checks = [
            *flags,
            (~shape_ok | shape_flags, ClusterError.BAD_SHAPE),
            (bad_mapping, ClusterError.BAD_MAPPING),
            (overflow, ClusterError.ACT_OVERFLOW),
            (overlap, ClusterError.OVERLAP),
        ]
        code = Signal(ClusterError)
        for index, (failed, error) in enumerate(checks):
            with (m.If if index == 0 else m.Elif)(failed):
                m.d.sync += code.eq(error)
        with m.Else():
            m.d.sync += code.eq(ClusterError.NONE)
        products = {"nch_cpt": nch_cpt, "cpp": cpp, "cpp_bout": cpp_bout,
                    "rows_last": reg(nch_cpt - 1, "rows_last"),
                    "pix_last": reg(out_area - 1, "pix_last")}
        return code, products

    # -- elaboration ------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        T, R, W, P, AW = self._T, self._R, self._W, self._P, self._act_word
        words_per_row = W // SYSTEM_WORD

        m.submodules.tiles = tiles = self._tiles
        m.d.comb += tiles.res.ready.eq(1)
        m.submodules.builder = builder = self._builder
        m.submodules.pool = pool = self._pool
        for t, stage in enumerate(self._stages):
            m.submodules[f"out{t}"] = stage

        act = Memory(shape=unsigned(AW), depth=self._act_depth, init=[])
        m.submodules.act = act
        act_rd = act.read_port(domain="sync")
        act_wr = act.write_port(granularity=4)

        # -- descriptor register ------------------------------------------------
        desc_bits = Signal(Descriptor.size)
        d = Descriptor(desc_bits)
        check_code, dp = self._check(m, d)
        error = Signal(ClusterError)

        # -- counters -------------------------------------------------------------
        layer_cycles = Signal(32)
        m.d.sync += self.layer_done.eq(0)
        m.d.sync += self.done.eq(0)

        desc_ptr = Signal(32)
        words_left = Signal(32)
        fetch_word = Signal(range(DESCRIPTOR_WORDS))   # descriptor word the next response is
        # passes after the current one: counting down to 0 keeps the descriptor's
        # ``passes`` off the sequencer's next-state logic
        passes_left = Signal(16)
        # pass * T * cpt and pass * T * cpt * b_out, stepped with the pass
        pass_ch = Signal(32)
        pass_bits = Signal(32)
        next_pass = Signal()         # run_done of a pass with passes left: move on in W_REQ
        assert self._addr_bits + 1 + exact_log2(AW) <= 32
        weight_ptr = Signal(32)
        param_ptr = Signal(32)

        # Memory-mode requests to the tiles (weight loads while busy, host accesses
        # while idle) pass a register per tile: the tile arrays' block RAMs are
        # spread out, so their address muxes and write enables start at registers.
        tile_req_valid = [Signal(name=f"tile_req_valid{t}") for t in range(T)]
        tile_req = [Signal(tiles.bus[t].payload.shape(), name=f"tile_req{t}") for t in range(T)]
        for t, tile_bus in enumerate(tiles.bus):
            m.d.comb += [tile_bus.valid.eq(tile_req_valid[t]), tile_bus.payload.eq(tile_req[t])]
            m.d.sync += tile_req_valid[t].eq(0)

        # weight load position
        wl_word = Signal(range(words_per_row))
        wl_row = Signal(range(R + 1))
        wl_tile = Signal(range(T + 1))
        # parameter load position
        pl_j = Signal(range(R + 1))
        pl_t = Signal(range(T + 1))
        pl_half = Signal()
        # per tile, indexed by the channel step j: bias, and mult | shift (separate
        # memories, so that the pair's second word does not touch the bias)
        bias_mem, scale_mem = [], []
        for t in range(T):
            bias_mem.append(Memory(shape=signed(32), depth=R, init=[]))
            scale_mem.append(Memory(shape=data.StructLayout({"mult": signed(16), "shift": 6}),
                                    depth=R, init=[]))
            m.submodules[f"bias{t}"] = bias_mem[t]
            m.submodules[f"scale{t}"] = scale_mem[t]
        bias_wr = [mem.write_port() for mem in bias_mem]
        scale_wr = [mem.write_port() for mem in scale_mem]
        for t in range(T):
            m.d.comb += [bias_wr[t].addr.eq(pl_j), bias_wr[t].data.eq(self.mem_resp.payload.data),
                         scale_wr[t].addr.eq(pl_j),
                         scale_wr[t].data.mult.eq(self.mem_resp.payload.data[:16]),
                         scale_wr[t].data.shift.eq(self.mem_resp.payload.data[16:22])]

        run_done = Signal()          # the output engine wrote the pass's last pixel
        pool_done = Signal()

        # system memory requests
        req_addr = Signal(32)
        req_len = Signal(16)
        m.d.comb += [self.mem_req.payload.addr.eq(req_addr),
                     self.mem_req.payload.length.eq(req_len)]

        with m.If(self.busy):
            m.d.sync += [self.cycles.eq(self.cycles + 1), layer_cycles.eq(layer_cycles + 1)]

        resp = self.mem_resp
        builder_start = Signal()
        pool_start = Signal()
        run_start = Signal()

        words_per_pass = Signal(32)
        params_per_pass = Signal(32)
        # registered (the descriptor does not change after DECODE; used from W_REQ / P_REQ)
        m.d.sync += [
            words_per_pass.eq(dp["nch_cpt"] * (T * words_per_row)),
            params_per_pass.eq(2 * dp["cpp"]),
        ]

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        desc_ptr.eq(self.desc_addr), self.busy.eq(1), self.cycles.eq(0),
                        self.error_code.eq(ClusterError.NONE), self.saturated.eq(0),
                        self.layer_index.eq(0), layer_cycles.eq(0),
                    ]
                    m.next = "FETCH_REQ"
            with m.State("FETCH_REQ"):
                m.d.comb += [self.mem_req.valid.eq(1), req_addr.eq(desc_ptr),
                             req_len.eq(DESCRIPTOR_WORDS)]
                with m.If(self.mem_req.ready):
                    m.d.sync += [words_left.eq(DESCRIPTOR_WORDS), fetch_word.eq(0),
                                 error.eq(ClusterError.NONE)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += resp.ready.eq(1)
                with m.If(resp.valid):
                    # word k into its own slot: the words the checks read are final
                    # early, and the checks' pipeline has settled by DECODE
                    m.d.sync += [desc_bits.word_select(fetch_word, SYSTEM_WORD).eq(resp.payload.data),
                                 fetch_word.eq(fetch_word + 1), words_left.eq(words_left - 1)]
                    with m.If(resp.payload.error):
                        m.d.sync += error.eq(ClusterError.MEM_ERROR)
                    with m.If(words_left == 1):
                        m.next = "DECODE"
            with m.State("DECODE"):
                with m.If(error != ClusterError.NONE):
                    m.next = "FAIL"
                with m.Elif(d.kind == LayerKind.END):
                    m.next = "FINISH"
                with m.Else():
                    m.d.sync += error.eq(check_code)
                    m.next = "CHECKED"
            with m.State("CHECKED"):
                with m.If(error != ClusterError.NONE):
                    m.next = "FAIL"
                with m.Elif(d.kind == LayerKind.MAXPOOL):
                    m.d.comb += pool_start.eq(1)
                    m.next = "POOL"
                with m.Else():
                    m.d.sync += [passes_left.eq(d.passes - 1), pass_ch.eq(0), pass_bits.eq(0),
                                 next_pass.eq(0),
                                 weight_ptr.eq(d.weights), param_ptr.eq(d.params)]
                    with m.If(d.weights == RESIDENT_WEIGHTS):
                        m.next = "P_REQ"
                    with m.Else():
                        m.next = "W_REQ"
            with m.State("W_REQ"):
                # the next pass's counters move here, a cycle after run_done: their
                # enables then start at registers, not at the packer's word end
                # (app_len -> run_done -> pass_bits was 21.5 ns routed)
                with m.If(next_pass):
                    m.d.sync += [next_pass.eq(0), passes_left.eq(passes_left - 1),
                                 pass_ch.eq(pass_ch + dp["cpp"]),
                                 pass_bits.eq(pass_bits + dp["cpp_bout"])]
                m.d.comb += [self.mem_req.valid.eq(1), req_addr.eq(weight_ptr),
                             req_len.eq(words_per_pass)]
                with m.If(self.mem_req.ready):
                    m.d.sync += [words_left.eq(words_per_pass), wl_word.eq(0), wl_row.eq(0),
                                 wl_tile.eq(0), weight_ptr.eq(weight_ptr + words_per_pass)]
                    m.next = "W_LOAD"
            with m.State("W_LOAD"):
                m.d.comb += resp.ready.eq(1)
                with m.If(resp.valid):
                    for t in range(T):
                        m.d.sync += [
                            tile_req_valid[t].eq((wl_tile == t) & ~resp.payload.error),
                            tile_req[t].addr.eq(tiles.bus_address(wl_row, wl_word)),
                            tile_req[t].write.eq(1),
                            tile_req[t].data.eq(resp.payload.data),
                        ]
                    m.d.sync += words_left.eq(words_left - 1)
                    with m.If(wl_word == words_per_row - 1):
                        m.d.sync += wl_word.eq(0)
                        with m.If(wl_row == dp["rows_last"]):
                            m.d.sync += [wl_row.eq(0), wl_tile.eq(wl_tile + 1)]
                        with m.Else():
                            m.d.sync += wl_row.eq(wl_row + 1)
                    with m.Else():
                        m.d.sync += wl_word.eq(wl_word + 1)
                    with m.If(resp.payload.error):
                        m.d.sync += error.eq(ClusterError.MEM_ERROR)
                    with m.If(words_left == 1):
                        m.next = "P_REQ"
            with m.State("P_REQ"):
                with m.If(error != ClusterError.NONE):
                    m.next = "FAIL"
                with m.Else():
                    m.d.comb += [self.mem_req.valid.eq(1), req_addr.eq(param_ptr),
                                 req_len.eq(params_per_pass)]
                    with m.If(self.mem_req.ready):
                        m.d.sync += [words_left.eq(params_per_pass), pl_j.eq(0), pl_t.eq(0),
                                     pl_half.eq(0), param_ptr.eq(param_ptr + params_per_pass)]
                        m.next = "P_LOAD"
            with m.State("P_LOAD"):
                m.d.comb += resp.ready.eq(1)
                with m.If(resp.valid):
                    for t in range(T):
                        with m.If((pl_t == t) & (pl_j < R)):
                            with m.If(pl_half):
                                m.d.comb += scale_wr[t].en.eq(1)
                            with m.Else():
                                m.d.comb += bias_wr[t].en.eq(1)
                    m.d.sync += [words_left.eq(words_left - 1), pl_half.eq(~pl_half)]
                    with m.If(pl_half):
                        with m.If(pl_t == T - 1):
                            m.d.sync += [pl_t.eq(0), pl_j.eq(pl_j + 1)]
                        with m.Else():
                            m.d.sync += pl_t.eq(pl_t + 1)
                    with m.If(resp.payload.error):
                        m.d.sync += error.eq(ClusterError.MEM_ERROR)
                    with m.If(words_left == 1):
                        m.next = "RUN_START"
            with m.State("RUN_START"):
                with m.If(error != ClusterError.NONE):
                    m.next = "FAIL"
                with m.Else():
                    m.d.comb += [builder_start.eq(1), run_start.eq(1)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(builder.error):
                    # the builder's own checks; the descriptor checks catch these first
                    m.d.sync += error.eq(ClusterError.BAD_MAPPING)
                    m.next = "FAIL"
                with m.Elif(run_done):
                    with m.If(passes_left == 0):
                        m.next = "LAYER_END"
                    with m.Else():
                        m.d.sync += next_pass.eq(1)
                        m.next = "W_REQ"
            with m.State("POOL"):
                with m.If(pool_done):
                    with m.If(pool.error):
                        # the unit's own checks; the descriptor checks catch these first
                        m.d.sync += error.eq(ClusterError.BAD_SHAPE)
                        m.next = "FAIL"
                    with m.Else():
                        m.next = "LAYER_END"
            with m.State("LAYER_END"):
                m.d.sync += [
                    self.layer_done.eq(1), self.layer_cycles.eq(layer_cycles + 1),
                    layer_cycles.eq(0), self.layer_index.eq(self.layer_index + 1),
                    desc_ptr.eq(desc_ptr + DESCRIPTOR_WORDS),
                ]
                m.next = "FETCH_REQ"
            with m.State("FAIL"):
                m.d.sync += [self.error_code.eq(error), self.busy.eq(0), self.done.eq(1),
                             self.layer_cycles.eq(layer_cycles + 1)]
                m.next = "IDLE"
            with m.State("FINISH"):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                m.next = "IDLE"

        # -- patch builder ------------------------------------------------------------
        # The builder's and the max-pool unit's layer fields are registered copies of
        # the descriptor's: it is final before DECODE and their starts come later
        # (RUN_START, CHECKED), so the copies are valid and their set-up logic starts
        # at registers placed near it, not at the descriptor slot.
        bl = Signal(builder.layer.shape())
        m.d.comb += builder.layer.eq(bl)
        m.d.sync += [
            bl.in_base.eq(d.in_base), bl.in_h.eq(d.in_h), bl.in_w.eq(d.in_w), bl.cin.eq(d.cin),
            bl.in_pixel_words.eq(d.in_pixel_words),
            bl.in_lane.eq(storage_lane(d.x_type.bits)),
            bl.in_encoding.eq(d.x_type.encoding), bl.lane.eq(d.lane),
            bl.kh.eq(d.kh), bl.kw.eq(d.kw), bl.stride_h.eq(d.stride_h), bl.stride_w.eq(d.stride_w),
            bl.pad_h.eq(d.pad_h), bl.pad_w.eq(d.pad_w), bl.out_h.eq(d.out_h), bl.out_w.eq(d.out_w),
            bl.positions_per_chunk.eq(d.ppc), bl.slices_per_position.eq(d.spp),
            bl.chunks.eq(d.nch), bl.passes.eq(1),
        ]
        m.d.comb += builder.start.eq(builder_start)

        # -- compute engine -------------------------------------------------------------
        groups = Signal(16)                 # row groups per chunk: cpt / P
        m.d.comb += groups.eq(d.cpt >> exact_log2(P) if P & (P - 1) == 0 else d.cpt // P)
        issuing = Signal()
        k = Signal(16)                      # group within the chunk
        group_base = Signal(16)
        cur_lanes = Signal.like(builder.chunk.payload.lanes)
        cur_first = Signal()
        cur_last = Signal()
        bank_full = Signal(BANKS)
        cbank = Signal(range(BANKS))        # bank the compute engine accumulates into
        chunk = builder.chunk

        can_take = Signal()
        # A pixel owns its bank from its first command until the output stages have
        # read it, so results in flight never meet an older pixel's accumulators.
        bank_busy = Signal(BANKS)
        m.d.comb += can_take.eq(chunk.valid & (~chunk.payload.first | ~bank_busy.bit_select(cbank, 1)))
        issue = Signal()
        issue_first_k = Signal()
        m.d.comb += issue_first_k.eq(~issuing & can_take)
        m.d.comb += issue.eq(issue_first_k | issuing)
        m.d.comb += chunk.ready.eq(issue_first_k)
        cmd_group = Signal(16)
        m.d.comb += cmd_group.eq(Mux(issuing, group_base + k,
                                     Mux(chunk.payload.first, 0, group_base + groups)))
        lanes_now = Mux(issuing, cur_lanes, chunk.payload.lanes)
        m.d.comb += [
            tiles.feat.valid.eq(issue_first_k),
            tiles.feat.payload.data.eq(chunk.payload.features),
            tiles.cmd.valid.eq(issue),
            tiles.cmd.payload.group.eq(cmd_group),
            tiles.cmd.payload.lane_width.eq(d.lane),
            tiles.cmd.payload.weight_encoding.eq(
                Mux(d.w_type.encoding == LaneEncoding.BIPOLAR.value,
                    Mux(d.lane == LaneWidth.L1, LaneEncoding.BIPOLAR, LaneEncoding.SIGNED),
                    d.w_type.encoding)),
            tiles.cmd.payload.feature_encoding.eq(
                Mux(d.x_type.encoding == LaneEncoding.BIPOLAR.value,
                    Mux(d.lane == LaneWidth.L1, LaneEncoding.BIPOLAR, LaneEncoding.SIGNED),
                    d.x_type.encoding)),
            tiles.cmd.payload.lanes.eq(lanes_now),
        ]
        first_now = Mux(issuing, cur_first, chunk.payload.first)
        last_now = Mux(issuing, cur_last, chunk.payload.last)
        k_now = Mux(issuing, k, 0)
        last_cmd = Signal()
        m.d.comb += last_cmd.eq(last_now & (k_now == groups - 1))
        with m.If(issue_first_k):
            m.d.sync += [cur_lanes.eq(chunk.payload.lanes), cur_first.eq(chunk.payload.first),
                         cur_last.eq(chunk.payload.last),
                         group_base.eq(Mux(chunk.payload.first, 0, group_base + groups))]
        issuing_next = Signal()
        cbank_next = Signal.like(cbank)
        m.d.comb += [issuing_next.eq(issuing), cbank_next.eq(cbank)]
        with m.If(issue):
            with m.If(k_now == groups - 1):
                m.d.comb += issuing_next.eq(0)
                m.d.sync += k.eq(0)
            with m.Else():
                m.d.comb += issuing_next.eq(1)
                m.d.sync += k.eq(k_now + 1)
            with m.If(last_cmd):
                m.d.comb += cbank_next.eq(Mux(cbank == BANKS - 1, 0, cbank + 1))
        m.d.sync += [issuing.eq(issuing_next), cbank.eq(cbank_next)]

        # Delay line: what each command's results mean, aligned with the tiles' latency.
        # ``group`` is the command's row group k (rows k*P .. k*P+P-1) modulo the
        # accumulator memories' depth; ``hit`` says k < R/P (always, for a legal layer).
        n_groups = R // P
        gbits = ceil_log2(n_groups)
        meta = data.StructLayout({"valid": 1, "group": gbits, "hit": 1, "first": 1, "last": 1,
                                  "bank": range(BANKS)})
        stage = Signal(meta)
        m.d.comb += [stage.valid.eq(issue), stage.group.eq(k_now), stage.hit.eq(k_now < n_groups),
                     stage.first.eq(first_now), stage.last.eq(last_cmd), stage.bank.eq(cbank)]
        stages = [stage]                    # stages[i]: the command issued i cycles ago
        for i in range(self.tile_latency):
            nxt = Signal(meta, name=f"meta{i}")
            m.d.sync += nxt.eq(stage)
            stage = nxt
            stages.append(stage)

        # -- accumulators -------------------------------------------------------------
        # Per tile and lane p one memory of BANKS * R/P int32 entries, entry
        # Cat(group, bank) holding row group*P + p, in two copies written alike: one
        # for the read-modify-write, one for the output engine (block RAM has two
        # ports). The accumulate read is issued two cycles before the result arrives
        # (the delay line knows its entry) and registered once more, off the block
        # RAM's slow output; the two writes that read cannot have seen (the results
        # of the last two cycles) are forwarded.
        acc_out = []                        # per tile, per lane: the output engine's read port
        acc_fwd = []                        # per tile, per lane: data of the last write
        overflow = Signal()                 # an accumulation saturated this cycle
        acc_en = Signal()
        m.d.comb += acc_en.eq(stage.valid & stage.hit)
        addr = Cat(stage.group, stage.bank)
        ahead = stages[-3]                  # the result two cycles from now (tile_latency >= 2)
        w1_en, w2_en = Signal(), Signal()   # writes of one and two cycles ago
        w1_addr, w2_addr = Signal.like(addr), Signal.like(addr)
        m.d.sync += [w1_en.eq(acc_en), w1_addr.eq(addr), w2_en.eq(w1_en), w2_addr.eq(w1_addr)]
        # The forwarding hits, w1_en & (w1_addr == addr) and w2_en & (w2_addr == addr),
        # are registers: the delay line shifts every cycle, so next cycle's entry is
        # stages[-2]'s and the writes one and two cycles before it are this cycle's
        # and the last. Compared in their own cycle they sat in front of the 32-bit
        # add (21.7 ns routed on the `fpga` self-test).
        w1_hit, w2_hit = Signal(), Signal()
        next_addr = Cat(stages[-2].group, stages[-2].bank)
        m.d.sync += [w1_hit.eq(acc_en & (addr == next_addr)),
                     w2_hit.eq(w1_en & (w1_addr == next_addr))]
        for t in range(T):
            acc_out.append([])
            acc_fwd.append([])
            for p in range(P):
                acc = Memory(shape=signed(32), depth=BANKS << gbits, init=[])
                acc_o = Memory(shape=signed(32), depth=BANKS << gbits, init=[])
                m.submodules[f"acc{t}_{p}"] = acc
                m.submodules[f"acc_out{t}_{p}"] = acc_o
                acc_rd = acc.read_port()
                acc_wr = acc.write_port()
                acc_o_wr = acc_o.write_port()
                acc_out[t].append(acc_o.read_port())
                read = Signal(signed(32), name=f"acc_read{t}_{p}")
                w1_data = Signal(signed(32), name=f"acc_w1_{t}_{p}")
                w2_data = Signal(signed(32), name=f"acc_w2_{t}_{p}")
                old = Signal(signed(32), name=f"acc_old{t}_{p}")
                m.d.sync += read.eq(acc_rd.data)
                m.d.comb += [acc_rd.addr.eq(Cat(ahead.group, ahead.bank)),
                             old.eq(Mux(w1_hit, w1_data, Mux(w2_hit, w2_data, read)))]
                dot = tiles.res.payload.dot[t][p]
                value, ovf = saturating_add(old, dot)
                new = Mux(stage.first, dot, value)
                m.d.sync += [w1_data.eq(new), w2_data.eq(w1_data)]
                m.d.comb += [acc_wr.addr.eq(addr), acc_wr.data.eq(new), acc_wr.en.eq(acc_en),
                             acc_o_wr.addr.eq(addr), acc_o_wr.data.eq(new),
                             acc_o_wr.en.eq(acc_en)]
                acc_fwd[t].append(w1_data)
                with m.If(acc_en & ~stage.first & ovf):
                    m.d.comb += overflow.eq(1)
        # the sticky flag is set a cycle later: the overflow test ends a 32-bit add
        # behind the write forwarding, too long a path to also reach the flag's enable
        overflow_r = Signal()
        m.d.sync += overflow_r.eq(overflow)
        with m.If(overflow_r):
            m.d.sync += self.saturated.eq(1)

        # -- output engine --------------------------------------------------------------
        obank = Signal(range(BANKS))
        oj = Signal(16)
        feeding = Signal()
        m.d.comb += feeding.eq(bank_full.bit_select(obank, 1))
        stage_ready = self._stages[0].inp.ready
        raw = d.o_type.encoding == OutputKind.RAW32.value
        # channel step oj < cpt <= R: accumulator entry (oj / P, obank), lane oj % P
        o_lane = oj[:exact_log2(P)] if P & (P - 1) == 0 else oj % P
        # The output engine's reads are registered (block RAM): they are issued with the
        # next value of (oj, obank), so the read data always belong to the current one.
        # A read does not see the accumulator write of its own cycle: that is forwarded.
        # (Parameters are written only while the output engine is idle.)
        # The step after (oj, obank) and ``o_last`` (oj is the bank's last channel step)
        # come from registers, so the output stage's ready only selects between two
        # addresses: the read address is one LUT behind the ready chain, not a 16-bit
        # compare with the descriptor's ``cpt`` (it was the self-test's critical path on
        # the ECP5, into the far-away accumulator block RAMs).
        o_last = Signal()
        cpt_m1 = Signal.like(d.cpt)         # cpt - 1, cpt - 2: free-running registers, so
        cpt_m2 = Signal.like(d.cpt)         # that o_last's inputs are plain comparisons
        m.d.sync += [cpt_m1.eq(d.cpt - 1), cpt_m2.eq(d.cpt - 2)]
        advance = Signal()
        m.d.comb += advance.eq(feeding & stage_ready)
        oj_next = Signal.like(oj)
        obank_next = Signal.like(obank)
        if P & (P - 1) == 0:
            o_group_next = oj_next >> exact_log2(P)
        else:
            o_group_next = oj_next // P
        o_addr = Signal.like(addr)          # the entry the read data belong to
        m.d.sync += o_addr.eq(Cat(o_group_next[:gbits], obank_next))
        o_fwd = Signal()
        m.d.comb += o_fwd.eq(w1_en & (w1_addr == o_addr))
        for t, st in enumerate(self._stages):
            sel_acc = Signal(signed(32), name=f"oacc{t}")
            lane_acc = []
            for rp, fwd in zip(acc_out[t], acc_fwd[t]):
                m.d.comb += rp.addr.eq(Cat(o_group_next[:gbits], obank_next))
                lane_acc.append(Mux(o_fwd, fwd, rp.data))
            m.d.comb += sel_acc.eq(Array(lane_acc)[o_lane] if P > 1 else lane_acc[0])
            bias_rd = bias_mem[t].read_port()
            scale_rd = scale_mem[t].read_port()
            m.d.comb += [bias_rd.addr.eq(oj_next), scale_rd.addr.eq(oj_next)]
            sel_bias, sel_mult, sel_shift = bias_rd.data, scale_rd.data.mult, scale_rd.data.shift
            m.d.comb += [
                st.inp.valid.eq(feeding),
                st.inp.payload.acc.eq(sel_acc),
                st.inp.payload.bias.eq(sel_bias),
                st.inp.payload.mult.eq(sel_mult),
                st.inp.payload.shift.eq(sel_shift),
                st.inp.payload.relu.eq(d.relu),
                st.inp.payload.out_kind.eq(d.o_type.encoding),
                st.inp.payload.out_bits.eq(d.o_type.bits),
                st.inp.payload.tag.eq(o_last),
            ]
        set_full = Signal(BANKS)
        clear_full = Signal(BANKS)
        with m.If(stage.valid & stage.last):
            m.d.comb += set_full.bit_select(stage.bank, 1).eq(1)
        oj_step = Signal.like(oj)           # (oj, obank) after this step, from registers
        obank_step = Signal.like(obank)
        m.d.comb += [oj_step.eq(Mux(o_last, 0, oj + 1)),
                     obank_step.eq(Mux(o_last, Mux(obank == BANKS - 1, 0, obank + 1), obank)),
                     oj_next.eq(Mux(advance, oj_step, oj)),
                     obank_next.eq(Mux(advance, obank_step, obank))]
        with m.If(advance & o_last):
            m.d.comb += clear_full.bit_select(obank, 1).eq(1)
        # o_last == (oj == cpt - 1), two cycles behind a new descriptor's cpt: the output
        # engine is idle then (its banks fill from the new layer's commands first)
        m.d.sync += [oj.eq(oj_next), obank.eq(obank_next),
                     o_last.eq(Mux(advance, Mux(o_last, d.cpt == 1, oj == cpt_m2),
                                   oj == cpt_m1))]
        m.d.sync += bank_full.eq((bank_full & ~clear_full) | set_full)
        reserve = Signal(BANKS)
        with m.If(issue_first_k & chunk.payload.first):
            m.d.comb += reserve.bit_select(cbank, 1).eq(1)
        bank_busy_next = Signal(BANKS)
        m.d.comb += bank_busy_next.eq((bank_busy & ~clear_full) | reserve)
        m.d.sync += bank_busy.eq(bank_busy_next)
        # The builder stalls on registers holding ~chunk.ready, set from the next-state
        # values (no path from the compute and output engines into its stall, which
        # holds every builder stage): a first chunk waits for its bank.
        hold_first = Signal()
        m.d.sync += hold_first.eq(issuing_next | bank_busy_next.bit_select(cbank_next, 1))
        m.d.comb += [builder.hold.first.eq(hold_first), builder.hold.other.eq(issuing)]

        # -- packer -------------------------------------------------------------------------
        outs = [st.out for st in self._stages]
        step_valid = outs[0].valid
        pixel_end = outs[0].payload.tag
        ch_base = Signal(32)                # first channel of this step: pass*T*cpt + j*T
        sub = Signal(range(T + 1))           # raw output: channel within the step
        # n_valid = clamp(cout - ch_base, 0, T), the step's valid channels, is a register
        # loaded with ch_base: from it the append length, the word end and the pass's end
        # follow in one cycle without the 32-bit subtraction.
        n_valid = Signal(range(T + 1))
        remaining = Signal(signed(34))      # cout - ch_base
        rem_pass = Signal(signed(34))       # cout - pass_ch
        m.d.comb += [remaining.eq(d.cout - ch_base), rem_pass.eq(d.cout - pass_ch)]

        def clamp_valid(rem):
            """n_valid of a step whose first channel leaves rem = cout - ch_base."""
            return Mux(rem <= 0, 0, Mux(rem >= T, T, rem[:bits_for(T)]))
        # The output code width (1, 2 or 4 bits; raw int32: 32) as a shift amount, and
        # the raw flag, in free-running registers: the descriptor is held long before
        # the packer runs, and the append length n_valid * width is then a shift
        # (the product from the descriptor field was the cluster's critical path).
        pk_raw = Signal()
        lg_out = Signal(range(6))
        m.d.sync += [pk_raw.eq(raw),
                     lg_out.eq(Mux(raw, 5, storage_lane(d.o_type.bits)))]

        # The append length of the current step (raw: 32 bits, or 0 if n_valid is 0;
        # else n_valid codes) is a register too, loaded with n_valid: the word-end
        # decisions then start at a register and the adder bitpos + app_len, not
        # behind the width decode.
        app_len = Signal(range(32 * T + 1))

        n_pass = Signal.like(n_valid)       # n_valid of a pixel's first step
        n_step = Signal.like(n_valid)       # n_valid of the next step of this pixel
        m.d.comb += [n_pass.eq(clamp_valid(rem_pass)), n_step.eq(clamp_valid(remaining - T))]

        # sub and n_valid are set through their next values, so that ``last_sub`` (this
        # step's last output: raw, sub = n_valid - 1; else always) is a register: it
        # gates the output stages' ready, which the output engine's read addresses and
        # the accumulator block RAMs wait for
        # The next sub is sub, sub + 1 or 0 and the next n_valid is n_valid, n_pass or
        # n_step (``sub_sel``, ``n_sel``): last_sub's comparison is made for each pair
        # from registers and the packer's decisions only select the result (compared
        # behind them it was 20.7 ns routed on the `fpga` self-test).
        sub_inc = Signal.like(sub)
        m.d.comb += sub_inc.eq(sub + 1)
        SUB_KEEP, SUB_INC, SUB_ZERO = range(3)          # indices into sub_cands
        N_KEEP, N_PASS, N_STEP = range(3)               # indices into n_cands
        sub_cands = (sub, sub_inc, Const(0, len(sub)))
        n_cands = (n_valid, n_pass, n_step)
        sub_sel = Signal(2, init=SUB_KEEP)
        n_sel = Signal(2, init=N_KEEP)
        sub_next = Signal.like(sub)
        n_valid_next = Signal.like(n_valid)
        last_next = Signal()                # sub_next >= n_valid_next - 1
        with m.Switch(Cat(n_sel, sub_sel)):
            for i, sub_c in enumerate(sub_cands):
                for j, n_c in enumerate(n_cands):
                    ge = Signal(name=f"last_sub_if_{i}{j}")
                    m.d.comb += ge.eq(sub_c >= n_c - 1)
                    with m.Case(j | i << 2):
                        m.d.comb += [sub_next.eq(sub_c), n_valid_next.eq(n_c),
                                     last_next.eq(ge)]
        last_sub = Signal(init=1)
        m.d.sync += [sub.eq(sub_next), n_valid.eq(n_valid_next),
                     last_sub.eq(~raw | last_next)]   # raw: pk_raw next

        def load_ch_base(value, which):
            """ch_base <= value with its n_valid, ``n_cands[which]``, at sub = 0."""
            n_value = n_cands[which]
            m.d.comb += n_sel.eq(which)
            m.d.sync += [ch_base.eq(value),
                         app_len.eq(Mux(pk_raw, Mux(n_value != 0, 32, 0), n_value << lg_out[:2]))]

        bitpos = Signal(range(AW))           # next free bit in the word buffer
        wbuf = Signal(AW)
        wen = Signal(AW // 4)
        waddr = Signal(self._addr_bits + 1)
        pix_addr = Signal(32)                # first word of the current output pixel
        pass_bit = Signal(32)                # first bit of this pass within a pixel
        pix_count = Signal(32)

        # bits appended this cycle
        app_bits = Signal(32 * T)
        with m.If(pk_raw):
            vals = [o.payload.value for o in outs]
            sel = Signal(32)
            with m.Switch(sub):
                for t in range(T):
                    with m.Case(t):
                        m.d.comb += sel.eq(vals[t])
            m.d.comb += app_bits.eq(sel)
        with m.Else():
            codes = Signal(4 * T)
            with m.Switch(lg_out):
                for lg in range(3):
                    with m.Case(lg):
                        m.d.comb += codes.eq(Cat(*[o.payload.code[:1 << lg] for o in outs]))
            keep = Signal(4 * T)
            m.d.comb += [keep.eq(codes & ((Const(1, 4 * T + 1) << app_len) - 1)),
                         app_bits.eq(keep)]

        tail_pending = Signal()             # the pixel's last word still to write
        take = Signal()
        m.d.comb += take.eq(step_valid & ~tail_pending)
        for o in outs:
            m.d.comb += o.ready.eq(take & last_sub)
        status_sat = Signal()
        m.d.comb += status_sat.eq(Cat(*[o.payload.saturated for o in outs]).any())
        with m.If(take & last_sub & status_sat):
            m.d.sync += self.saturated.eq(1)

        merged = Signal(AW + 32 * T)
        m.d.comb += merged.eq(wbuf | (app_bits << bitpos))
        # nibbles touched by this append: [bitpos/4, (bitpos + app_len + 3)/4)
        nibbles = AW // 4 + 8 * T
        lo_n = Signal(range(nibbles + 1))
        hi_n = Signal(range(nibbles + 2))
        m.d.comb += [lo_n.eq(bitpos >> 2), hi_n.eq((bitpos + app_len + 3) >> 2)]
        nib_mask = Signal(nibbles)
        m.d.comb += nib_mask.eq(((Const(1, nibbles + 1) << hi_n) - 1) &
                                ~((Const(1, nibbles + 1) << lo_n) - 1))
        merged_en = Signal(nibbles)
        m.d.comb += merged_en.eq(wen | Mux(app_len != 0, nib_mask, 0))
        end = Signal(range(AW + 32 * T + 1))
        m.d.comb += end.eq(bitpos + app_len)
        # end >= AW and end > AW as bit tests (AW is a power of two): no comparator
        # carry chain behind the adder
        lg_aw = exact_log2(AW)
        end_fills, end_spills = Signal(), Signal()
        m.d.comb += [end_fills.eq(end[lg_aw:].any()),
                     end_spills.eq(end[lg_aw + 1:].any() | (end[lg_aw] & end[:lg_aw].any()))]
        flush = Signal()
        m.d.comb += flush.eq(take & last_sub & pixel_end)
        write_now = Signal()
        m.d.comb += write_now.eq(take & (end_fills | flush))
        pixel_advance = Signal()

        with m.If(run_start):
            load_ch_base(pass_ch, N_PASS)
            m.d.sync += [pix_addr.eq(d.out_base), pix_count.eq(0),
                         bitpos.eq(pass_bits & (AW - 1)),
                         waddr.eq(d.out_base + (pass_bits >> exact_log2(AW))),
                         pass_bit.eq(pass_bits), wbuf.eq(0), wen.eq(0),
                         tail_pending.eq(0)]
            m.d.comb += sub_sel.eq(SUB_ZERO)
        with m.Elif(tail_pending):
            m.d.sync += tail_pending.eq(0)
            m.d.comb += pixel_advance.eq(1)
        with m.Elif(take):
            # raw: app_len stays 32 while sub < n_valid - 1; a step's last sub is
            # followed by a load_ch_base (here or at the pixel advance)
            with m.If(~last_sub):
                m.d.comb += sub_sel.eq(SUB_INC)
            with m.Else():
                m.d.comb += sub_sel.eq(SUB_ZERO)
            with m.If(flush):
                with m.If(end_spills):
                    m.d.sync += [wbuf.eq(merged[AW:]), wen.eq(merged_en[AW // 4:]),
                                 waddr.eq(waddr + 1), tail_pending.eq(1)]
                with m.Else():
                    m.d.comb += pixel_advance.eq(1)
            with m.Else():
                with m.If(last_sub):
                    load_ch_base(ch_base + T, N_STEP)
                with m.If(end_fills):
                    m.d.sync += [wbuf.eq(merged[AW:]), wen.eq(merged_en[AW // 4:]),
                                 bitpos.eq(end - AW), waddr.eq(waddr + 1)]
                with m.Else():
                    m.d.sync += [wbuf.eq(merged[:AW]), wen.eq(merged_en[:AW // 4]),
                                 bitpos.eq(end)]
        with m.If(pixel_advance):
            next_pix = pix_addr + d.out_pixel_words
            m.d.sync += [
                wbuf.eq(0), wen.eq(0), pix_addr.eq(next_pix), pix_count.eq(pix_count + 1),
                bitpos.eq(pass_bit & (AW - 1)),
                waddr.eq(next_pix + (pass_bit >> exact_log2(AW))),
            ]
            load_ch_base(pass_ch, N_PASS)
        # pix_count == pix_last as a register: the pass's end then follows the word
        # end (bitpos + app_len) by one gate, not by a 32-bit comparison as well.
        # It compares with pix_last - 1 from a free-running register: yosys (abc9)
        # made pix_count + 1 == pix_last a chain of 30 LUTs.
        pix_final = Signal()
        pix_last_m1 = Signal.like(pix_count)
        m.d.sync += pix_last_m1.eq(dp["pix_last"] - 1)
        with m.If(run_start):
            m.d.sync += pix_final.eq(dp["pix_last"] == 0)
        with m.Elif(pixel_advance):
            m.d.sync += pix_final.eq(pix_count == pix_last_m1)
        m.d.comb += run_done.eq(pixel_advance & pix_final)
        pack_wr_data = Signal(AW)
        pack_wr_en = Signal(AW // 4)
        with m.If(tail_pending):
            m.d.comb += [pack_wr_data.eq(wbuf), pack_wr_en.eq(wen)]
        with m.Elif(write_now):
            m.d.comb += [pack_wr_data.eq(merged[:AW]), pack_wr_en.eq(merged_en[:AW // 4])]

        # -- activation memory ports ----------------------------------------------------------
        seq_idle = ~self.busy
        host_take = Signal()
        m.d.comb += [self.act.ready.eq(1), host_take.eq(self.act.valid)]
        host_ok = Signal()
        m.d.comb += host_ok.eq(seq_idle & (self.act.payload.addr < self._act_depth))
        in_pool = Signal()
        m.d.sync += in_pool.eq(Mux(pool_start, 1, Mux(pool.done, 0, in_pool)))
        m.d.comb += [pool.start.eq(pool_start), pool_done.eq(pool.done)]
        pl = Signal(pool.layer.shape())     # a registered copy, as the builder's
        m.d.comb += pool.layer.eq(pl)
        m.d.sync += [
            pl.in_base.eq(d.in_base), pl.out_base.eq(d.out_base), pl.in_h.eq(d.in_h),
            pl.in_w.eq(d.in_w), pl.pixel_words.eq(d.in_pixel_words),
            pl.lane.eq(storage_lane(d.x_type.bits)),
            pl.encoding.eq(d.x_type.encoding), pl.kh.eq(d.kh), pl.kw.eq(d.kw),
            pl.stride_h.eq(d.stride_h), pl.stride_w.eq(d.stride_w),
            pl.out_h.eq(d.out_h), pl.out_w.eq(d.out_w),
        ]
        m.d.comb += [pool.rd_data.eq(act_rd.data), builder.rd_data.eq(act_rd.data)]
        # The packer's writes pass a register on their way to the block RAMs, so a
        # word lands a cycle after the packer made it (sub -> the merged word -> the
        # write data of 32 block RAMs was 21.9 ns routed). Nothing reads a pass's
        # output that soon; the write port stays the packer's for that cycle.
        pk_wr_addr = Signal.like(act_wr.addr)
        pk_wr_data = Signal(AW)
        pk_wr_en = Signal(AW // 4)
        m.d.sync += [pk_wr_addr.eq(waddr), pk_wr_data.eq(pack_wr_data),
                     pk_wr_en.eq(Mux(self.busy & ~in_pool, pack_wr_en, 0))]
        pool_port = in_pool | pool_start            # the max-pool unit has the ports
        whole_word = (1 << (AW // 4)) - 1           # every nibble's write enable
        with m.If(pool_port):
            m.d.comb += [act_rd.addr.eq(pool.rd_addr), act_rd.en.eq(pool.rd_en)]
        with m.Elif(self.busy):
            # the builder keeps the word it reads: the block RAM reads every cycle,
            # and the builder's read enable does not fan out to its 32 slices
            m.d.comb += [act_rd.addr.eq(builder.rd_addr), act_rd.en.eq(1)]
        with m.Else():
            m.d.comb += [act_rd.addr.eq(self.act.payload.addr), act_rd.en.eq(1)]
        with m.If(pk_wr_en.any()):
            m.d.comb += [act_wr.addr.eq(pk_wr_addr), act_wr.data.eq(pk_wr_data),
                         act_wr.en.eq(pk_wr_en)]
        with m.Elif(pool_port):
            m.d.comb += [act_wr.addr.eq(pool.wr_addr), act_wr.data.eq(pool.wr_data),
                         act_wr.en.eq(Mux(pool.wr_en, whole_word, 0))]
        with m.Elif(~self.busy):
            m.d.comb += [act_wr.addr.eq(self.act.payload.addr), act_wr.data.eq(self.act.payload.data),
                         act_wr.en.eq(Mux(host_take & host_ok & self.act.payload.write,
                                          whole_word, 0))]
        resp_read = Signal()
        m.d.sync += [self.act_resp.valid.eq(host_take),
                     self.act_resp.payload.error.eq(host_take & ~host_ok),
                     resp_read.eq(host_take & host_ok & ~self.act.payload.write)]
        m.d.comb += self.act_resp.payload.data.eq(Mux(resp_read, act_rd.data, 0))

        # -- host access to the tile arrays (the sequencer drives them while busy) ------
        tb = self.tile_bus
        tile_sel = tb.payload.addr[self._tile_addr_bits:]
        tile_ok = Signal()
        m.d.comb += [tb.ready.eq(1), tile_ok.eq(seq_idle & (tile_sel < T))]
        with m.If(seq_idle):
            for t in range(T):
                m.d.sync += [
                    tile_req_valid[t].eq(tb.valid & tile_ok & (tile_sel == t)),
                    tile_req[t].addr.eq(tb.payload.addr[:self._tile_addr_bits]),
                    tile_req[t].write.eq(tb.payload.write),
                    tile_req[t].data.eq(tb.payload.data),
                ]
        # the tile answers the cycle after it takes the registered request; its answer
        # is registered next to it (the block RAMs' slow output and the tile's word
        # select then end in a register, not in the far end of the host window)
        req_valid, req_refused = Signal(), Signal()
        req_tile = Signal.like(tile_sel)
        m.d.sync += [req_valid.eq(tb.valid), req_refused.eq(tb.valid & ~tile_ok),
                     req_tile.eq(tile_sel)]
        ans_valid, ans_refused = Signal(), Signal()
        ans_tile = Signal.like(tile_sel)
        m.d.sync += [ans_valid.eq(req_valid), ans_refused.eq(req_refused), ans_tile.eq(req_tile)]
        ans = [Signal.like(tile_resp.payload, name=f"tile_ans{t}")
               for t, tile_resp in enumerate(tiles.bus_resp)]
        m.d.sync += [a.eq(tile_resp.payload) for a, tile_resp in zip(ans, tiles.bus_resp)]
        resp_tile = Signal.like(tile_sel)
        refused = Signal()
        m.d.sync += [self.tile_bus_resp.valid.eq(ans_valid), refused.eq(ans_refused),
                     resp_tile.eq(ans_tile)]
        with m.Switch(resp_tile):
            for t, a in enumerate(ans):
                with m.Case(t):
                    m.d.comb += [self.tile_bus_resp.payload.data.eq(a.data),
                                 self.tile_bus_resp.payload.error.eq(refused | a.error)]
            with m.Default():
                m.d.comb += self.tile_bus_resp.payload.error.eq(1)
        return m
