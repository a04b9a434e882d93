"""cocotb tests of the IMNPU top level over AXI (``make sim K=axi``).

Environment: ``IMNPU_CONFIG``, ``IMNPU_SEED``, ``IMNPU_TRANSACTIONS`` (least
number of DMA bursts of ``random_transactions``). The host is cocotbext-axi's
``AxiLiteMaster``, system memory its ``AxiRam``; every output tensor is
compared bit-exactly with the numpy reference (:func:`imnpu_sw.compiler.reference`).
"""

import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from imnpu_hw import get_config
from imnpu_hw.cluster.cluster import RESIDENT_WEIGHTS
from imnpu_hw.cluster.descriptor import LayerKind
from imnpu_hw.interconnect.dma import JobError
from imnpu_hw.top import regmap
from imnpu_ref import OperandType
from imnpu_ref.numbers import Encoding
from imnpu_sw.compiler import (Conv, Dense, MaxPool, compile_network, decode_output,
                               encode_descriptor, end_descriptor, output_words, reference)
from imnpu_sw.mapping import ClusterGeometry
from imnpu_sw.tensor import pack_tensor

from imnpu_sw.regs import REG, cluster_reg, tile_address
from imnpu_sw.regs import fields as register_fields

from .imnpu_driver import DECERR, SLVERR, IMNPUBench
from .stimulus import random_output_stage

CONFIG = get_config(os.environ.get("IMNPU_CONFIG", "tiny"))
SEED = int(os.environ.get("IMNPU_SEED", "20261124"))
TRANSACTIONS = int(os.environ.get("IMNPU_TRANSACTIONS", "1000"))
GEOMETRY = ClusterGeometry.from_config(CONFIG, 32)
ACT_WORDS = CONFIG.A // 4
#: system memory of cluster c's test data: words [c * REGION, (c + 1) * REGION)
REGION = 0x8000
RAM_BYTES = 4 * REGION * CONFIG.C


def _rng(dut, name):
    seed = SEED + sum(map(ord, name))
    dut._log.info(f"test {name}: config {CONFIG.name}, seed {seed} (IMNPU_SEED={SEED})")
    return np.random.default_rng(seed)


async def _bench(dut, rng, pause=0.0):
    bench = IMNPUBench(dut, CONFIG, rng, pause=pause, ram_size=RAM_BYTES)
    await bench.start()
    return bench


def _network(rng):
    """A small conv -> maxpool -> dense network with random weights and types."""
    x_type = OperandType(int(rng.choice([2, 4])), Encoding.UNSIGNED)
    w_type = OperandType(int(rng.choice([2, 4])), Encoding.SIGNED)
    mid = OperandType(2, Encoding.UNSIGNED)
    x = x_type.random(rng, (6, 6, 3))
    layers = [
        Conv(w_type.random(rng, (8, 3, 3, 3)), w_type,
             *random_output_stage(rng, 8, 27, x_type, w_type, mid), mid, (1, 1), (1, 1), True),
        MaxPool((2, 2)),
        Dense(w_type.random(rng, (10, 3 * 3 * 8)), w_type,
              *random_output_stage(rng, 10, 72, mid, w_type, "int32"), "int32", False),
    ]
    return x, x_type, layers


class Placed:
    """A compiled network placed in cluster ``c``'s region of system memory."""

    def __init__(self, cluster, x, x_type, layers):
        base = cluster * REGION
        self.program = compile_network(GEOMETRY, x.shape, x_type, layers, base=base + 0x100)
        self.input = pack_tensor(x, x_type, 32)
        self.in_src = base + REGION // 2
        self.out_dst = base + 3 * REGION // 4
        self.out_words = output_words(self.program)
        self.expected, self.saturated = reference(x, layers)
        self.cluster = cluster

    def load(self, bench):
        bench.load_image(self.program.memory)
        bench.load_words(self.in_src, self.input)
        bench.load_words(self.out_dst, [0xDEADBEEF] * self.out_words)

    async def program_job(self, bench):
        p = self.program
        await bench.program_job(self.cluster, p.desc_addr, in_src=self.in_src,
                                in_dst=p.input_base, in_words=len(self.input),
                                out_src=p.output_base, out_dst=self.out_dst,
                                out_words=self.out_words)

    def check(self, bench, status):
        st = register_fields("STATUS", status)
        assert st["ERROR"] == 0, f"cluster {self.cluster}: {JobError(st['ERROR']).name}"
        assert st["BUSY"] == 0
        assert st["LAYERS"] == len(self.program.layers), st
        assert st["SATURATED"] == int(self.saturated)
        got = decode_output(self.program, bench.read_ram_words(self.out_dst, self.out_words))
        bad = np.argwhere(got != self.expected)
        assert bad.size == 0, (
            f"cluster {self.cluster}: {len(bad)} output elements differ; first at "
            f"{tuple(bad[0])}: got {got[tuple(bad[0])]}, expected {self.expected[tuple(bad[0])]}")


@cocotb.test()
async def registers_and_windows(dut):
    """ID/configuration registers, access rules, error responses, memory windows."""
    rng = _rng(dut, "registers_and_windows")
    bench = await _bench(dut, rng, pause=0.3)
    cfg = CONFIG
    expected = {"ID": regmap.IMNPU_ID, "VERSION": regmap.VERSION[0] << 16 | regmap.VERSION[1],
                "CLUSTERS": cfg.C, "TILES": cfg.T, "ROWS": cfg.R, "WIDTH": cfg.W,
                "PARALLEL": cfg.P, "ACT_BYTES": cfg.A,
                "TILE_STRIDE": regmap.tile_stride(cfg.W, cfg.R),
                "START": 0, "BUSY": 0, "IRQ_ENABLE": 0, "IRQ_STATUS": 0}
    for name, value in expected.items():
        got = await bench.reg(REG[name])
        assert got == value, f"{name} = 0x{got:x}, expected 0x{value:x}"
    # read-only registers refuse writes and keep their value
    for name in ("ID", "CLUSTERS", "BUSY"):
        assert await bench.write(REG[name], 0x1234) == SLVERR, name
    assert await bench.reg(REG.ID) == regmap.IMNPU_ID
    assert await bench.write(cluster_reg(0, "STATUS"), 1) == SLVERR
    # unmapped register offsets and windows: DECERR on reads and writes
    used = {r.offset for r in regmap.GLOBAL_REGISTERS}
    cl_used = {r.offset for r in regmap.CLUSTER_REGISTERS}
    unmapped = [a for a in range(0, regmap.CLUSTER_REG_BASE, 4) if a not in used][:6]
    unmapped += [regmap.CLUSTER_REG_BASE + off for off in range(0, regmap.CLUSTER_REG_STRIDE, 4)
                 if off not in cl_used]
    unmapped += [cluster_reg(cfg.C, "STATUS"), regmap.REG_SPACE - 4,
                 regmap.window_base(cfg.C), 0xFFFFFFFC, regmap.window_base(0) - 4]
    for addr in unmapped:
        value, resp = await bench.read(addr)
        assert resp == DECERR and value == 0, f"read 0x{addr:x}: {resp.name}"
        assert await bench.write(addr, 0xFFFFFFFF) == DECERR, f"write 0x{addr:x}"
    # job registers read back; byte addresses drop bits 1:0; partial writes refused
    for c in range(cfg.C):
        for reg in regmap.CLUSTER_REGISTERS:
            if reg.access != regmap.Access.RW:
                continue
            value = int(rng.integers(1 << 32))
            await bench.set_reg(cluster_reg(c, reg.name), value)
            if reg.name in ("DESC_PTR", "IN_SRC", "OUT_DST"):
                value &= ~3
            assert await bench.reg(cluster_reg(c, reg.name)) == value, reg.name
        before = await bench.reg(cluster_reg(c, "IN_WORDS"))
        assert await bench.write(cluster_reg(c, "IN_WORDS"), 0, strb=0x3) == SLVERR
        assert await bench.reg(cluster_reg(c, "IN_WORDS")) == before
    # IRQ_ENABLE holds only the clusters' bits
    await bench.set_reg(REG.IRQ_ENABLE, 0xFFFFFFFF)
    assert await bench.reg(REG.IRQ_ENABLE) == (1 << cfg.C) - 1
    await bench.set_reg(REG.IRQ_ENABLE, 0)

    # the activation memories and the tile arrays through the windows
    for c in range(cfg.C):
        act = regmap.window_base(c) + regmap.ACT_WINDOW
        words = {int(a): int(rng.integers(1 << 32))
                 for a in rng.choice(ACT_WORDS, size=24, replace=False)}
        words.update({0: 0xFFFFFFFF, ACT_WORDS - 1: 0x80000001})
        for a, v in words.items():
            await bench.set_reg(act + 4 * a, v)
        for a, v in words.items():
            assert await bench.reg(act + 4 * a) == v, f"cluster {c} act word {a}"
        value, resp = await bench.read(act + cfg.A)
        assert resp == SLVERR, "read past the activation memory"
        assert await bench.write(act + cfg.A, 1) == SLVERR
        assert await bench.write(act, 5, strb=0x1) == SLVERR, "partial window write"
        tiles = regmap.window_base(c) + regmap.TILE_WINDOW
        cells = {}
        for _ in range(32):
            t, r, w = (int(rng.integers(cfg.T)), int(rng.integers(cfg.R)),
                       int(rng.integers(cfg.W // 32)))
            cells[tile_address(cfg, c, t, r, w)] = int(rng.integers(1 << 32))
        for a, v in cells.items():
            await bench.set_reg(a, v)
        for a, v in cells.items():
            assert await bench.reg(a) == v, f"tile window 0x{a:x}"
        value, resp = await bench.read(tiles + cfg.T * regmap.tile_stride(cfg.W, cfg.R))
        assert resp == SLVERR, "read past the tile arrays"
    dut._log.info(f"checked {len(expected)} ID/config registers, {len(unmapped)} unmapped "
                  f"addresses, every job register and both windows of {cfg.C} cluster(s)")


@cocotb.test()
async def networks_all_clusters(dut):
    """A network per cluster, all started at once, random pauses on every AXI channel."""
    rng = _rng(dut, "networks_all_clusters")
    bench = await _bench(dut, rng, pause=0.3)
    for round_ in range(2):
        placed = [Placed(c, *_network(rng)) for c in range(CONFIG.C)]
        for p in placed:
            p.load(bench)
            await p.program_job(bench)
        if round_ == 0:
            await bench.set_reg(REG.START, (1 << CONFIG.C) - 1)
            # while the jobs run: windows and job registers refuse, status shows busy
            busy = await bench.reg(REG.BUSY)
            if busy & 1:
                _, resp = await bench.read(regmap.window_base(0))
                assert resp == SLVERR, "activation window while busy"
                _, resp = await bench.read(regmap.window_base(0) + regmap.TILE_WINDOW)
                assert resp == SLVERR, "tile window while busy"
                assert await bench.write(cluster_reg(0, "DESC_PTR"), 0) == SLVERR
            statuses = {}
            while len(statuses) < CONFIG.C:
                await ClockCycles(dut.clk, 200)
                busy = await bench.reg(REG.BUSY)
                for c in range(CONFIG.C):
                    if not busy >> c & 1 and c not in statuses:
                        statuses[c] = await bench.reg(cluster_reg(c, "STATUS"))
            assert await bench.reg(REG.IRQ_STATUS) == (1 << CONFIG.C) - 1
            assert str(dut.irq.value) == "0", "irq raised while IRQ_ENABLE is 0"
            await bench.set_reg(REG.IRQ_STATUS, (1 << CONFIG.C) - 1)
        else:
            statuses = await bench.run_jobs(range(CONFIG.C))
            assert str(dut.irq.value) == "0", "irq still high after IRQ_STATUS was cleared"
        for p in placed:
            p.check(bench, statuses[p.cluster])
            cycles = await bench.reg(cluster_reg(p.cluster, "JOB_CYCLES"))
            run = await bench.reg(cluster_reg(p.cluster, "RUN_CYCLES"))
            assert 0 < run < cycles, (run, cycles)
            dut._log.info(f"round {round_} cluster {p.cluster}: {cycles} job cycles, "
                          f"{run} running the descriptors")
    counts = bench.counter.counts
    dut._log.info(f"m_axi handshakes: {counts}")


@cocotb.test()
async def resident_weights(dut):
    """Weights written through the tile window, used by a layer with weights = resident."""
    rng = _rng(dut, "resident_weights")
    bench = await _bench(dut, rng, pause=0.2)
    x_type, w_type = OperandType(4, Encoding.UNSIGNED), OperandType(4, Encoding.SIGNED)
    cout = CONFIG.T * 2
    x = x_type.random(rng, (4, 4, 2))
    layer = Conv(w_type.random(rng, (cout, 1, 1, 2)), w_type,
                 *random_output_stage(rng, cout, 2, x_type, w_type, "int32"), "int32")
    for c in range(CONFIG.C):
        placed = Placed(c, x, x_type, [layer])
        kind, fields, mapping = placed.program.layers[0]
        assert fields["passes"] == 1
        # the weight image, row by row, goes into the tiles through the window
        image = [placed.program.memory[fields["weights"] + i]
                 for i in range(CONFIG.T * fields["nch"] * fields["cpt"] * CONFIG.W // 32)]
        for a in range(fields["weights"], fields["weights"] + len(image)):
            placed.program.memory[a] = 0        # the DMA must not be what loads them
        desc = encode_descriptor(dict(fields, kind=LayerKind.CONV, weights=RESIDENT_WEIGHTS))
        for i, word in enumerate(desc):
            placed.program.memory[placed.program.desc_addr + i] = word
        placed.load(bench)
        words_per_row = CONFIG.W // 32
        rows = fields["nch"] * fields["cpt"]
        i = 0
        for t in range(CONFIG.T):
            for r in range(rows):
                for w in range(words_per_row):
                    await bench.set_reg(tile_address(CONFIG, c, t, r, w), image[i])
                    i += 1
        await placed.program_job(bench)
        status = await bench.run_jobs([c])
        placed.check(bench, status[c])
        # resident weights with two passes is a mapping error
        bad = encode_descriptor(dict(fields, kind=LayerKind.CONV, weights=RESIDENT_WEIGHTS,
                                     passes=2))
        bench.load_words(placed.program.desc_addr, bad)
        status = await bench.run_jobs([c])
        assert register_fields("STATUS", status[c])["ERROR"] == JobError.BAD_MAPPING.value


@cocotb.test()
async def dma_errors(dut):
    """SLVERR/DECERR on reads and writes, bad copies, bad descriptors: code, irq, no hang."""
    rng = _rng(dut, "dma_errors")
    bench = await _bench(dut, rng, pause=0.2)
    c = CONFIG.C - 1
    beyond = RAM_BYTES // 4 + 64         # a word address outside system memory
    placed = Placed(c, *_network(rng))
    placed.load(bench)
    weights_addr = placed.program.layers[0][1]["weights"]
    cases = [
        ("descriptor read", dict(desc=beyond), JobError.MEM_ERROR),
        ("input copy read", dict(in_src=beyond), JobError.MEM_ERROR),
        ("output copy write", dict(out_dst=beyond), JobError.WRITE_ERROR),
        ("input copy past A", dict(in_dst=ACT_WORDS - 3), JobError.BAD_COPY),
        ("output copy past A", dict(out_src=ACT_WORDS - 1), JobError.BAD_COPY),
        ("weight read", dict(weights=beyond), JobError.MEM_ERROR),
        ("bad kind", dict(kind=7), JobError.BAD_KIND),
    ]
    p = placed.program
    for use_decerr in (False, True):
        bench.error_response = DECERR if use_decerr else SLVERR
        for name, change, code in cases:
            desc0 = p.layers[0][1]
            if "weights" in change or "kind" in change:
                fields = dict(desc0, kind=change.get("kind", LayerKind.CONV),
                              weights=change.get("weights", desc0["weights"]))
                if "kind" in change:
                    words = encode_descriptor(dict(fields, kind=LayerKind.CONV))
                    words[0] = (words[0] & ~0xF) | change["kind"]
                else:
                    words = encode_descriptor(fields)
                bench.load_words(p.desc_addr, words)
            await bench.program_job(
                c, change.get("desc", p.desc_addr), in_src=change.get("in_src", placed.in_src),
                in_dst=change.get("in_dst", p.input_base), in_words=len(placed.input),
                out_src=change.get("out_src", p.output_base),
                out_dst=change.get("out_dst", placed.out_dst), out_words=placed.out_words)
            status = await bench.run_jobs([c], max_cycles=500_000)
            got = register_fields("STATUS", status[c])["ERROR"]
            assert got == code.value, f"{name}: {JobError(got).name}, expected {code.name}"
            assert await bench.reg(REG.BUSY) == 0
            bench.load_image(p.memory)
            dut._log.info(f"{'DECERR' if use_decerr else 'SLVERR'} {name}: {code.name}")
    # and the cluster still runs a network correctly
    bench.error_response = SLVERR
    placed.load(bench)
    await placed.program_job(bench)
    status = await bench.run_jobs([c])
    placed.check(bench, status[c])
    assert weights_addr


@cocotb.test()
async def random_transactions(dut):
    """Random DMA copies on every cluster at once: no beat lost, reordered or duplicated."""
    rng = _rng(dut, "random_transactions")
    bench = await _bench(dut, rng, pause=0.3)
    ends = [c * REGION for c in range(CONFIG.C)]
    for c in range(CONFIG.C):
        bench.load_words(ends[c], end_descriptor())
    jobs = 0
    counter = bench.counter
    while counter.counts["ar"] + counter.counts["aw"] < TRANSACTIONS:
        pending = []
        for c in range(CONFIG.C):
            n = int(rng.choice([1, 2, 255, 256, 257]) if rng.random() < 0.2
                    else rng.integers(1, 400))
            n = min(n, ACT_WORDS)
            # sources and destinations anywhere in the region: bursts cross 4 KiB
            src = c * REGION + 16 + int(rng.integers(0, REGION // 2 - n - 16))
            dst_act = int(rng.integers(0, ACT_WORDS - n + 1))
            k = int(rng.integers(1, n + 1))
            a = int(rng.integers(0, n - k + 1))
            out = c * REGION + REGION // 2 + int(rng.integers(0, REGION // 2 - k))
            words = [int(v) for v in rng.integers(0, 1 << 32, size=n)]
            bench.load_words(src, words)
            bench.load_words(out, [0xDEADBEEF] * k)
            # guard words around the destination catch writes past the burst
            guard = [out - 1, out + k] if out + k < (c + 1) * REGION else [out - 1]
            for g in guard:
                bench.load_words(g, [0x5A5A5A5A])
            await bench.program_job(c, ends[c], in_src=src, in_dst=dst_act, in_words=n,
                                    out_src=dst_act + a, out_dst=out, out_words=k)
            pending.append((c, out, words[a:a + k], guard))
        statuses = await bench.run_jobs([c for c, *_ in pending])
        for c, out, expected, guard in pending:
            assert register_fields("STATUS", statuses[c])["ERROR"] == 0
            got = bench.read_ram_words(out, len(expected))
            bad = [i for i, (g, e) in enumerate(zip(got, expected)) if g != e]
            assert not bad, (f"job {jobs} cluster {c}: {len(bad)} words differ, first at "
                             f"{bad[0]}: 0x{got[bad[0]]:08x} != 0x{expected[bad[0]]:08x}")
            for g in guard:
                assert bench.read_ram_words(g, 1) == [0x5A5A5A5A], f"write outside at {g}"
            jobs += 1
    counts = counter.counts
    # every burst moved exactly its beats, and every write burst got one response
    assert counts["r"] == sum(b for ch, _, b in counter.bursts if ch == "ar")
    assert counts["w"] == sum(b for ch, _, b in counter.bursts if ch == "aw")
    assert counts["b"] == counts["aw"]
    for ch, addr, beats in counter.bursts:
        assert (addr & 0xFFF) + 4 * beats <= 0x1000, f"{ch} burst crosses 4 KiB at 0x{addr:x}"
    dut._log.info(f"{jobs} jobs, {counts['ar']} read and {counts['aw']} write bursts, "
                  f"{counts['r']} + {counts['w']} beats, all checked")


@cocotb.test()
async def reset_mid_layer(dut):
    """Reset while layers run: the IMNPU comes back idle and runs the next job correctly."""
    rng = _rng(dut, "reset_mid_layer")
    bench = await _bench(dut, rng, pause=0.2)
    placed = [Placed(c, *_network(rng)) for c in range(CONFIG.C)]
    for p in placed:
        p.load(bench)
        await p.program_job(bench)
    await bench.set_reg(REG.START, (1 << CONFIG.C) - 1)
    for _ in range(2000):
        await ClockCycles(dut.clk, 20)
        if await bench.reg(cluster_reg(0, "LAYER_CYCLES")):
            break           # a layer has ended, the next one is running
    assert await bench.reg(REG.BUSY), "the jobs ended before the reset"
    await bench.reset()
    assert await bench.reg(REG.BUSY) == 0
    assert await bench.reg(REG.IRQ_STATUS) == 0
    for c in range(CONFIG.C):
        assert await bench.reg(cluster_reg(c, "STATUS")) == 0
        assert await bench.reg(cluster_reg(c, "DESC_PTR")) == 0
    await ClockCycles(dut.clk, 50)
    assert await bench.reg(REG.BUSY) == 0, "a job restarted after the reset"
    for p in placed:
        p.load(bench)
        await p.program_job(bench)
    statuses = await bench.run_jobs(range(CONFIG.C))
    for p in placed:
        p.check(bench, statuses[p.cluster])
