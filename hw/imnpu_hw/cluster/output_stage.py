"""The per-channel output stage (ARCHITECTURE.md section 1, "Output stage").

For each accumulator::

    t = sat32(acc + bias)
    p = t * mult                                   # exact, 48-bit
    q = p >> shift                 if shift == 0
    q = (p + (1 << (shift-1))) >> shift            else: round half up, arithmetic
    q = max(q, 0)                  if relu
    y = clamp(q, lo, hi)           lo, hi of the output type
    y = +1 if q >= 0 else -1       for a bipolar output
    y = t                          for a raw int32 output

The rounding shift is computed as ``x = (2 * p) >> shift`` and
``q = (x >> 1) + x[0]``: bit 0 of ``x`` is bit ``shift - 1`` of ``p`` (0 for
``shift == 0``), and ``(p + 2**(s-1)) >> s == (p >> s) + p[s-1]``. Every
output range lies within -16 .. 15, so only the 6-bit window ``x[0:6]`` is
shifted out of ``p`` (a logarithmic shifter that keeps, after each step, just
the bits the later steps can still bring into the window), with two sticky
bits: whether ``y = p >> shift`` is all 0 or all 1 above its 5 low bits. Then
``q = 32 * yh + r5`` with ``r5 = x[1:6] + x[0]`` (0 .. 32) and ``yh`` 0, -1,
above 0 or below -1, which decides the sign, the clamps and the low bits
without a 48-bit shifter or adder (on the ECP5, 386 LUT slots per stage in
place of 614). A raw output runs ``t`` through the multiplier with
``mult = 1``, ``shift = 0`` and no ReLU, and takes ``p[:32] == t``.

The 32 x 16 multiply is two 16 x 16 partial products (one DSP multiplier
each on an FPGA), ``t[16:] * mult`` and ``t[:16] * mult``, summed as
``(hi << 16) + lo``. The datapath is cut into up to seven stages by pipeline
registers::

    acc + bias, saturate  |T|  (copy)  |D|  partial products  |M|  their sum  |P|
    (2p) >> shift  |S|  round, ReLU  |Q|  clamp, sign, lane code  |out|

``pipeline_depth`` selects the cuts: 1 = out; 2 = P, out; 3 = T, P, out (the
32 x 16 multiply alone in its stage); 4 = T, P, S, out; 5 = T, M, P, S, out
(the multipliers alone in their stage); 6 = T, D, M, P, S, out (D copies the
multiplier operands into registers that feed nothing else, so that a placer
puts them beside the DSP: the FPGA's DSP blocks sit in rows of their own, and
the T -> DSP -> M path was the `fpga` self-test's worst, 22 ns); 7 = all.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out
from ..params import positive_int

from .accumulator import saturate

__all__ = [
    "OutputKind", "OutputStage", "OutputStageInput", "OutputStageOutput",
    "SHIFT_MAX", "MAX_PIPELINE_DEPTH", "LEGAL_OUT_BITS", "output_lane_width",
]

SHIFT_MAX = 47
MAX_PIPELINE_DEPTH = 7

# Register cuts for each pipeline depth (the output register is always there).
_CUTS = {
    1: (),
    2: ("P",),
    3: ("T", "P"),
    4: ("T", "P", "S"),
    5: ("T", "M", "P", "S"),
    6: ("T", "D", "M", "P", "S"),
    7: ("T", "D", "M", "P", "S", "Q"),
}


class OutputKind(enum.Enum, shape=2):
    """Kind of an output feature (ARCHITECTURE.md section 1).

    The codes match :class:`imnpu_hw.macro.LaneEncoding` for the three lane
    encodings; ``RAW32`` writes ``t = sat32(acc + bias)`` unchanged (final
    logits).
    """
    UNSIGNED = 0
    SIGNED = 1
    BIPOLAR = 2
    RAW32 = 3


#: Legal ``out_bits`` for each kind; ``RAW32`` ignores ``out_bits``.
LEGAL_OUT_BITS = {
    OutputKind.SIGNED: (2, 3, 4),
    OutputKind.UNSIGNED: (1, 2, 3, 4),
    OutputKind.BIPOLAR: (1,),
    OutputKind.RAW32: tuple(range(8)),
}


def output_lane_width(bits):
    """Storage lane width ``L`` of a ``bits``-wide output: 1, 2, 4, 4 for 1..4."""
    if bits not in (1, 2, 3, 4):
        raise ValueError(f"bits must be 1..4, not {bits!r}")
    return {1: 1, 2: 2, 3: 4, 4: 4}[bits]


def OutputStageInput(tag_width):
    """Payload of :attr:`OutputStage.inp`: one accumulator and its channel's parameters."""
    return data.StructLayout({
        "acc": signed(32),              # saturated int32 accumulator
        "bias": signed(32),
        "mult": signed(16),
        "shift": unsigned(6),           # legal 0..47
        "relu": unsigned(1),
        "out_kind": OutputKind,
        "out_bits": unsigned(3),        # legal: see LEGAL_OUT_BITS
        "tag": unsigned(tag_width),     # passed through unchanged
    })


def OutputStageOutput(tag_width):
    """Payload of :attr:`OutputStage.out`."""
    return data.StructLayout({
        "value": signed(32),            # y (RAW32: t; BIPOLAR: +1/-1); 0 on error
        "code": unsigned(4),            # lane code of y; 0 for RAW32 and on error
        "saturated": unsigned(1),       # acc + bias saturated
        "error": unsigned(1),           # shift > 47 or out_bits illegal for out_kind
        "tag": unsigned(tag_width),
    })


def _narrow_shift(m, x, shift, width):
    """``(x >> shift)[:width]`` and whether the bits of ``x >> shift`` above
    them are all 0 (``any`` low) or all 1 (``all`` high); ``x`` signed.

    A logarithmic shifter from the largest step down that keeps only the bits
    the remaining steps can still bring into the window: ``width + 2**k - 1``
    after step ``k``, 93 two-input muxes for a 6-bit window of a 6-bit shift in
    place of a full 49-bit barrel shifter. The bits a step leaves above the
    window go into the two sticky bits.
    """
    steps = len(shift)
    v = [x[min(i, len(x) - 1)] for i in range(width + (1 << steps) - 1)]
    sticky_any, sticky_all = [], []
    for k in reversed(range(steps)):
        a = 1 << k
        keep = len(v) - a
        sel = shift[k]
        dropped = Cat(*v[keep:])            # above the window if this step does not shift
        sticky_any.append(~sel & dropped.any())
        sticky_all.append(sel | dropped.all())
        nxt = []
        for i in range(keep):
            bit = Signal(name=f"sh{k}_{i}")
            m.d.comb += bit.eq(Mux(sel, v[i + a], v[i]))
            nxt.append(bit)
        v = nxt
    return Cat(*v), Cat(*sticky_any).any(), Cat(*sticky_all).all()


class OutputStage(wiring.Component):
    """Pipelined per-channel output stage: bias, multiplier, rounding shift, ReLU, clamp.

    Parameters
    ----------
    tag_width : int
        Width of the ``tag`` field passed through with each result (channel,
        pixel index, ...), at least 1.
    pipeline_depth : int
        Register stages, 1 .. :data:`MAX_PIPELINE_DEPTH` (7); the latency in
        cycles. From 3 on the 32 x 16 multiply has a stage of its own (from 5
        on the partial products have one, and their sum another; from 6 on the
        multiplier operands are copied into registers of their own first); at
        2 the product is registered and the bias addition shares its stage.

    Members
    -------
    inp : ``In(stream.Signature(OutputStageInput(tag_width)))``
        One accumulator with its channel's ``bias``, ``mult``, ``shift``,
        ``relu`` and output type (``out_kind``, ``out_bits``). One a cycle.
    out : ``Out(stream.Signature(OutputStageOutput(tag_width)))``
        Results in input order, ``pipeline_depth`` cycles after acceptance when
        not stalled. ``value`` is ``y`` as a signed integer; ``code`` is ``y``
        as a lane code at the storage lane width of ``out_bits`` (1 -> 1 bit,
        2 -> 2 bits, 3 and 4 -> 4 bits): two's complement for ``SIGNED``, the
        value for ``UNSIGNED``, 1 for +1 and 0 for -1 for ``BIPOLAR``, 0 for
        ``RAW32``. ``saturated`` reports that ``acc + bias`` saturated (OR it
        into the sticky status flag; clamping to the output type does not set
        it). ``error`` marks ``shift > 47`` or an ``out_bits`` the kind does not
        have (``SIGNED`` 2..4, ``UNSIGNED`` 1..4, ``BIPOLAR`` 1; ``RAW32`` ignores
        it); ``value`` and ``code`` are then 0. A stalled ``out`` stalls the
        whole pipeline (``inp.ready = ~out.valid | out.ready``).
    busy : ``Out(1)``
        A result is in flight or waiting in ``out``.
    """

    def __init__(self, *, tag_width=8, pipeline_depth=3):
        positive_int("tag_width", tag_width)
        positive_int("pipeline_depth", pipeline_depth)
        if pipeline_depth > MAX_PIPELINE_DEPTH:
            raise ValueError(
                f"pipeline_depth must be 1..{MAX_PIPELINE_DEPTH}, not {pipeline_depth}")
        self._tag_width = tag_width
        self._pipeline_depth = pipeline_depth
        super().__init__({
            "inp": In(stream.Signature(OutputStageInput(tag_width))),
            "out": Out(stream.Signature(OutputStageOutput(tag_width))),
            "busy": Out(1),
        })

    tag_width = property(lambda self: self._tag_width)
    pipeline_depth = property(lambda self: self._pipeline_depth)
    latency = property(lambda self: self._pipeline_depth)

    def elaborate(self, platform):
        m = Module()
        cuts = _CUTS[self._pipeline_depth]

        advance = Signal()
        m.d.comb += [
            advance.eq(~self.out.valid | self.out.ready),
            self.inp.ready.eq(advance),
        ]

        valids = []

        def stage(name, **values):
            """Register ``values`` (and their valid) at cut ``name`` if it is one."""
            if name not in cuts:
                return values
            regs = {}
            for key, value in values.items():
                reg = Signal(value.shape(), name=f"{name.lower()}_{key}")
                with m.If(advance):
                    m.d.sync += reg.eq(value)
                regs[key] = reg
            valids.append(regs["valid"])
            return regs

        inp = self.inp.payload
        kind, bits = inp.out_kind, inp.out_bits
        raw = kind == OutputKind.RAW32

        # -- parameter check ------------------------------------------------
        bits_bad = Signal()
        with m.Switch(kind):
            for k in (OutputKind.SIGNED, OutputKind.UNSIGNED, OutputKind.BIPOLAR):
                with m.Case(k):
                    lo, hi = min(LEGAL_OUT_BITS[k]), max(LEGAL_OUT_BITS[k])
                    m.d.comb += bits_bad.eq((bits < lo) | (bits > hi))
        error = Signal()
        m.d.comb += error.eq((inp.shift > SHIFT_MAX) | bits_bad)

        ctl = dict(valid=self.inp.valid, tag=inp.tag, error=error,
                   kind=Signal(OutputKind, name="in_kind"), bits=inp.out_bits)
        m.d.comb += ctl["kind"].eq(kind)

        # -- t = sat32(acc + bias); raw outputs take mult 1, shift 0, no ReLU
        t, sat = saturate(inp.acc + inp.bias, 32)
        s = stage("T", t=t, saturated=sat,
                  mult=Mux(raw, 1, inp.mult).as_signed(),
                  shift=Mux(raw, 0, inp.shift), relu=inp.relu & ~raw, **ctl)

        ctl = {k: s[k] for k in ("valid", "tag", "error", "kind", "bits")}
        s = stage("D", t=s["t"], mult=s["mult"], shift=s["shift"], relu=s["relu"],
                  saturated=s["saturated"], **ctl)

        # -- p = t * mult, exact 48 bits, from two 16 x 16 partial products --
        pp_hi = Signal(signed(32))      # t[16:] (signed) * mult
        pp_lo = Signal(signed(33))      # t[:16] (unsigned) * mult
        m.d.comb += [pp_hi.eq(s["t"][16:].as_signed() * s["mult"]),
                     pp_lo.eq(s["t"][:16] * s["mult"])]
        ctl = {k: s[k] for k in ("valid", "tag", "error", "kind", "bits")}
        s = stage("M", hi=pp_hi, lo=pp_lo, shift=s["shift"], relu=s["relu"],
                  saturated=s["saturated"], **ctl)
        product = Signal(signed(48))
        m.d.comb += product.eq((s["hi"] << 16) + s["lo"])
        ctl = {k: s[k] for k in ("valid", "tag", "error", "kind", "bits")}
        s = stage("P", p=product, shift=s["shift"], relu=s["relu"],
                  saturated=s["saturated"], **ctl)

        # -- x = (2p) >> shift, as a window and two sticky bits ---------------
        # Only the window x[0:6] (x[0] = p[shift-1], the rounding bit; x[1:6] the
        # low bits of y = p >> shift) and whether the bits of y above it are all 0
        # or all 1 decide the result (see _narrow_shift); a raw output is p[:32].
        window, above_any, above_all = _narrow_shift(m, Cat(Const(0, 1), s["p"]).as_signed(),
                                                     s["shift"], 6)
        ctl = {k: s[k] for k in ("valid", "tag", "error", "kind", "bits")}
        s = stage("S", window=window, above_any=above_any, above_all=above_all,
                  sign=s["p"][-1], raw=s["p"][:32], relu=s["relu"],
                  saturated=s["saturated"], **ctl)

        # -- q = y + x[0] (round half up), then ReLU --------------------------
        # y = 32 * yh + low with low = x[1:6]; yh is 0 (above_any low), -1
        # (above_all high), above 0 or below -1; q = 32 * yh + r5 with r5 = low +
        # x[0] in 0 .. 32, so q[:5] is r5[:5] whenever q is in an output range
        r5 = Signal(6)
        m.d.comb += r5.eq(s["window"][1:] + s["window"][0])
        pos_big = ~s["sign"] & s["above_any"]           # q >= 32
        neg_big = s["sign"] & ~s["above_all"]           # q <= -32
        hi_zero, hi_ones = ~s["above_any"], s["above_all"]
        q_neg = neg_big | (hi_ones & ~r5[5])
        zero = s["relu"] & q_neg                        # ReLU: q is 0
        ctl = {k: s[k] for k in ("valid", "tag", "error", "kind", "bits")}
        s = stage("Q", r5=Mux(zero, 0, r5), pos_big=pos_big & ~zero, neg_big=neg_big & ~zero,
                  hi_zero=hi_zero | zero, hi_ones=hi_ones & ~zero, neg=q_neg & ~zero,
                  raw=s["raw"], saturated=s["saturated"], **ctl)

        # -- clamp / sign / raw, lane code ----------------------------------
        r5 = s["r5"]

        def at_least(k):
            """q >= 2**k (k <= 4)."""
            return s["pos_big"] | (s["hi_zero"] & r5[k:].any())

        def below(k):
            """q < -2**k (k <= 4)."""
            return s["neg_big"] | (s["hi_ones"] & (r5 < 32 - (1 << k)))

        neg = s["neg"]
        value = Signal(signed(32))
        code = Signal(4)
        with m.Switch(s["kind"]):
            with m.Case(OutputKind.SIGNED):
                with m.Switch(s["bits"]):
                    for b in LEGAL_OUT_BITS[OutputKind.SIGNED]:
                        with m.Case(b):
                            hi, lo = (1 << (b - 1)) - 1, -(1 << (b - 1))
                            m.d.comb += value.eq(
                                Mux(at_least(b - 1), hi,
                                    Mux(below(b - 1), lo, r5[:b].as_signed())))
                            lane = output_lane_width(b)
                            m.d.comb += code.eq(value[:lane])
            with m.Case(OutputKind.UNSIGNED):
                with m.Switch(s["bits"]):
                    for b in LEGAL_OUT_BITS[OutputKind.UNSIGNED]:
                        with m.Case(b):
                            hi = (1 << b) - 1
                            m.d.comb += value.eq(
                                Mux(neg, 0, Mux(at_least(b), hi, r5[:b])))
                            m.d.comb += code.eq(value[:b])
            with m.Case(OutputKind.BIPOLAR):
                m.d.comb += [value.eq(Mux(neg, -1, 1)), code.eq(~neg)]
            with m.Case(OutputKind.RAW32):
                m.d.comb += value.eq(s["raw"])  # p == t, already int32

        with m.If(advance):
            m.d.sync += [
                self.out.valid.eq(s["valid"]),
                self.out.payload.value.eq(Mux(s["error"], 0, value)),
                self.out.payload.code.eq(Mux(s["error"], 0, code)),
                self.out.payload.saturated.eq(s["saturated"]),
                self.out.payload.error.eq(s["error"]),
                self.out.payload.tag.eq(s["tag"]),
            ]
        m.d.comb += self.busy.eq(Cat(*valids, self.out.valid).any())
        return m
