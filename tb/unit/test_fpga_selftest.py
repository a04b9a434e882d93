"""FPGA board self-test and its AXI4 RAM in Amaranth's simulator.

The self-test (:class:`imnpu_fpga.selftest.SelfTest`) runs the stored network
on the ``tiny`` IMNPU; it must light ``pass`` and print PASS on the UART, and
must light ``fail`` when one expected word is corrupted.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from imnpu_hw import get_config
from imnpu_fpga.axi_ram import AXI4RAM
from imnpu_fpga.selftest import SelfTest, UARTTx

DIVISOR = 4


async def _decode_uart(ctx, tx, nbytes, divisor=DIVISOR, limit=20000):
    """Bytes sent on ``tx`` (8N1, ``divisor`` cycles a bit), sampled mid-bit."""
    out = []
    for _ in range(limit):
        if len(out) == nbytes:
            break
        await ctx.tick()
        if ctx.get(tx) == 0:                       # start bit
            await ctx.tick().repeat(divisor // 2)
            assert ctx.get(tx) == 0, "glitch instead of a start bit"
            byte = 0
            for bit in range(8):
                await ctx.tick().repeat(divisor)
                byte |= ctx.get(tx) << bit
            await ctx.tick().repeat(divisor)
            assert ctx.get(tx) == 1, "missing stop bit"
            out.append(byte)
    return bytes(out)


def _run_selftest(corrupt=None):
    cfg = get_config("tiny")
    dut = SelfTest(cfg, clk_hz=115200 * DIVISOR, repeat_cycles=1500, _corrupt=corrupt)
    result = {}

    async def bench(ctx):
        for cycle in range(50_000):
            if ctx.get(dut.done):
                break
            await ctx.tick()
        else:
            raise AssertionError("self-test never finished")
        result.update(cycles=cycle, passed=ctx.get(dut.passed), failed=ctx.get(dut.failed),
                      status=ctx.get(dut.status), job_cycles=ctx.get(dut.cycles),
                      mismatches=ctx.get(dut.mismatches), led=ctx.get(dut.led))
        line = await _decode_uart(ctx, dut.uart_tx, 48)
        result["uart"] = line.split(b"\r\n")[0].decode()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return dut, result


def test_selftest_passes_on_tiny():
    dut, r = _run_selftest()
    prog = dut.program
    # the network is not trivial: the expected logits differ from each other
    assert len(set(prog.expected)) > 5
    assert r["passed"] == 1 and r["failed"] == 0, r
    assert r["mismatches"] == 0
    assert (r["status"] >> 8) & 0xF == 0 and r["status"] >> 16 == len(prog.program.layers)
    assert 0 < r["job_cycles"] < r["cycles"]
    assert r["led"] & 0b11 == 0b01                  # pass on, fail off
    assert r["uart"] == f"IMNPU tiny PASS cycles={r['job_cycles']:08X}", r["uart"]


def test_selftest_fails_on_corrupted_expectation():
    dut, r = _run_selftest(corrupt=3)
    assert r["passed"] == 0 and r["failed"] == 1, r
    assert r["mismatches"] == 1
    assert r["led"] & 0b11 == 0b10
    assert r["led"] >> 4 == 0xE                     # reason: output mismatch
    assert r["uart"].startswith("IMNPU tiny FAIL status="), r["uart"]
    assert r["uart"].endswith("bad=0001")


def test_uart_tx_frames():
    dut = UARTTx(3)
    sent = b"\x00\xffA\x5a"

    async def bench(ctx):
        got = []

        # send and receive interleaved: one byte at a time
        for byte in sent:
            ctx.set(dut.data, byte)
            ctx.set(dut.valid, 1)
            await ctx.tick()
            ctx.set(dut.valid, 0)
            got.append(await _decode_uart(ctx, dut.tx, 1, divisor=3, limit=100))
            await ctx.tick().repeat(3)
        assert b"".join(got) == sent

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# -- AXI4 RAM ------------------------------------------------------------------------

def test_axi4_ram_bursts_strobes_backpressure_errors():
    rng = np.random.default_rng(5)
    depth = 64
    init = [int(v) for v in rng.integers(0, 1 << 32, size=depth, dtype=np.uint64)]
    dut = AXI4RAM(depth, init, id_width=2)
    bus = dut.bus
    model = list(init)

    async def write_burst(ctx, addr, data, strb, burst=1, wid=1):
        ctx.set(bus.awaddr, addr)
        ctx.set(bus.awlen, len(data) - 1)
        ctx.set(bus.awsize, 2)
        ctx.set(bus.awburst, burst)
        ctx.set(bus.awid, wid)
        ctx.set(bus.awvalid, 1)
        await ctx.tick().until(bus.awready)
        ctx.set(bus.awvalid, 0)
        for i, (d, s) in enumerate(zip(data, strb)):
            while rng.random() < 0.3:                # idle cycles between beats
                await ctx.tick()
            ctx.set(bus.wdata, d)
            ctx.set(bus.wstrb, s)
            ctx.set(bus.wlast, i == len(data) - 1)
            ctx.set(bus.wvalid, 1)
            await ctx.tick().until(bus.wready)
            ctx.set(bus.wvalid, 0)
        ctx.set(bus.bready, 1)
        bid, bresp = await ctx.tick().sample(bus.bid, bus.bresp).until(bus.bvalid)
        ctx.set(bus.bready, 0)
        return bid, bresp

    async def read_burst(ctx, addr, n, burst=1, rid=2):
        ctx.set(bus.araddr, addr)
        ctx.set(bus.arlen, n - 1)
        ctx.set(bus.arsize, 2)
        ctx.set(bus.arburst, burst)
        ctx.set(bus.arid, rid)
        ctx.set(bus.arvalid, 1)
        await ctx.tick().until(bus.arready)
        ctx.set(bus.arvalid, 0)
        beats = []
        while True:
            ready = int(rng.random() < 0.6)          # random backpressure
            ctx.set(bus.rready, ready)
            _, _, valid, data, resp, last, got_id = await ctx.tick().sample(
                bus.rvalid, bus.rdata, bus.rresp, bus.rlast, bus.rid)
            if valid and ready:
                beats.append((data, resp, got_id))
                if last:
                    break
        ctx.set(bus.rready, 0)
        return beats

    async def bench(ctx):
        # reads of the initial contents, full bursts
        beats = await read_burst(ctx, 0, depth)
        assert [b[0] for b in beats] == model and all(b[1] == 0 and b[2] == 2 for b in beats)
        # byte-strobed write bursts at random places, checked by read bursts
        for _ in range(12):
            n = int(rng.integers(1, 9))
            start = int(rng.integers(0, depth - n + 1))
            data = [int(v) for v in rng.integers(0, 1 << 32, size=n, dtype=np.uint64)]
            strb = [int(v) for v in rng.integers(0, 16, size=n)]
            bid, bresp = await write_burst(ctx, 4 * start, data, strb)
            assert (bid, bresp) == (1, 0)
            for i, (d, s) in enumerate(zip(data, strb)):
                for byte in range(4):
                    if s >> byte & 1:
                        mask = 0xFF << (8 * byte)
                        model[start + i] = (model[start + i] & ~mask) | (d & mask)
            beats = await read_burst(ctx, 4 * start, n)
            assert [b[0] for b in beats] == model[start:start + n]
        # FIXED bursts stay on one word
        await write_burst(ctx, 4 * 5, [1, 2, 3], [0xF] * 3, burst=0)
        model[5] = 3
        beats = await read_burst(ctx, 4 * 5, 3, burst=0)
        assert [b[0] for b in beats] == [3, 3, 3]
        # outside the RAM: SLVERR, nothing written
        bid, bresp = await write_burst(ctx, 4 * depth, [0x12345678], [0xF])
        assert bresp == 2
        beats = await read_burst(ctx, 4 * depth + 8, 2)
        assert [(b[0], b[1]) for b in beats] == [(0, 2), (0, 2)]
        assert [b[0] for b in await read_burst(ctx, 0, depth)] == model
        # the peek port reads what the bus wrote
        for addr in (0, 5, depth - 1):
            ctx.set(dut.peek_en, 1)
            ctx.set(dut.peek_addr, addr)
            await ctx.tick()
            assert ctx.get(dut.peek_data) == model[addr]
        ctx.set(dut.peek_en, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_axi4_ram_rejects_bad_parameters():
    with pytest.raises(ValueError, match="power of two"):
        AXI4RAM(100)
    with pytest.raises(ValueError, match="outside the RAM"):
        AXI4RAM(16, {16: 1})
