"""The cluster's saturating accumulator and output stage in Amaranth's simulator.

Every expected value comes from the numpy reference (:mod:`imnpu_ref`):
``OutputStage(...).apply`` for ``y`` and the bias saturation flag, ``encode``
and ``lane_format`` for the lane code, ``sat32`` and ``accumulate`` for the
int32 saturation. Which ``out_bits`` are legal for a kind is what
``OperandType`` accepts. Set ``IMNPU_SEED`` to replay another seed.
"""

import os

import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

import imnpu_ref as ref
from imnpu_hw.cluster import (
    MAX_PIPELINE_DEPTH, OutputKind, OutputStage, SaturatingAdd, saturate, saturating_add)

SEED = int(os.environ.get("IMNPU_SEED", "20240611"))

INT32_MIN, INT32_MAX = ref.INT32_MIN, ref.INT32_MAX
OUT_TYPES = ["signed2", "signed3", "signed4", "unsigned1", "unsigned2", "unsigned3",
             "unsigned4", "bipolar1", "int32"]
KIND_OF_ENCODING = {ref.Encoding.SIGNED: OutputKind.SIGNED,
                    ref.Encoding.UNSIGNED: OutputKind.UNSIGNED,
                    ref.Encoding.BIPOLAR: OutputKind.BIPOLAR}
ENCODING_OF_KIND = {v: k for k, v in KIND_OF_ENCODING.items()}
MULT_CORNERS = (ref.MULT_MIN, -1, 0, 1, ref.MULT_MAX)
INT32_CORNERS = (INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX)


# --------------------------------------------------------------------------
# payload packing
# --------------------------------------------------------------------------

def pack(layout, **fields):
    """The bits of a ``StructLayout`` value from field integers (enums by value)."""
    bits = 0
    for name, field in layout:
        value = fields[name]
        value = value.value if isinstance(value, OutputKind) else int(value)
        bits |= (value & ((1 << field.width) - 1)) << field.offset
    return bits


def unpack(layout, bits):
    out = {}
    for name, field in layout:
        value = (bits >> field.offset) & ((1 << field.width) - 1)
        if field.shape.signed and value >> (field.width - 1):
            value -= 1 << field.width
        out[name] = value
    return out


# --------------------------------------------------------------------------
# reference expectation of one transaction
# --------------------------------------------------------------------------

def kind_and_bits(out):
    """``(OutputKind, out_bits)`` of an ``OUT_TYPES`` name."""
    if out == "int32":
        return OutputKind.RAW32, 0
    t = ref.OperandType.parse(out)
    return KIND_OF_ENCODING[t.encoding], t.bits


def out_type_of(kind, bits):
    """``"int32"``, an ``OperandType``, or ``None`` if the reference rejects it."""
    if kind is OutputKind.RAW32:
        return "int32"
    try:
        return ref.OperandType(bits, ENCODING_OF_KIND[kind])
    except ValueError:
        return None


def expected(txn):
    acc, bias = txn["acc"], txn["bias"]
    total = acc + bias
    saturated = int(int(ref.sat32(total)) != total)
    out = out_type_of(txn["out_kind"], txn["out_bits"])
    if out is None or txn["shift"] > ref.SHIFT_MAX:
        return dict(value=0, code=0, saturated=saturated, error=1, tag=txn["tag"])
    stage = ref.OutputStage(bias=bias, mult=txn["mult"], shift=txn["shift"],
                            relu=bool(txn["relu"]), out=out)
    y, sat = stage.apply([acc])
    y = int(y[0])
    if out == "int32":
        code = 0
    else:
        lane, enc, _ = ref.lane_format(out, out)
        code = int(ref.encode([y], lane, enc)[0])
    return dict(value=y, code=code, saturated=int(sat), error=0, tag=txn["tag"])


# --------------------------------------------------------------------------
# stimulus
# --------------------------------------------------------------------------

def _int32(rng):
    r = rng.random()
    if r < 0.3:
        return int(rng.choice(INT32_CORNERS))
    if r < 0.6:
        return int(rng.integers(-5000, 5001))
    return int(rng.integers(INT32_MIN, INT32_MAX, endpoint=True))


def _legal(kind, rng):
    if kind is OutputKind.RAW32:
        return int(rng.integers(0, 8))          # ignored
    return int(rng.choice([b for b in range(8) if out_type_of(kind, b) is not None]))


def random_txn(rng, tag):
    kind = OutputKind(int(rng.integers(0, 4)))
    bits = int(rng.integers(0, 8)) if rng.random() < 0.1 else _legal(kind, rng)
    acc, bias = _int32(rng), _int32(rng)
    mult = (int(rng.choice(MULT_CORNERS)) if rng.random() < 0.3
            else int(rng.integers(ref.MULT_MIN, ref.MULT_MAX, endpoint=True)))
    r = rng.random()
    if r < 0.05:
        shift = int(rng.integers(ref.SHIFT_MAX + 1, 64))        # illegal
    elif r < 0.5:
        # Aim q at the output range, so rounding and clamping both matter.
        p = int(ref.sat32(acc + bias)) * mult
        shift = int(np.clip(abs(p).bit_length() - int(rng.integers(0, 6)), 0, ref.SHIFT_MAX))
    else:
        shift = int(rng.integers(0, ref.SHIFT_MAX + 1))
    return dict(acc=acc, bias=bias, mult=mult, shift=shift, relu=int(rng.integers(0, 2)),
                out_kind=kind, out_bits=bits, tag=tag)


def corner_txns(rng, tag0):
    """Every output type x ReLU x corner shift x corner mult, int32-corner operands."""
    txns = []
    for out in OUT_TYPES:
        kind, bits = kind_and_bits(out)
        for relu in (0, 1):
            for shift in (0, 1, 2, 31, 46, 47):
                for mult in MULT_CORNERS:
                    txns.append(dict(
                        acc=int(rng.choice(INT32_CORNERS)), bias=int(rng.choice(INT32_CORNERS)),
                        mult=mult, shift=shift, relu=relu, out_kind=kind, out_bits=bits,
                        tag=tag0 + len(txns)))
    # Every legal shift for every output type, random operands.
    for shift in range(ref.SHIFT_MAX + 1):
        for out in OUT_TYPES:
            txn = random_txn(rng, tag0 + len(txns))
            txn["shift"] = shift
            txn["out_kind"], txn["out_bits"] = kind_and_bits(out)
            if out == "int32":
                txn["out_bits"] = 4             # ignored by a raw output
            txns.append(txn)
    # Saturation both ways, and the round-half-up boundary for both signs.
    for acc, bias in ((INT32_MAX, INT32_MAX), (INT32_MIN, INT32_MIN), (INT32_MAX, 1),
                      (INT32_MIN, -1), (INT32_MAX, INT32_MIN), (3, 0), (-3, 0), (5, 0), (-5, 0)):
        for shift in (0, 1, 2, 46, 47):
            txns.append(dict(acc=acc, bias=bias, mult=1, shift=shift, relu=0,
                             out_kind=OutputKind.SIGNED, out_bits=4, tag=tag0 + len(txns)))
    return txns


# --------------------------------------------------------------------------
# simulation
# --------------------------------------------------------------------------

def run_stream(dut, txns, rng, gap=0.3, stall=0.3):
    """Drive ``txns`` with random input gaps and output backpressure.

    Returns the unpacked outputs in arrival order.
    """
    in_layout = dut.inp.payload.shape()
    out_layout = dut.out.payload.shape()
    packed = [pack(in_layout, **t) for t in txns]
    received = []

    async def bench(ctx):
        index, holding, cycles = 0, False, 0
        while len(received) < len(txns):
            cycles += 1
            assert cycles < 10 * len(txns) + 100, "output stage hung"
            if not holding and index < len(txns):
                holding = rng.random() >= gap      # a stream keeps valid until taken
            ctx.set(dut.inp.valid, holding)
            if holding:
                ctx.set(dut.inp.payload.as_value(), packed[index])
            ready = rng.random() >= stall
            ctx.set(dut.out.ready, ready)
            if ctx.get(dut.out.valid) and ready:
                received.append(unpack(out_layout, ctx.get(dut.out.payload.as_value())))
            if holding and ctx.get(dut.inp.ready):
                index += 1
                holding = False
            await ctx.tick()
        ctx.set(dut.inp.valid, 0)
        ctx.set(dut.out.ready, 1)
        for _ in range(dut.pipeline_depth + 1):
            await ctx.tick()
        assert not ctx.get(dut.out.valid) and not ctx.get(dut.busy)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return received


def check(txns, received):
    assert len(received) == len(txns)
    errors = []
    for txn, got in zip(txns, received):
        want = expected(txn)
        if got != want:
            errors.append(f"{txn}: got {got}, expected {want}")
    assert not errors, f"{len(errors)} mismatches, first: {errors[:3]}"


@pytest.mark.parametrize("depth", range(1, MAX_PIPELINE_DEPTH + 1))
def test_random_against_reference(depth):
    seed = SEED + depth
    print(f"seed {seed} (IMNPU_SEED={SEED})")
    rng = np.random.default_rng(seed)
    tag_width = 12
    txns = corner_txns(rng, 0)
    txns += [random_txn(rng, 0) for _ in range(1500)]
    order = rng.permutation(len(txns))
    txns = [dict(txns[i], tag=n % (1 << tag_width)) for n, i in enumerate(order)]
    dut = OutputStage(tag_width=tag_width, pipeline_depth=depth)
    received = run_stream(dut, txns, rng)
    check(txns, received)
    # The stimulus really covered what it should.
    kinds = {(t["out_kind"], t["out_bits"]) for t in txns
             if t["shift"] <= ref.SHIFT_MAX and out_type_of(t["out_kind"], t["out_bits"])}
    assert len({k for k, b in kinds if k is not OutputKind.RAW32} | {OutputKind.RAW32}) == 4
    assert len(kinds - {k for k in kinds if k[0] is OutputKind.RAW32}) == 8
    assert {t["shift"] for t in txns} >= set(range(ref.SHIFT_MAX + 1))
    assert any(r["error"] for r in received) and any(r["saturated"] for r in received)
    assert {t["acc"] + t["bias"] > INT32_MAX for t in txns} == {True, False}
    assert any(t["acc"] + t["bias"] < INT32_MIN for t in txns)


def rounding_window_txns(rng, tag0):
    """Quotients ``q`` from -70 to 70 at the edges of the stage's 5-bit window.

    The stage keeps only ``(2p >> shift)[:6]`` and whether ``p >> shift`` is 0
    or -1 above it (``_narrow_shift``); ``q = 32 * yh + r5``. Every ``y = p >>
    shift`` from -70 to 70 (around 0, +-16 and +-32), with the rounding bit 0 and
    1 and the bits below it 0 or all 1, every output type, with and without
    ReLU, at shifts 1, 2, 5, 13 and 30 (``t * 1`` = ``y << shift | rest``).
    """
    txns = []
    for shift in (1, 2, 5, 13, 30):
        for y in range(-70, 71):
            for low in {0, (1 << (shift - 1)) - 1, 1 << (shift - 1), (1 << shift) - 1}:
                t = (y << shift) | low
                if not INT32_MIN <= t <= INT32_MAX:
                    continue
                kind, bits = kind_and_bits(OUT_TYPES[int(rng.integers(0, len(OUT_TYPES)))])
                txns.append(dict(acc=t, bias=0, mult=1, shift=shift,
                                 relu=int(rng.integers(0, 2)), out_kind=kind, out_bits=bits,
                                 tag=tag0 + len(txns)))
    return txns


@pytest.mark.parametrize("depth", (1, 6))
def test_rounding_window_edges(depth):
    seed = SEED + 50 + depth
    print(f"seed {seed} (IMNPU_SEED={SEED})")
    rng = np.random.default_rng(seed)
    tag_width = 14
    txns = [dict(t, tag=n % (1 << tag_width))
            for n, t in enumerate(rounding_window_txns(rng, 0))]
    received = run_stream(OutputStage(tag_width=tag_width, pipeline_depth=depth), txns, rng)
    check(txns, received)
    # both clamp directions and in-range values came out of every signed / unsigned width
    values = {r["value"] for r in received}
    assert {-8, -2, 0, 1, 3, 7, 15} <= values


def test_illegal_parameters_give_error():
    rng = np.random.default_rng(SEED)
    txns = []
    for kind in OutputKind:
        for bits in range(8):
            for shift in (0, 47, 48, 63):
                txns.append(dict(acc=int(rng.integers(-1000, 1000)), bias=INT32_MAX, mult=7,
                                 shift=shift, relu=0, out_kind=kind, out_bits=bits,
                                 tag=len(txns) % 2))
    dut = OutputStage(tag_width=1, pipeline_depth=2)
    received = run_stream(dut, txns, rng, gap=0.0, stall=0.0)
    check(txns, received)
    errors = {(t["out_kind"], t["out_bits"], t["shift"]) for t, r in zip(txns, received)
              if r["error"]}
    assert (OutputKind.SIGNED, 1, 0) in errors and (OutputKind.BIPOLAR, 2, 0) in errors
    assert (OutputKind.UNSIGNED, 0, 0) in errors and (OutputKind.RAW32, 0, 48) in errors
    assert (OutputKind.RAW32, 5, 47) not in errors and (OutputKind.SIGNED, 4, 47) not in errors


@pytest.mark.parametrize("depth", range(1, MAX_PIPELINE_DEPTH + 1))
def test_latency_and_throughput(depth):
    """First result ``pipeline_depth`` cycles after acceptance, then one a cycle."""
    dut = OutputStage(tag_width=8, pipeline_depth=depth)
    assert dut.latency == depth
    layout = dut.inp.payload.shape()
    n = 20
    seen = []

    async def bench(ctx):
        ctx.set(dut.out.ready, 1)
        for cycle in range(n + depth + 3):
            ctx.set(dut.inp.valid, cycle < n)
            ctx.set(dut.inp.payload.as_value(), pack(
                layout, acc=cycle, bias=0, mult=1, shift=0, relu=0,
                out_kind=OutputKind.RAW32, out_bits=0, tag=cycle))
            if cycle < n:
                assert ctx.get(dut.inp.ready)
            if ctx.get(dut.out.valid):
                seen.append((cycle, ctx.get(dut.out.payload.tag), ctx.get(dut.out.payload.value)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [(depth + i, i, int(ref.sat32(i))) for i in range(n)]


# --------------------------------------------------------------------------
# accumulator helper
# --------------------------------------------------------------------------

class _Accumulator(wiring.Component):
    """A saturating int32 register with a sticky flag, built on SaturatingAdd."""

    def __init__(self, partial_width):
        self.adder = SaturatingAdd(partial_width)
        super().__init__({"partial": In(signed(partial_width)), "en": In(1), "clear": In(1),
                          "acc": Out(signed(32)), "sticky": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.adder = self.adder
        m.d.comb += [self.adder.acc.eq(self.acc), self.adder.partial.eq(self.partial)]
        with m.If(self.clear):
            m.d.sync += [self.acc.eq(0), self.sticky.eq(0)]
        with m.Elif(self.en):
            m.d.sync += [self.acc.eq(self.adder.sum),
                         self.sticky.eq(self.sticky | self.adder.overflow)]
        return m


def _sequences(rng, width):
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    seqs = [
        [hi] * 6 + [lo] * 12 + [hi] * 3,
        [lo, lo, hi, hi, 1, -1, 0],
        [INT32_MAX if INT32_MAX <= hi else hi] * 3 + [-1, 1, 1],
        [max(lo, INT32_MIN)] * 3 + [1, -1, -1],
        [0, 0, 0],
    ]
    for _ in range(12):
        n = int(rng.integers(1, 20))
        if rng.random() < 0.5:
            seqs.append([int(v) for v in rng.integers(lo, hi, size=n, endpoint=True)])
        else:
            seqs.append([int(rng.choice([lo, hi, lo + 1, hi - 1, 0, 1, -1]))
                         for _ in range(n)])
    return [[min(max(v, lo), hi) for v in seq] for seq in seqs]   # fit narrow widths


@pytest.mark.parametrize("width", [1, 20, 32, 63])
def test_accumulator_matches_reference(width):
    seed = SEED + 100 + width
    print(f"seed {seed} (IMNPU_SEED={SEED})")
    rng = np.random.default_rng(seed)
    dut = _Accumulator(width)
    errors = []

    async def bench(ctx):
        for seq in _sequences(rng, width):
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            ctx.set(dut.en, 1)
            for k, partial in enumerate(seq):
                ctx.set(dut.partial, partial)
                await ctx.tick()
                acc, sat = ref.accumulate(np.array(seq[:k + 1], dtype=np.int64))
                got = (ctx.get(dut.acc), ctx.get(dut.sticky))
                if got != (int(acc), int(sat)):
                    errors.append(f"{seq[:k + 1]}: got {got}, expected {(int(acc), sat)}")
            ctx.set(dut.en, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not errors, errors[:3]


def test_saturate_expressions():
    """saturate/saturating_add on narrow, wide, signed and unsigned operands."""
    rng = np.random.default_rng(SEED)
    a = Signal(signed(32))
    b = Signal(signed(40))
    u = Signal(40)
    n = Signal(signed(8))
    m = Module()
    outs = {name: (Signal(signed(32), name=f"{name}_v"), Signal(name=f"{name}_o"))
            for name in ("add", "u", "n", "a")}
    for name, (value, overflow) in {"add": saturating_add(a, b), "u": saturate(u),
                                     "n": saturate(n), "a": saturate(a)}.items():
        m.d.comb += [outs[name][0].eq(value), outs[name][1].eq(overflow)]

    def sat(x):
        y = int(ref.sat32(x))
        return y, int(y != x)

    async def bench(ctx):
        for _ in range(200):
            va = int(rng.choice([INT32_MIN, INT32_MAX, int(rng.integers(INT32_MIN, INT32_MAX))]))
            vb = int(rng.choice([-(1 << 39), (1 << 39) - 1, int(rng.integers(-(1 << 39), 1 << 39))]))
            vu = int(rng.choice([0, (1 << 40) - 1, INT32_MAX, INT32_MAX + 1,
                                 int(rng.integers(0, 1 << 40))]))
            vn = int(rng.integers(-128, 128))
            for sig, v in ((a, va), (b, vb), (u, vu), (n, vn)):
                ctx.set(sig, v)
            for name, x in (("add", va + vb), ("u", vu), ("n", vn), ("a", va)):
                assert (ctx.get(outs[name][0]), ctx.get(outs[name][1])) == sat(x), (name, x)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


# --------------------------------------------------------------------------
# elaboration
# --------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1, 3, MAX_PIPELINE_DEPTH])
@pytest.mark.parametrize("tag_width", [1, 12])
def test_converts_to_verilog(depth, tag_width):
    text = verilog.convert(OutputStage(tag_width=tag_width, pipeline_depth=depth),
                           emit_src=False)
    assert "module" in text and "out__payload" in text


def test_saturating_add_converts_to_verilog():
    assert "module" in verilog.convert(SaturatingAdd(20), emit_src=False)


@pytest.mark.parametrize("factory,exc,message", [
    (lambda: OutputStage(pipeline_depth=0), ValueError, "pipeline_depth must be positive"),
    (lambda: OutputStage(pipeline_depth=MAX_PIPELINE_DEPTH + 1), ValueError,
     f"pipeline_depth must be 1..{MAX_PIPELINE_DEPTH}"),
    (lambda: OutputStage(pipeline_depth=2.0), TypeError, "pipeline_depth must be an integer"),
    (lambda: OutputStage(pipeline_depth=True), TypeError, "pipeline_depth must be an integer"),
    (lambda: OutputStage(tag_width=0), ValueError, "tag_width must be positive"),
    (lambda: OutputStage(tag_width="8"), TypeError, "tag_width must be an integer"),
    (lambda: SaturatingAdd(0), ValueError, "partial_width must be positive"),
    (lambda: SaturatingAdd(1.5), TypeError, "partial_width must be an integer"),
    (lambda: saturate(Signal(8), width=0), ValueError, "width must be positive"),
])
def test_bad_parameters(factory, exc, message):
    with pytest.raises(exc, match=message):
        factory()


def test_properties():
    dut = OutputStage(tag_width=5, pipeline_depth=4)
    assert (dut.tag_width, dut.pipeline_depth, dut.latency) == (5, 4, 4)
    assert dut.inp.payload.shape()["out_kind"].shape is OutputKind
    assert SaturatingAdd(20).partial_width == 20
    with pytest.raises(AttributeError):
        dut.pipeline_depth = 2
