"""Fast checks of the DIMC tile in Amaranth's own simulator.

The cocotb regression (``tb/cocotb``) is the main proof on the exported
Verilog; these tests cover parameters that no named configuration has (rows
not a power of two, ``P = 3``, three words a row, every pipeline depth) and the
elaboration-time errors.
"""

import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator

from imnpu_hw.macro import DIMCTile, DIMCTileGroup
from imnpu_tb.dimc_tile_model import LEGAL_ENCODINGS, Bus, Cmd, Feat, TileModel, cmd_bits

SEED = 1124


def _bits(rng, n):
    return int.from_bytes(rng.bytes((n + 7) // 8), "little") & ((1 << n) - 1)


def run_transactions(tile, ops, stall_every=0):
    """Drive ``ops`` into ``tile`` one a cycle; return (mismatches, results seen)."""
    model = TileModel(tile)
    expected_res, expected_resp, errors = [], [], []
    seen = {"res": 0, "resp": 0}
    bus_layout = tile.bus.payload.shape()

    async def bench(ctx):
        queue = list(ops)
        cycle = 0
        while queue or expected_res or expected_resp:
            cycle += 1
            assert cycle < 20 * len(ops) + 100, "tile hung"
            op = queue[0] if queue else None
            ctx.set(tile.bus.valid, isinstance(op, Bus))
            ctx.set(tile.feat.valid, isinstance(op, Feat))
            ctx.set(tile.cmd.valid, isinstance(op, Cmd))
            if isinstance(op, Bus):
                ctx.set(tile.bus.payload.as_value(), bus_layout.const({
                    "addr": tile.bus_address(op.row, op.word), "write": op.write,
                    "data": op.data}).as_bits())
            elif isinstance(op, Feat):
                ctx.set(tile.feat.payload.word, op.word)
                ctx.set(tile.feat.payload.data, op.data)
            elif isinstance(op, Cmd):
                ctx.set(tile.cmd.payload.as_value(), cmd_bits(tile.cmd.payload.shape(), op))
            ready = not (stall_every and cycle % stall_every == 0)
            ctx.set(tile.res.ready, ready)
            if ctx.get(tile.bus_resp.valid):
                got = (ctx.get(tile.bus_resp.payload.data), ctx.get(tile.bus_resp.payload.error))
                want = expected_resp.pop(0)
                seen["resp"] += 1
                if got != want[1]:
                    errors.append(f"{want[0]}: got {got}, expected {want[1]}")
            if ctx.get(tile.res.valid) and ready:
                got = (ctx.get(tile.res.payload.row),
                       [ctx.get(tile.res.payload.dot[i]) for i in range(tile.parallel)],
                       ctx.get(tile.res.payload.error))
                want = expected_res.pop(0)
                seen["res"] += 1
                if got != want[1]:
                    errors.append(f"{want[0]}: got {got}, expected {want[1]}")
            if op is not None:
                port = {Bus: tile.bus, Feat: tile.feat, Cmd: tile.cmd}[type(op)]
                if ctx.get(port.ready):
                    queue.pop(0)
                    if isinstance(op, Bus):
                        expected_resp.append((op, model.bus(op)))
                    elif isinstance(op, Feat):
                        model.feat(op)
                    else:
                        expected_res.append((op, model.cmd(op)))
            await ctx.tick()

    sim = Simulator(tile)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return errors, seen


def random_ops(tile, rng, batches=2, features=3):
    ops = []
    for _ in range(batches):
        for row in range(tile.rows):
            value = _bits(rng, tile.width)
            ops += [Bus(row, w, True, (value >> (w * tile.word_width)) & ((1 << tile.word_width) - 1))
                    for w in range(tile.words_per_row)]
        for _ in range(features):
            value = _bits(rng, tile.width)
            fw = tile.feature_width
            ops += [Feat(w, (value >> (w * fw)) & ((1 << fw) - 1))
                    for w in range(tile.feature_words)]
            for lane, encs in LEGAL_ENCODINGS.items():
                for wenc, xenc in itertools.product(encs, encs):
                    group = int(rng.integers(0, tile.rows // tile.parallel))
                    lanes = int(rng.integers(0, tile.width // lane + 1))
                    ops.append(Cmd(group, lane, wenc, xenc, lanes))
        ops += [Bus(int(rng.integers(0, tile.rows)), int(rng.integers(0, tile.words_per_row)), False)
                for _ in range(8)]
    return ops


@pytest.mark.parametrize("params", [
    dict(rows=6, width=96, parallel=3, word_width=32, pipeline_depth=2),
    dict(rows=6, width=96, parallel=3, word_width=32, pipeline_depth=7),
    dict(rows=4, width=16, parallel=1, word_width=16, pipeline_depth=3),
    dict(rows=8, width=64, parallel=2, word_width=8, pipeline_depth=5),
    dict(rows=8, width=64, parallel=1, word_width=32, pipeline_depth=3, feature_width=64),
], ids=lambda p: "R{rows}W{width}P{parallel}w{word_width}d{pipeline_depth}".format(**p)
   + (f"f{p['feature_width']}" if "feature_width" in p else ""))
@pytest.mark.parametrize("stall_every", [0, 3])
def test_random_against_reference(params, stall_every):
    print(f"seed {SEED}")
    rng = np.random.default_rng(SEED)
    tile = DIMCTile(**params)
    errors, seen = run_transactions(tile, random_ops(tile, rng), stall_every)
    assert not errors, errors[:3]
    assert seen["res"] == 2 * 3 * 12 and seen["resp"] > 0


def test_out_of_range_addresses_answer_error():
    tile = DIMCTile(rows=6, width=96, parallel=3, word_width=32)
    ops = [Bus(5, 2, True, 0xDEADBEEF), Bus(5, 3, True, 1), Bus(6, 0, True, 1), Bus(7, 1, False),
           Bus(5, 3, False), Bus(5, 2, False)]
    errors, seen = run_transactions(tile, ops)
    assert not errors, errors
    assert seen["resp"] == len(ops)
    model = TileModel(tile)
    assert [model.bus(op)[1] for op in ops] == [0, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("fault", ["sign", "lane"])
def test_fault_variants_are_caught(fault):
    """The mutation hooks really break the datapath, and the model sees it."""
    rng = np.random.default_rng(SEED)
    tile = DIMCTile(rows=4, width=16, parallel=1, word_width=16, _fault=fault)
    errors, _ = run_transactions(tile, random_ops(tile, rng, batches=1))
    assert errors


@pytest.mark.parametrize("kwargs,exc,message", [
    (dict(rows=0, width=64), ValueError, "rows must be positive"),
    (dict(rows=8, width=-4), ValueError, "width must be positive"),
    (dict(rows=8, width=62, word_width=2), ValueError, "multiple of 4"),
    (dict(rows=8, width=64, word_width=24), ValueError, "not a multiple of word_width 24"),
    (dict(rows=8, width=64, parallel=3), ValueError, "parallel 3 does not divide rows 8"),
    (dict(rows=8, width=64, parallel=0), ValueError, "parallel must be positive"),
    (dict(rows=8, width=64, pipeline_depth=1), ValueError, "pipeline_depth must be 2..6"),
    (dict(rows=8, width=64, pipeline_depth=7), ValueError, "pipeline_depth must be 2..6"),
    (dict(rows=8.0, width=64), TypeError, "rows must be an integer"),
    (dict(rows=8, width=64, parallel=True), TypeError, "parallel must be an integer"),
    (dict(rows=8, width=64, _fault="bogus"), ValueError, "_fault"),
    (dict(rows=8, width=64, feature_width=48), ValueError, "feature_width 48"),
])
def test_bad_parameters(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        DIMCTile(**kwargs)


def test_named_configurations_elaborate():
    from amaranth.hdl import Fragment
    from imnpu_hw import CONFIGS
    for config in CONFIGS.values():
        if config.name == "seed":
            continue        # elaborated by the Verilog export of the regression
        tile = DIMCTile(**config.tile_params())
        Fragment.get(tile, None)
        assert tile.rows == config.R and tile.width == config.W and tile.parallel == config.P


@pytest.mark.parametrize("params", [
    dict(count=3, rows=6, width=96, parallel=3, word_width=32, pipeline_depth=2),
    dict(count=2, rows=8, width=64, parallel=1, word_width=32, pipeline_depth=6,
         feature_width=64),
    dict(count=4, rows=4, width=16, parallel=1, word_width=16, pipeline_depth=3),
    dict(count=1, rows=8, width=64, parallel=2, word_width=8, pipeline_depth=5),
], ids=lambda p: "n{count}R{rows}W{width}P{parallel}d{pipeline_depth}".format(**p))
@pytest.mark.parametrize("stall_every", [0, 3])
def test_group_against_reference(params, stall_every):
    """A DIMCTileGroup: every tile its own weights, one feature register and
    command path; each tile's dot products equal the model's."""
    print(f"seed {SEED}")
    rng = np.random.default_rng(SEED)
    group = DIMCTileGroup(**params)
    count = params["count"]
    single = {k: v for k, v in params.items() if k != "count"}
    models = [TileModel(DIMCTile(**single)) for _ in range(count)]
    # each tile's array gets its own random rows; features and commands are shared
    ops = []
    for batch in range(2):
        for t in range(count):
            ops += [(t, op) for op in random_ops(models[t].tile, rng, batches=1, features=0)]
        ops += [(None, op) for op in random_ops(models[0].tile, rng, batches=1, features=2)
                if not isinstance(op, Bus)]
    bus_layout = group.bus[0].payload.shape()
    expected_res, expected_resp, errors = [], [], []
    seen = {"res": 0, "resp": 0}

    async def bench(ctx):
        queue = list(ops)
        cycle = 0
        while queue or expected_res or expected_resp:
            cycle += 1
            assert cycle < 20 * len(ops) + 100, "group hung"
            target, op = queue[0] if queue else (None, None)
            for t in range(count):
                ctx.set(group.bus[t].valid, isinstance(op, Bus) and target == t)
            ctx.set(group.feat.valid, isinstance(op, Feat))
            ctx.set(group.cmd.valid, isinstance(op, Cmd))
            if isinstance(op, Bus):
                ctx.set(group.bus[target].payload.as_value(), bus_layout.const({
                    "addr": group.bus_address(op.row, op.word), "write": op.write,
                    "data": op.data}).as_bits())
            elif isinstance(op, Feat):
                ctx.set(group.feat.payload.word, op.word)
                ctx.set(group.feat.payload.data, op.data)
            elif isinstance(op, Cmd):
                ctx.set(group.cmd.payload.as_value(), cmd_bits(group.cmd.payload.shape(), op))
            ready = not (stall_every and cycle % stall_every == 0)
            ctx.set(group.res.ready, ready)
            for t in range(count):
                if ctx.get(group.bus_resp[t].valid):
                    got = (ctx.get(group.bus_resp[t].payload.data),
                           ctx.get(group.bus_resp[t].payload.error))
                    want = expected_resp.pop(0)
                    seen["resp"] += 1
                    if (t, got) != want[1:]:
                        errors.append(f"{want[0]}: tile {t} got {got}, expected {want[1:]}")
            if ctx.get(group.res.valid) and ready:
                want = expected_res.pop(0)
                seen["res"] += 1
                for t in range(count):
                    got = (ctx.get(group.res.payload.row),
                           [ctx.get(group.res.payload.dot[t][i]) for i in range(group.parallel)],
                           ctx.get(group.res.payload.error))
                    if got != want[1][t]:
                        errors.append(f"{want[0]}: tile {t} got {got}, expected {want[1][t]}")
            if op is not None:
                port = {Bus: group.bus[target] if target is not None else None,
                        Feat: group.feat, Cmd: group.cmd}[type(op)]
                if ctx.get(port.ready):
                    queue.pop(0)
                    if isinstance(op, Bus):
                        expected_resp.append((op, target, models[target].bus(op)))
                    elif isinstance(op, Feat):
                        for model in models:
                            model.feat(op)
                    else:
                        expected_res.append((op, [model.cmd(op) for model in models]))
            await ctx.tick()

    sim = Simulator(group)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not errors, errors[:3]
    assert seen["res"] == 2 * 2 * 12 and seen["resp"] > 0
    # the tiles really hold different weights, so a mixed-up tile would show
    assert len({tuple(model.rows) for model in models}) == count


def test_group_bad_count():
    with pytest.raises(ValueError, match="count must be positive"):
        DIMCTileGroup(count=0, rows=8, width=64)
