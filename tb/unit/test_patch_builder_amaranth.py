"""The patch builder (im2col engine) in Amaranth's simulator.

Expected chunks come from the numpy reference, independently of the RTL: the
value tensor goes through :func:`imnpu_ref.im2col`, each chunk's slice of the
reduction is encoded with :func:`imnpu_ref.encode` at the compute lane width
(lane encoding from :func:`imnpu_ref.lane_format`) and packed with
:func:`imnpu_ref.pack`; the activation memory image is
:func:`imnpu_sw.tensor.pack_tensor`. The expected read addresses and cycle
counts come straight from the storage format. Set ``IMNPU_SEED`` to replay
another seed.
"""

import enum
import os

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

import imnpu_ref as ref
from imnpu_hw.cluster.patch_builder import (
    START_LATENCY, PatchBuilder, PatchChunk, PatchLayer, chunk_words)
from imnpu_hw.macro.dimc_tile import LaneEncoding, LaneWidth
from imnpu_sw.tensor import pack_tensor, pixel_words, storage_lane

SEED = int(os.environ.get("IMNPU_SEED", "20240617"))

TYPES = ["signed2", "signed3", "signed4", "unsigned1", "unsigned2", "unsigned3",
         "unsigned4", "bipolar1"]
# A weight type that makes lane_format pick lane width L for any narrower feature.
LANE_WEIGHT = {1: ref.OperandType(1, ref.Encoding.UNSIGNED),
               2: ref.OperandType(2, ref.Encoding.SIGNED),
               4: ref.OperandType(4, ref.Encoding.SIGNED)}
LANE_CODE = {1: LaneWidth.L1, 2: LaneWidth.L2, 4: LaneWidth.L4}
ENC_CODE = {ref.Encoding.UNSIGNED: LaneEncoding.UNSIGNED,
            ref.Encoding.SIGNED: LaneEncoding.SIGNED,
            ref.Encoding.BIPOLAR: LaneEncoding.BIPOLAR}


def combos():
    """Every (input type, legal compute lane width L >= S)."""
    for name in TYPES:
        t = ref.OperandType.parse(name)
        for lane in (1, 2, 4):
            if lane >= storage_lane(t):
                yield t, lane


# --------------------------------------------------------------------------
# layers and their expected output (numpy reference only)
# --------------------------------------------------------------------------

class Job:
    """One layer: descriptor, memory image, expected chunks, reads and cycles."""

    def __init__(self, *, width, word_width, optype, lane, x, kernel, stride, padding,
                 passes, base, depth, rng, ppc=None, garbage=False):
        H, Wd, cin = x.shape
        kh, kw = kernel
        (sh, sw), (ph, pw) = stride, padding
        S, L, W, AW = storage_lane(optype), lane, width, word_width
        nl = W // L
        self.optype, self.lane, self.x = optype, lane, x
        out_h = ref.conv_output_size(H, kh, sh, ph)
        out_w = ref.conv_output_size(Wd, kw, sw, pw)
        K = kh * kw
        if cin <= nl:
            spp, ppc = 1, ppc or nl // cin
            nch = -(-K // ppc)
            ranges = [(c * ppc * cin, min(c * ppc + ppc, K) * cin) for c in range(nch)]
        else:
            spp, ppc = -(-cin // nl), 1
            nch = K * spp
            ranges = [(p * cin + lo, p * cin + min(lo + nl, cin))
                      for p in range(K) for lo in range(0, cin, nl)]
        self.spp, self.ppc, self.nch = spp, ppc, nch
        pwords = pixel_words(cin, optype, AW)
        self.fields = dict(
            in_base=base, in_h=H, in_w=Wd, cin=cin, in_pixel_words=pwords,
            in_lane=LANE_CODE[S], in_encoding=ENC_CODE[optype.encoding], lane=LANE_CODE[L],
            kh=kh, kw=kw, stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw,
            out_h=out_h, out_w=out_w, positions_per_chunk=ppc, slices_per_position=spp,
            chunks=nch, passes=passes)
        self.geometry = dict(width=W, word_width=AW, in_h=H, in_w=Wd, cin=cin, in_lane=S,
                             lane=L, kh=kh, kw=kw, stride=stride, padding=padding,
                             positions_per_chunk=ppc if spp == 1 else None)

        # Memory: random words around the tensor image from pack_tensor.
        words = pack_tensor(x, optype, AW)
        assert base + len(words) <= depth
        self.mem = [int(v) for v in rng.integers(0, 1 << AW, size=depth, dtype=np.uint64)]
        if garbage:     # also junk in the unused top bits of each pixel: must be ignored
            used = cin * S - (pwords - 1) * AW
            for i in range(pwords - 1, len(words), pwords):
                words[i] |= int(rng.integers(0, 1 << AW, dtype=np.uint64)) >> used << used
        self.mem[base:base + len(words)] = words

        # Expected chunks: im2col values -> lane codes -> packed rows.
        enc = ref.lane_format(LANE_WEIGHT[L], optype)[2]
        cols = ref.im2col(x, kh, kw, stride, padding)
        if optype.encoding is ref.Encoding.BIPOLAR and L == 1:
            # A 1-bit bipolar lane cannot encode the value 0: padding is code 0.
            inside = ref.im2col(np.ones_like(x), kh, kw, stride, padding)
            cols = np.where(inside == 1, cols, -1)
        self.chunks, self.reads = [], []
        for n_pass in range(passes):
            for oy in range(out_h):
                for ox in range(out_w):
                    for c, (lo, hi) in enumerate(ranges):
                        codes = ref.encode(cols[oy, ox, lo:hi], L, enc)
                        self.chunks.append(dict(
                            features=ref.pack(codes, L, W), lanes=hi - lo,
                            first=int(c == 0), last=int(c == nch - 1),
                            pixel_last=int(oy == out_h - 1 and ox == out_w - 1),
                            pass_last=int(n_pass == passes - 1)))
                        self.reads.append(self._chunk_reads(
                            oy, ox, c, lo, hi, H, Wd, cin, kw, stride, padding, S, AW,
                            base, pwords))
        self.words = [len(r) for r in self.reads]

    @staticmethod
    def _chunk_reads(oy, ox, c, lo, hi, H, Wd, cin, kw, stride, padding, S, AW, base,
                     pwords):
        """Addresses of the words holding reduction elements lo .. hi-1."""
        addrs = []
        for p in range(lo // cin, (hi - 1) // cin + 1):
            iy = oy * stride[0] - padding[0] + p // kw
            ix = ox * stride[1] - padding[1] + p % kw
            if not (0 <= iy < H and 0 <= ix < Wd):
                continue
            c0, c1 = max(lo - p * cin, 0), min(hi - p * cin, cin)
            pixel = base + (iy * Wd + ix) * pwords
            addrs += [pixel + w for w in range(c0 * S // AW, (c1 * S - 1) // AW + 1)]
        return addrs


def random_job(rng, width, word_width, depth, optype, lane, max_cycles=400):
    """A random layer of ``optype`` at lane width ``lane`` whose pass is short."""
    S, nl = storage_lane(optype), width // lane
    bipolar1 = optype.encoding is ref.Encoding.BIPOLAR and lane == 1
    for _ in range(1000):
        r = rng.random()
        if r < 0.2:
            cin = 1
        elif r < 0.45:
            cin = int(rng.integers(2, nl + 1))
        elif r < 0.55:
            cin = nl
        else:
            cin = int(rng.integers(nl + 1, 2 * nl + nl // 2 + 2))
        H, Wd = (int(v) for v in rng.integers(1, 6, size=2))
        ph, pw = (int(v) for v in rng.integers(0, 3, size=2))
        if bipolar1 and rng.random() < 0.5:
            ph = pw = 0
        kh = int(rng.integers(1, min(4, H + 2 * ph) + 1))
        kw = int(rng.integers(1, min(4, Wd + 2 * pw) + 1))
        sh, sw = (int(v) for v in rng.integers(1, 4, size=2))
        ppc = None
        if cin <= nl and rng.random() < 0.2:
            ppc = int(rng.integers(1, nl // cin + 1))
        geometry = dict(width=width, word_width=word_width, in_h=H, in_w=Wd, cin=cin,
                        in_lane=S, lane=lane, kh=kh, kw=kw, stride=(sh, sw),
                        padding=(ph, pw), positions_per_chunk=ppc)
        pwords = pixel_words(cin, optype, word_width)
        if (H * Wd * pwords > depth or
                sum(max(1, w) for w in chunk_words(**geometry)) > max_cycles):
            continue
        base = int(rng.integers(0, depth - H * Wd * pwords + 1))
        x = optype.random(rng, (H, Wd, cin))
        return Job(width=width, word_width=word_width, optype=optype, lane=lane, x=x,
                   kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw),
                   passes=int(rng.integers(1, 3)), base=base, depth=depth, rng=rng,
                   ppc=ppc, garbage=bool(rng.random() < 0.5))
    raise AssertionError("no small random layer found")


# --------------------------------------------------------------------------
# simulation
# --------------------------------------------------------------------------

def run_jobs(dut, jobs, rng, stall=0.3):
    """Run ``jobs`` back to back; returns per job (chunks, reads, accept cycles, end).

    Cycles count from the job's ``start`` cycle (0). ``end`` is the first cycle
    in which ``busy`` is low again.
    """
    layer_layout = dut.layer.shape()
    results = []

    async def bench(ctx):
        rd_pending = None
        for job in jobs:
            mem = job.mem
            for name, value in job.fields.items():
                assert isinstance(value, enum.Enum) or value < 1 << layer_layout[name].width, name
            ctx.set(dut.layer, layer_layout.const(job.fields))
            ctx.set(dut.start, 1)
            chunks, reads, accepted = [], [], []
            cycle, end = 0, None
            limit = 20 * (sum(max(1, w) for w in job.words) + 10) + 100
            while end is None:
                assert cycle < limit, "patch builder hung"
                if cycle == 1:
                    ctx.set(dut.start, 0)
                    assert ctx.get(dut.busy)
                ready = rng.random() >= stall
                ctx.set(dut.chunk.ready, ready)
                if cycle > 0 and not ctx.get(dut.busy):
                    end = cycle
                    break
                if ctx.get(dut.chunk.valid) and ready:
                    pl = ctx.get(dut.chunk.payload)
                    chunks.append(dict(features=pl.features, lanes=pl.lanes, first=pl.first,
                                       last=pl.last, pixel_last=pl.pixel_last,
                                       pass_last=pl.pass_last))
                    accepted.append(cycle)
                rd_pending = None
                if ctx.get(dut.rd_en):
                    rd_pending = ctx.get(dut.rd_addr)
                    assert rd_pending < len(mem), f"read outside memory: {rd_pending}"
                    reads.append(rd_pending)
                await ctx.tick()
                # the word read is on rd_data for one cycle only: the cluster's block
                # RAM reads every cycle, so the builder must keep the word itself
                if rd_pending is not None:
                    ctx.set(dut.rd_data, mem[rd_pending])
                else:
                    ctx.set(dut.rd_data, int(rng.integers(0, 1 << len(dut.rd_data), dtype=np.uint64)))
                cycle += 1
            assert not ctx.get(dut.error)
            results.append((chunks, reads, accepted, end))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


def describe(job):
    f = job.fields
    return (f"{job.optype} L={job.lane} HWC={job.x.shape} k=({f['kh']},{f['kw']}) "
            f"s=({f['stride_h']},{f['stride_w']}) p=({f['pad_h']},{f['pad_w']}) "
            f"ppc={job.ppc} spp={job.spp} nch={job.nch} passes={f['passes']}")


def check_job(job, chunks, reads):
    assert len(chunks) == len(job.chunks), describe(job)
    for i, (got, want) in enumerate(zip(chunks, job.chunks)):
        assert got == want, (
            f"{describe(job)}: chunk {i}: got {got['lanes']} lanes "
            f"{got['features']:#x} {got}, expected {want['features']:#x} {want}")
    expected_reads = [a for r in job.reads for a in r]
    assert reads == expected_reads, f"{describe(job)}: read sequence differs"


CONFIGS = [(64, 32, 1024), (256, 64, 2048), (36, 12, 2048), (1024, 64, 4096)]
LAYERS_PER_COMBO = {64: 5, 256: 4, 36: 4, 1024: 1}


@pytest.mark.parametrize("width,word_width,depth", CONFIGS)
def test_random_layers_against_reference(width, word_width, depth):
    seed = SEED + width * 1000 + word_width
    print(f"seed {seed} (IMNPU_SEED={SEED})")
    rng = np.random.default_rng(seed)
    jobs = []
    for optype, lane in combos():
        for _ in range(LAYERS_PER_COMBO[width]):
            jobs.append(random_job(rng, width, word_width, depth, optype, lane))
    order = rng.permutation(len(jobs))
    jobs = [jobs[i] for i in order]
    dut = PatchBuilder(width=width, word_width=word_width, depth=depth, max_dim=3 * width,
                       max_kernel=8, max_passes=4)
    results = run_jobs(dut, jobs, rng, stall=0.3)
    for job, (chunks, reads, _, _) in zip(jobs, results):
        check_job(job, chunks, reads)
    # The stimulus covered what it should.
    assert any(j.fields["cin"] == 1 for j in jobs)
    assert any(j.spp > 1 for j in jobs)
    assert any(j.fields["in_pixel_words"] > 1 and j.fields["cin"] * storage_lane(j.optype)
               % word_width for j in jobs)
    assert any(j.fields["pad_h"] or j.fields["pad_w"] for j in jobs)
    assert any(j.fields["passes"] == 2 for j in jobs)
    assert any(w == 0 for j in jobs for w in j.words)


@pytest.mark.parametrize("width,word_width,depth", CONFIGS[:2])
def test_cycles_per_chunk(width, word_width, depth):
    """Without backpressure chunk k is taken at START_LATENCY + sum of max(1, words)."""
    seed = SEED + 7 + width
    print(f"seed {seed} (IMNPU_SEED={SEED})")
    rng = np.random.default_rng(seed)
    picks = list(combos())
    jobs = [random_job(rng, width, word_width, depth, *picks[int(i)])
            for i in rng.integers(0, len(picks), size=10)]
    # Plus a layer with fully padded output pixels and slices straddling words.
    t = ref.OperandType(4, ref.Encoding.SIGNED)
    jobs.append(Job(width=width, word_width=word_width, optype=t, lane=4,
                    x=t.random(rng, (2, 2, width // 4 + 3)), kernel=(2, 2), stride=(2, 2),
                    padding=(3, 1), passes=1, base=5, depth=depth, rng=rng))
    dut = PatchBuilder(width=width, word_width=word_width, depth=depth)
    results = run_jobs(dut, jobs, rng, stall=0.0)
    for job, (chunks, reads, accepted, end) in zip(jobs, results):
        check_job(job, chunks, reads)
        cycles = [max(1, w) for w in job.words]
        model = chunk_words(**job.geometry) * job.fields["passes"]
        assert model == job.words, describe(job)
        assert accepted == list(START_LATENCY + np.cumsum(cycles)), describe(job)
        assert end == accepted[-1] + 1
        assert len(reads) == sum(job.words)


def test_one_cycle_pixels_and_cluster_parameters():
    """Output pixels of one cycle back to back (1 x 1 and 2 x 2 kernels, padding wider
    than the kernel, one chunk per pixel, one output column), with several passes,
    and random layers at the cluster's builder parameters (max_kernel 255, max_passes 1): exact chunks,
    reads and chunk cycles."""
    rng = np.random.default_rng(SEED + 3)
    t = ref.OperandType(2, ref.Encoding.SIGNED)
    jobs = []
    for kernel, stride, padding, shape in [
            ((1, 1), (1, 1), (0, 0), (1, 1, 5)), ((1, 1), (1, 2), (2, 1), (3, 4, 5)),
            ((1, 1), (3, 1), (1, 2), (4, 1, 32)), ((2, 2), (2, 2), (3, 2), (2, 3, 8)),
            ((2, 1), (1, 3), (2, 0), (1, 5, 16)),
            # one output column: every pixel starts an output row, back to back
            ((1, 1), (1, 1), (0, 0), (4, 1, 5)), ((2, 1), (1, 1), (1, 0), (3, 1, 5))]:
        jobs.append(Job(width=64, word_width=32, optype=t, lane=2,
                        x=t.random(rng, shape), kernel=kernel, stride=stride,
                        padding=padding, passes=3, base=7, depth=1024, rng=rng))
    dut = PatchBuilder(width=64, word_width=32, depth=1024, max_passes=4)
    results = run_jobs(dut, jobs, rng, stall=0.0)
    for job, (chunks, reads, accepted, _) in zip(jobs, results):
        check_job(job, chunks, reads)
        assert accepted == list(START_LATENCY + np.cumsum([max(1, w) for w in job.words]))
    assert any(w == 0 for j in jobs for w in j.words)

    picks = list(combos())
    jobs = [random_job(rng, 64, 32, 1024, *picks[int(i)])
            for i in rng.integers(0, len(picks), size=12)]
    for job in jobs:        # one pass
        n = len(chunk_words(**job.geometry))
        job.fields["passes"] = 1
        job.chunks = [dict(c, pass_last=1) for c in job.chunks[:n]]
        job.reads, job.words = job.reads[:n], job.words[:n]
    dut = PatchBuilder(width=64, word_width=32, depth=1024, max_dim=4096, max_kernel=255,
                       max_passes=1)
    results = run_jobs(dut, jobs, rng, stall=0.0)
    for job, (chunks, reads, accepted, _) in zip(jobs, results):
        check_job(job, chunks, reads)
        assert accepted == list(START_LATENCY + np.cumsum([max(1, w) for w in job.words]))


def test_bipolar_padding_in_one_bit_lanes_is_code_zero():
    """At L = 1 a padded bipolar lane is code 0 (the value -1's code), like every pad."""
    rng = np.random.default_rng(SEED + 1)
    t = ref.OperandType(1, ref.Encoding.BIPOLAR)
    jobs = [Job(width=64, word_width=32, optype=t, lane=1, x=t.random(rng, (3, 4, cin)),
                kernel=(3, 3), stride=(1, 2), padding=(1, 2), passes=1, base=3, depth=512,
                rng=rng) for cin in (5, 64, 70)]
    dut = PatchBuilder(width=64, word_width=32, depth=512)
    for job, (chunks, reads, _, _) in zip(jobs, run_jobs(dut, jobs, rng)):
        check_job(job, chunks, reads)


def test_illegal_descriptor_is_refused():
    rng = np.random.default_rng(SEED + 2)
    t = ref.OperandType(2, ref.Encoding.SIGNED)
    job = Job(width=64, word_width=32, optype=t, lane=2, x=t.random(rng, (2, 2, 3)),
              kernel=(1, 1), stride=(1, 1), padding=(0, 0), passes=1, base=0, depth=64,
              rng=rng)
    dut = PatchBuilder(width=64, word_width=32, depth=64)
    layout = dut.layer.shape()
    bad = [dict(lane=LaneWidth.L1), dict(in_encoding=LaneEncoding.BIPOLAR),
           dict(in_lane=LaneWidth.L1), dict(cin=0), dict(chunks=0), dict(passes=0),
           dict(kw=0), dict(stride_h=0), dict(out_w=0), dict(in_pixel_words=0)]
    seen = []

    async def bench(ctx):
        ctx.set(dut.chunk.ready, 1)
        for change in bad + [{}]:
            ctx.set(dut.layer, layout.const({**job.fields, **change}))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            chunks = 0
            for _ in range(200):
                chunks += ctx.get(dut.chunk.valid)
                if not ctx.get(dut.busy):
                    break
                await ctx.tick()
            assert not ctx.get(dut.busy)
            seen.append((ctx.get(dut.error), chunks))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [(1, 0)] * len(bad) + [(0, 4)]


def test_layouts():
    dut = PatchBuilder(width=64, word_width=32, depth=1000, max_dim=100, max_kernel=5,
                       max_passes=3)
    assert dut.addr_width == 10 and dut.start_latency == START_LATENCY
    chunk = dut.chunk.payload.shape()
    assert chunk == PatchChunk(64)
    assert {n: f.width for n, f in chunk} == dict(
        features=64, lanes=7, last=1, first=1, pixel_last=1, pass_last=1)
    layer = dut.layer.shape()
    assert layer == PatchLayer(10, 64, 100, 5, 3)
    assert layer["in_lane"].shape is LaneWidth and layer["lane"].shape is LaneWidth
    assert layer["in_encoding"].shape is LaneEncoding
    assert layer["in_base"].width == 10 and layer["cin"].width == 7
    assert layer["kh"].width == 3 and layer["passes"].width == 2


@pytest.mark.parametrize("kwargs,exc,message", [
    (dict(width=62, word_width=32, depth=16), ValueError, "width must be a multiple of 4"),
    (dict(width=64, word_width=30, depth=16), ValueError, "word_width must be a multiple"),
    (dict(width=0, word_width=32, depth=16), ValueError, "width must be positive"),
    (dict(width=64, word_width=32, depth=0), ValueError, "depth must be positive"),
    (dict(width=64, word_width=32, depth=16, max_dim=0), ValueError, "max_dim"),
    (dict(width=64, word_width=32, depth=16, max_kernel=-1), ValueError, "max_kernel"),
    (dict(width=64, word_width=32, depth=16, max_passes=0), ValueError, "max_passes"),
    (dict(width=64.0, word_width=32, depth=16), TypeError, "width must be an integer"),
    (dict(width=64, word_width=True, depth=16), TypeError, "word_width must be an integer"),
])
def test_bad_parameters(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        PatchBuilder(**kwargs)


@pytest.mark.parametrize("width,word_width,depth", [(64, 32, 1024), (256, 64, 4096),
                                                    (36, 12, 100)])
def test_converts_to_verilog(width, word_width, depth):
    dut = PatchBuilder(width=width, word_width=word_width, depth=depth)
    text = verilog.convert(dut, emit_src=False, name="patch_builder")
    assert "module patch_builder" in text and "rd_addr" in text
