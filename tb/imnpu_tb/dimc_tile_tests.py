"""cocotb regression of the DIMC tile (top level ``dimc_tile``).

Run through :mod:`imnpu_sim.cocotb_run` (``make sim``), which sets:

``IMNPU_CONFIG``    named configuration of the exported Verilog
``IMNPU_SEED``      seed of every random choice (printed by each test)
``IMNPU_PRODUCTS``  random row products per (lane width x encodings) combination
``IMNPU_PERF_DIR``  where the throughput test writes its measurement (JSON)
"""

import itertools
import json
import os
from pathlib import Path

import cocotb
import numpy as np

from imnpu_hw import get_config
from imnpu_ref import Encoding, OperandType, encode, pack, pack_operands
from imnpu_tb.dimc_tile_driver import TileDriver, tile_for
from imnpu_tb.dimc_tile_model import LEGAL_ENCODINGS, Bus, Cmd

CONFIG = get_config(os.environ.get("IMNPU_CONFIG", "tiny"))
SEED = int(os.environ.get("IMNPU_SEED", "20261124"))
PRODUCTS = int(os.environ.get("IMNPU_PRODUCTS", "5000"))

#: every legal (lane width, weight lane encoding, feature lane encoding)
LANE_FORMATS = [(lane, w, x) for lane, encs in LEGAL_ENCODINGS.items()
                for w, x in itertools.product(encs, encs)]

#: every operand type of ARCHITECTURE.md section 1
OPERAND_TYPES = ([OperandType(b, Encoding.SIGNED) for b in (2, 3, 4)] +
                 [OperandType(b, Encoding.UNSIGNED) for b in (1, 2, 3, 4)] +
                 [OperandType(1, Encoding.BIPOLAR)])


def _rng(dut, name):
    seed = SEED + sum(map(ord, name))
    dut._log.info(f"test {name}: config {CONFIG.name}, seed {seed} "
                  f"(IMNPU_SEED={SEED}; rerun with the same IMNPU_SEED to reproduce)")
    return np.random.default_rng(seed)


def _bits(rng, n):
    return int.from_bytes(rng.bytes((n + 7) // 8), "little") & ((1 << n) - 1)


async def _driver(dut, rng, **kwargs):
    drv = TileDriver(dut, tile_for(CONFIG), rng=rng, **kwargs)
    await drv.start()
    return drv


def _groups(tile):
    return range(tile.rows // tile.parallel)


def _random_lanes(rng, tile, lane):
    full = tile.width // lane
    pick = rng.random()
    if pick < 0.4:
        return full
    if pick < 0.45:
        return 0
    if pick < 0.5:
        return 1
    return int(rng.integers(0, full + 1))


@cocotb.test()
async def memory_roundtrip(dut):
    """Memory mode: random words into every row, read back in random order."""
    rng = _rng(dut, "memory_roundtrip")
    drv = await _driver(dut, rng, idle=0.2, stall=0.2)
    tile = drv.tile
    for _ in range(3):
        ops = []
        for row in rng.permutation(tile.rows):
            ops += drv.write_row(int(row), _bits(rng, tile.width))
        ops = list(rng.permutation(np.array(ops, dtype=object)))
        reads = [Bus(int(r), int(w), False) for r in range(tile.rows)
                 for w in range(tile.words_per_row)]
        ops += list(rng.permutation(np.array(reads, dtype=object)))
        await drv.run(ops)
    drv.check()
    assert drv.checked["bus"] == 3 * 2 * tile.rows * tile.words_per_row
    dut._log.info(f"memory_roundtrip: {drv.checked['bus']} accesses checked")


async def _random_products(dut, name, products, idle, stall):
    rng = _rng(dut, name)
    drv = await _driver(dut, rng, idle=idle, stall=stall)
    tile = drv.tile
    per_feature = len(_groups(tile)) * tile.parallel
    for lane, wenc, xenc in LANE_FORMATS:
        done = 0
        while done < products:
            ops = []
            for row in range(tile.rows):
                ops += drv.write_row(row, _bits(rng, tile.width))
            for _ in range(16):
                if done >= products:
                    break
                ops += drv.load_features(_bits(rng, tile.width))
                for group in rng.permutation(len(_groups(tile))):
                    ops.append(Cmd(int(group), lane, wenc, xenc, _random_lanes(rng, tile, lane)))
                done += per_feature
            await drv.run(ops)
        drv.check()
        dut._log.info(f"{name}: L={lane} weights {wenc.value} features {xenc.value}: "
                      f"{done} row products match")
    drv.check()
    assert drv.checked["cmd"] * tile.parallel >= products * len(LANE_FORMATS)


@cocotb.test()
async def random_products(dut):
    """Seeded random rows, features and lane counts for every lane format."""
    await _random_products(dut, "random_products", PRODUCTS, idle=0.02, stall=0.02)


@cocotb.test()
async def backpressure(dut):
    """Heavy random backpressure and idle cycles: nothing lost, duplicated or reordered."""
    await _random_products(dut, "backpressure", max(64, PRODUCTS // 20), idle=0.3, stall=0.5)


@cocotb.test()
async def corners(dut):
    """All-min, all-max, zero, one and full lane counts; mixed widths; illegal commands."""
    rng = _rng(dut, "corners")
    drv = await _driver(dut, rng)
    tile = drv.tile
    W, P = tile.width, tile.parallel
    count = 0
    # the first and the last row group: every bank, both ends of the array
    ends = sorted({0, len(_groups(tile)) - 1})
    end_rows = [g * P + i for g in ends for i in range(P)]

    # Extremes of every lane format, at 0, 1, half and all lanes.
    for lane, wenc, xenc in LANE_FORMATS:
        n = W // lane
        wtype = OperandType(lane, wenc) if wenc is not Encoding.BIPOLAR else OperandType(1, wenc)
        xtype = OperandType(lane, xenc) if xenc is not Encoding.BIPOLAR else OperandType(1, xenc)
        for wv, xv in itertools.product((wtype.min, wtype.max), (xtype.min, xtype.max)):
            ops = []
            wrow = pack(encode(np.full(n, wv), lane, wenc), lane, W)
            for row in end_rows:
                ops += drv.write_row(row, wrow)
            ops += drv.load_features(pack(encode(np.full(n, xv), lane, xenc), lane, W))
            for lanes in sorted({0, 1, n // 2, n - 1, n}):
                ops += [Cmd(g, lane, wenc, xenc, lanes) for g in ends]
            await drv.run(ops)
    count += drv.checked["cmd"]

    # Mixed widths: every pair of operand types, packed into the wider lane.
    for wtype, xtype in itertools.product(OPERAND_TYPES, OPERAND_TYPES):
        ops = []
        lanes = None
        for row in end_rows:
            n = W // max(1, {1: 1, 2: 2, 3: 4, 4: 4}[max(wtype.bits, xtype.bits)])
            w = wtype.random(rng, n)
            x = xtype.random(rng, n)
            wrow, xrow, (lane, wenc, xenc) = pack_operands(w, x, wtype, xtype, W)
            ops += drv.write_row(row, wrow)
            lanes = n
        ops += drv.load_features(xrow)
        ops += [Cmd(g, lane, wenc, xenc, lanes) for g in ends]
        ops += [Cmd(g, lane, wenc, xenc, int(rng.integers(0, lanes + 1))) for g in ends]
        await drv.run(ops)

    # Illegal commands answer with error and zero, and do not disturb legal ones.
    illegal = [
        Cmd(0, 1, Encoding.SIGNED, Encoding.UNSIGNED, 1),
        Cmd(0, 1, Encoding.UNSIGNED, Encoding.SIGNED, 1),
        Cmd(0, 2, Encoding.BIPOLAR, Encoding.SIGNED, 1),
        Cmd(0, 4, Encoding.SIGNED, Encoding.BIPOLAR, 1),
        Cmd(0, 1, Encoding.UNSIGNED, Encoding.UNSIGNED, W + 1),
        Cmd(0, 2, Encoding.UNSIGNED, Encoding.UNSIGNED, W // 2 + 1),
        Cmd(0, 4, Encoding.SIGNED, Encoding.SIGNED, W // 4 + 1),
        Cmd(0, 4, Encoding.SIGNED, Encoding.SIGNED, 1, lane_code=3),
        Cmd(0, 4, Encoding.SIGNED, Encoding.SIGNED, 1, weight_code=3),
        Cmd(0, 4, Encoding.SIGNED, Encoding.SIGNED, 1, feature_code=3),
    ]
    legal = Cmd(0, 4, Encoding.SIGNED, Encoding.SIGNED, W // 4)
    ops = []
    for cmd in illegal:
        ops += [legal, cmd, legal]
    await drv.run(ops)
    drv.check()
    dut._log.info(f"corners: {drv.checked['cmd']} commands checked")
    assert drv.checked["cmd"] > count > 0


@cocotb.test()
async def throughput(dut):
    """A long burst of back-to-back commands: P row results every cycle."""
    rng = _rng(dut, "throughput")
    drv = await _driver(dut, rng)
    tile = drv.tile
    setup = []
    for row in range(tile.rows):
        setup += drv.write_row(row, _bits(rng, tile.width))
    setup += drv.load_features(_bits(rng, tile.width))
    await drv.run(setup)
    burst = 4096
    groups = len(_groups(tile))
    ops = [Cmd(i % groups, 1, Encoding.BIPOLAR, Encoding.BIPOLAR, tile.width)
           for i in range(burst)]
    drv.accept_cycles.clear()
    drv.result_cycles.clear()
    await drv.run(ops)
    drv.check()
    first, last_accept = drv.accept_cycles[0], drv.accept_cycles[-1]
    last_result = drv.result_cycles[-1]
    accept_span = last_accept - first + 1
    total = last_result - first
    results = len(drv.result_cycles) * tile.parallel
    dut._log.info(f"throughput: {burst} commands accepted in {accept_span} cycles; "
                  f"last result {total} cycles after the first acceptance "
                  f"(latency {tile.pipeline_depth}); {results} row results")
    assert accept_span == burst, f"commands not accepted back to back: {accept_span} cycles"
    assert total == burst - 1 + tile.pipeline_depth, f"burst took {total} cycles"
    assert results == burst * tile.parallel
    rows_per_cycle = results / accept_span
    assert rows_per_cycle == tile.parallel
    perf_dir = os.environ.get("IMNPU_PERF_DIR")
    if perf_dir:
        Path(perf_dir).mkdir(parents=True, exist_ok=True)
        sim = os.environ.get("IMNPU_SIM", "unknown")
        (Path(perf_dir) / f"tile_throughput_{CONFIG.name}_{sim}.json").write_text(json.dumps({
            "config": CONFIG.name, "simulator": sim, "commands": burst,
            "cycles_accept": accept_span, "cycles_total": total,
            "latency": tile.pipeline_depth, "rows_per_cycle": rows_per_cycle,
            "parallel": tile.parallel, "width": tile.width,
        }, indent=1))
