"""The max pooling unit in Amaranth's simulator, against the numpy reference.

A Python list is the activation memory (synchronous read, 1-cycle latency,
whole-word writes at the clock edge). Every expected output comes from
``imnpu_sw.tensor.pack_tensor(imnpu_ref.maxpool(x, ...), type, AW)``; the rest
of the memory must be untouched. One simulator per word width runs many layers
back to back. Set ``IMNPU_SEED`` to replay another seed.
"""

import os

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

import imnpu_ref as ref
from imnpu_hw.cluster.maxpool import (
    MAXPOOL_ERROR_CYCLES, MaxPoolUnit, maxpool_cycles)
from imnpu_hw.macro.dimc_tile import LaneEncoding, LaneWidth
from imnpu_sw.tensor import pack_tensor, pixel_words, storage_lane

SEED = int(os.environ.get("IMNPU_SEED", "20240917"))

TYPES = ["signed2", "signed3", "signed4", "unsigned1", "unsigned2", "unsigned3",
         "unsigned4", "bipolar1"]
LANE = {1: LaneWidth.L1, 2: LaneWidth.L2, 4: LaneWidth.L4}
ENCODING = {ref.Encoding.UNSIGNED: LaneEncoding.UNSIGNED,
            ref.Encoding.SIGNED: LaneEncoding.SIGNED,
            ref.Encoding.BIPOLAR: LaneEncoding.BIPOLAR}


def layer_bits(layout, **fields):
    """The bits of a ``MaxPoolLayer`` value; enums by value, fields truncated."""
    bits = 0
    for name, field in layout:
        value = fields[name]
        value = value.value if hasattr(value, "value") else int(value)
        bits |= (value & ((1 << field.width) - 1)) << field.offset
    return bits


# --------------------------------------------------------------------------
# the memory model and the run loop
# --------------------------------------------------------------------------

def run_layers(dut, jobs, max_cycles=200_000):
    """Run ``jobs`` (each: ``mem`` list, ``fields`` dict) back to back.

    Mutates each job's ``mem``; adds ``cycles`` (start cycle to done cycle),
    ``error``, ``reads`` and ``writes`` (addresses, in order) to each job.
    Checks the busy/done protocol on the way.
    """
    layout = dut.layer.shape()

    async def bench(ctx):
        cycle = 0
        for job in jobs:
            mem = job["mem"]
            job["reads"], job["writes"] = [], []
            assert not ctx.get(dut.busy)
            ctx.set(dut.layer.as_value(), layer_bits(layout, **job["fields"]))
            ctx.set(dut.start, 1)
            start_cycle, done_cycle = cycle, None
            while done_cycle is None:
                assert cycle - start_cycle < max_cycles, "unit hung"
                rd_en, rd_addr = ctx.get(dut.rd_en), ctx.get(dut.rd_addr)
                wr_en, wr_addr, wr_data = (ctx.get(dut.wr_en), ctx.get(dut.wr_addr),
                                           ctx.get(dut.wr_data))
                busy, done = ctx.get(dut.busy), ctx.get(dut.done)
                if cycle == start_cycle:
                    assert not busy and not done and not rd_en and not wr_en
                else:
                    assert busy, f"busy low in cycle {cycle - start_cycle} of a layer"
                if done:
                    done_cycle = cycle
                    job["error"] = ctx.get(dut.error)
                await ctx.tick()
                cycle += 1
                ctx.set(dut.start, 0)
                if wr_en:
                    assert 0 <= wr_addr < len(mem)
                    mem[wr_addr] = wr_data
                    job["writes"].append(wr_addr)
                if rd_en:
                    assert 0 <= rd_addr < len(mem)
                    ctx.set(dut.rd_data, mem[rd_addr])
                    job["reads"].append(rd_addr)
                else:
                    # A real memory holds rd_data while rd_en = 0; the unit must
                    # only sample it the cycle after a read, so clear it here to
                    # catch any use of stale data.
                    ctx.set(dut.rd_data, 0)
            job["cycles"] = done_cycle - start_cycle
            # done is one cycle; the unit is idle right after it
            assert not ctx.get(dut.done) and not ctx.get(dut.busy)
            assert ctx.get(dut.error) == job["error"]
            # idle cycles between layers, sometimes none
            for _ in range(job.get("gap", 0)):
                assert not ctx.get(dut.rd_en) and not ctx.get(dut.wr_en)
                await ctx.tick()
                cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


# --------------------------------------------------------------------------
# random layers
# --------------------------------------------------------------------------

def random_job(rng, dut, optype, shape_kind):
    AW, depth = dut.word_width, dut.depth
    S = storage_lane(optype)
    while True:
        if shape_kind == "c1":
            C = 1
        elif shape_kind == "multiword":
            # C*S spanning 2..3 words, not a multiple of AW
            C = int(rng.integers(AW // S + 1, 3 * AW // S))
            if (C * S) % AW == 0:
                C += 1
        else:
            C = int(rng.integers(1, 2 * AW // S + 1))
        H, W = int(rng.integers(1, 11)), int(rng.integers(1, 11))
        if shape_kind == "global":
            kh, kw, sh, sw = H, W, int(rng.integers(1, 4)), int(rng.integers(1, 4))
        else:
            kh, kw = int(rng.integers(1, min(3, H) + 1)), int(rng.integers(1, min(3, W) + 1))
            sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        pw = pixel_words(C, optype, AW)
        out_h, out_w = (H - kh) // sh + 1, (W - kw) // sw + 1
        in_n, out_n = H * W * pw, out_h * out_w * pw
        if in_n + out_n <= depth and out_n * kh * kw <= 2000:
            break
    # place the two regions at random, not overlapping, inside the memory
    first, second = (in_n, out_n) if rng.integers(2) else (out_n, in_n)
    a = int(rng.integers(0, depth - in_n - out_n + 1))
    b = int(rng.integers(a + first, depth - second + 1))
    in_base, out_base = (a, b) if first == in_n else (b, a)

    x = optype.random(rng, (H, W, C))
    words = pack_tensor(x, optype, AW)
    mem = [int.from_bytes(rng.bytes(AW // 8), "little") for _ in range(depth)]
    mem[in_base:in_base + in_n] = words
    expected = pack_tensor(ref.maxpool(x, (kh, kw), (sh, sw)), optype, AW)
    assert len(expected) == out_n
    fields = dict(in_base=in_base, out_base=out_base, in_h=H, in_w=W, pixel_words=pw,
                  lane=LANE[S], encoding=ENCODING[optype.encoding], kh=kh, kw=kw,
                  stride_h=sh, stride_w=sw, out_h=out_h, out_w=out_w)
    return dict(mem=mem, before=list(mem), fields=fields, expected=expected,
                gap=int(rng.integers(0, 3)), desc=f"{optype} x{(H, W, C)} k{(kh, kw)} "
                f"s{(sh, sw)} pw{pw} in@{in_base} out@{out_base}")


@pytest.mark.parametrize("word_width,depth", [(32, 500), (64, 512)])
def test_random_layers(word_width, depth):
    seed = SEED + word_width
    print(f"seed {seed} (IMNPU_SEED={SEED})")
    rng = np.random.default_rng(seed)
    dut = MaxPoolUnit(word_width=word_width, depth=depth, max_dim=64, max_kernel=15,
                      max_stride=7)
    jobs = []
    for name in TYPES * 2:
        optype = ref.OperandType.parse(name)
        for kind in ("c1", "c1", "multiword", "multiword", "global", "global",
                     "any", "any", "any", "any"):
            jobs.append(random_job(rng, dut, optype, kind))
    rng.shuffle(jobs)
    run_layers(dut, jobs)
    print(f"{len(jobs)} layers, {sum(job['cycles'] for job in jobs)} cycles")

    for job in jobs:
        f, desc = job["fields"], job["desc"]
        out_base, out_n = f["out_base"], len(job["expected"])
        assert not job["error"], desc
        # bit-exact output region
        got = job["mem"][out_base:out_base + out_n]
        assert got == job["expected"], desc
        # each output word written once, in order; nothing else touched
        assert job["writes"] == list(range(out_base, out_base + out_n)), desc
        outside = [i for i in range(len(job["mem"]))
                   if not out_base <= i < out_base + out_n]
        assert all(job["mem"][i] == job["before"][i] for i in outside), desc
        # reads stay in the input region, one per window pixel per output word
        in_n = f["in_h"] * f["in_w"] * f["pixel_words"]
        assert all(f["in_base"] <= a < f["in_base"] + in_n for a in job["reads"]), desc
        assert len(job["reads"]) == out_n * f["kh"] * f["kw"], desc
        # the timing formula, stated independently of the helper
        n_reads = f["out_h"] * f["out_w"] * f["pixel_words"] * f["kh"] * f["kw"]
        assert job["cycles"] == n_reads + 6, desc
        assert job["cycles"] == maxpool_cycles(f["out_h"], f["out_w"], f["pixel_words"],
                                               f["kh"], f["kw"]), desc


def test_read_pattern_and_timing():
    """Reads one a cycle without bubbles, in window order; writes 2 cycles after."""
    dut = MaxPoolUnit(word_width=32, depth=256, max_dim=16, max_kernel=4, max_stride=4)
    rng = np.random.default_rng(SEED)
    optype = ref.OperandType.parse("signed4")
    H, W, C, kh, kw, sh, sw = 5, 6, 10, 2, 3, 1, 2     # pw = 2
    x = optype.random(rng, (H, W, C))
    mem = [0] * 256
    words = pack_tensor(x, optype, 32)
    mem[16:16 + len(words)] = words
    out_h, out_w, pw = (H - kh) // sh + 1, (W - kw) // sw + 1, 2
    fields = dict(in_base=16, out_base=150, in_h=H, in_w=W, pixel_words=pw,
                  lane=LaneWidth.L4, encoding=LaneEncoding.SIGNED, kh=kh, kw=kw,
                  stride_h=sh, stride_w=sw, out_h=out_h, out_w=out_w)
    layout = dut.layer.shape()
    trace = []

    async def bench(ctx):
        ctx.set(dut.layer.as_value(), layer_bits(layout, **fields))
        ctx.set(dut.start, 1)
        for cycle in range(maxpool_cycles(out_h, out_w, pw, kh, kw) + 3):
            trace.append({k: ctx.get(getattr(dut, k)) for k in
                          ("rd_en", "rd_addr", "wr_en", "wr_addr", "wr_data", "busy", "done")})
            now = trace[-1]
            await ctx.tick()
            ctx.set(dut.start, 0)
            if now["wr_en"]:
                mem[now["wr_addr"]] = now["wr_data"]
            if now["rd_en"]:
                ctx.set(dut.rd_data, mem[now["rd_addr"]])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()

    n = out_h * out_w * pw * kh * kw
    expected_reads = [16 + ((oy * sh + ky) * W + ox * sw + kx) * pw + w
                      for oy in range(out_h) for ox in range(out_w) for w in range(pw)
                      for ky in range(kh) for kx in range(kw)]
    reads = [(c, t["rd_addr"]) for c, t in enumerate(trace) if t["rd_en"]]
    assert [c for c, _ in reads] == list(range(4, n + 4))
    assert [a for _, a in reads] == expected_reads
    writes = [c for c, t in enumerate(trace) if t["wr_en"]]
    assert writes == [4 + (i + 1) * kh * kw - 1 + 3 for i in range(out_h * out_w * pw)]
    assert [c for c, t in enumerate(trace) if t["done"]] == [n + 6]
    assert [c for c, t in enumerate(trace) if t["busy"]] == list(range(1, n + 7))
    assert mem[150:150 + out_h * out_w * pw] == pack_tensor(
        ref.maxpool(x, (kh, kw), (sh, sw)), optype, 32)


def test_illegal_layers():
    """Illegal layers finish with error after 4 cycles and touch nothing."""
    dut = MaxPoolUnit(word_width=32, depth=100, max_dim=16, max_kernel=4, max_stride=4)
    good = dict(in_base=0, out_base=50, in_h=4, in_w=4, pixel_words=2,
                lane=LaneWidth.L2, encoding=LaneEncoding.SIGNED, kh=2, kw=2,
                stride_h=2, stride_w=2, out_h=2, out_w=2)
    bad = [
        dict(lane=3), dict(encoding=3), dict(encoding=LaneEncoding.BIPOLAR),
        dict(lane=LaneWidth.L1, encoding=LaneEncoding.SIGNED),
        dict(in_h=0), dict(in_w=0), dict(out_h=0), dict(out_w=0), dict(pixel_words=0),
        dict(kh=0), dict(kw=0), dict(stride_h=0), dict(stride_w=0),
        dict(out_h=3), dict(out_w=3), dict(kh=3, stride_h=1, out_h=3),   # window outside
        dict(in_base=70),                    # input reaches beyond depth
        dict(out_base=93),                   # output reaches beyond depth
        dict(out_base=31),                   # regions overlap
        dict(in_base=55, out_base=50),       # regions overlap
    ]
    jobs = [dict(mem=[7] * 100, fields={**good, **b}, gap=1) for b in bad]
    # the legal layer around them still works, and the boundaries are legal
    jobs.insert(0, dict(mem=[0] * 100, fields=dict(good), gap=0))
    jobs.append(dict(mem=[0] * 100, fields={**good, "in_base": 68, "out_base": 0}, gap=0))
    jobs.append(dict(mem=[0] * 100, fields={**good, "in_base": 0, "out_base": 92}, gap=0))
    jobs.append(dict(mem=[0] * 100, fields={**good, "in_base": 32, "out_base": 24}, gap=0))
    run_layers(dut, jobs)
    legal = [jobs[0]] + jobs[-3:]
    for job in legal:
        assert not job["error"], job["fields"]
        assert job["cycles"] == maxpool_cycles(2, 2, 2, 2, 2)
    for job, b in zip(jobs[1:-3], bad):
        assert job["error"], b
        assert job["cycles"] == MAXPOOL_ERROR_CYCLES == 4, b
        assert job["reads"] == [] and job["writes"] == [], b
        assert job["mem"] == [7] * 100, b


def test_parameters():
    dut = MaxPoolUnit(word_width=64, depth=1000, max_dim=100, max_kernel=7, max_stride=3)
    assert (dut.word_width, dut.depth, dut.addr_width) == (64, 1000, 10)
    assert (dut.max_dim, dut.max_kernel, dut.max_stride) == (100, 7, 3)
    widths = {name: field.width for name, field in dut.layer_layout}
    assert widths == dict(in_base=10, out_base=10, in_h=7, in_w=7, pixel_words=10,
                          lane=2, encoding=2, kh=3, kw=3, stride_h=2, stride_w=2,
                          out_h=7, out_w=7)
    assert len(dut.rd_addr) == len(dut.wr_addr) == 10
    assert len(dut.rd_data) == len(dut.wr_data) == 64
    assert MaxPoolUnit.cycles(2, 3, 4, 2, 2) == 2 * 3 * 4 * 2 * 2 + 6
    with pytest.raises(ValueError, match="word_width"):
        MaxPoolUnit(word_width=30)
    with pytest.raises(ValueError, match="depth"):
        MaxPoolUnit(depth=0)
    with pytest.raises(TypeError, match="max_dim"):
        MaxPoolUnit(max_dim=4.0)
    with pytest.raises(ValueError, match="max_kernel"):
        MaxPoolUnit(max_dim=8, max_kernel=9)
    with pytest.raises(ValueError, match="kh"):
        maxpool_cycles(1, 1, 1, 0, 1)


@pytest.mark.parametrize("word_width,depth", [(32, 1024), (64, 3000)])
def test_verilog(word_width, depth):
    dut = MaxPoolUnit(word_width=word_width, depth=depth)
    text = verilog.convert(dut, name="maxpool_unit", emit_src=False)
    assert "module maxpool_unit" in text
    for port in ("rd_addr", "rd_data", "wr_data", "wr_en", "done", "busy", "error"):
        assert port in text
