"""The IMNPU's memory windows over AXI4-Lite in Amaranth's simulator: data round
trips and the answer latencies ``docs/top.md`` states (register reads three
cycles after acceptance, the activation memory seven, the tile arrays eight)."""

import random

import pytest
from amaranth.sim import Simulator

from imnpu_hw import get_config
from imnpu_hw.top import regmap
from imnpu_hw.top.imnpu import IMNPU

SEED = 20261204


async def _write(ctx, dut, addr, data):
    """AXI4-Lite write; returns (BRESP, cycles from acceptance to BVALID)."""
    ctx.set(dut.s_axil_awaddr, addr)
    ctx.set(dut.s_axil_wdata, data)
    ctx.set(dut.s_axil_wstrb, 0xF)
    ctx.set(dut.s_axil_awvalid, 1)
    ctx.set(dut.s_axil_wvalid, 1)
    ctx.set(dut.s_axil_bready, 1)
    await ctx.tick().until(dut.s_axil_awready & dut.s_axil_wready)
    ctx.set(dut.s_axil_awvalid, 0)
    ctx.set(dut.s_axil_wvalid, 0)
    cycles = 1                  # the cycle after the acceptance edge
    while not ctx.get(dut.s_axil_bvalid):
        await ctx.tick()
        cycles += 1
    resp = ctx.get(dut.s_axil_bresp)
    await ctx.tick()
    ctx.set(dut.s_axil_bready, 0)
    return resp, cycles


async def _read(ctx, dut, addr):
    """AXI4-Lite read; returns (RDATA, RRESP, cycles from acceptance to RVALID)."""
    ctx.set(dut.s_axil_araddr, addr)
    ctx.set(dut.s_axil_arvalid, 1)
    ctx.set(dut.s_axil_rready, 1)
    await ctx.tick().until(dut.s_axil_arready)
    ctx.set(dut.s_axil_arvalid, 0)
    cycles = 1
    while not ctx.get(dut.s_axil_rvalid):
        await ctx.tick()
        cycles += 1
    data, resp = ctx.get(dut.s_axil_rdata), ctx.get(dut.s_axil_rresp)
    await ctx.tick()
    ctx.set(dut.s_axil_rready, 0)
    return data, resp, cycles


@pytest.mark.parametrize("config_name", ["tiny"])
def test_window_round_trips_and_latencies(config_name):
    cfg = get_config(config_name)
    rng = random.Random(SEED)
    print(f"seed {SEED}")
    dut = IMNPU(cfg)
    results = {}

    async def bench(ctx):
        for c in range(cfg.C):
            base = regmap.window_base(c)
            act = [base + regmap.ACT_WINDOW + 4 * k for k in (0, cfg.A // 4 - 1)]
            stride = regmap.tile_stride(cfg.W, cfg.R)
            tile = [base + regmap.TILE_WINDOW + t * stride for t in (0, cfg.T - 1)]
            for kind, addrs in (("act", act), ("tile", tile)):
                for addr in addrs:
                    value = rng.getrandbits(32)
                    resp, w_cycles = await _write(ctx, dut, addr, value)
                    data, r_resp, r_cycles = await _read(ctx, dut, addr)
                    assert (resp, r_resp, data) == (0, 0, value), (kind, hex(addr))
                    results.setdefault(kind, set()).update({w_cycles, r_cycles})
        data, resp, cycles = await _read(ctx, dut, 0x000)          # ID
        assert (data, resp) == (regmap.IMNPU_ID, 0)
        results["register"] = {cycles}

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # cycles after the acceptance (AW and W, or AR) to the first with [BR]VALID high
    assert results == {"register": {3}, "act": {7}, "tile": {8}}, results
