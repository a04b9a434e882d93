"""Register slices in Amaranth's simulator: every beat once, in order, under random
valid/ready; one beat a cycle when never stalled; ``i.ready`` and the outputs
are flip-flops. Set ``IMNPU_SEED`` to replay another seed.
"""

import os
import random

import pytest
from amaranth import unsigned
from amaranth.back import rtlil
from amaranth.sim import Simulator

from imnpu_hw.interconnect import AXI4ReadSlice, RegisterSlice

SEED = int(os.environ.get("IMNPU_SEED", "20261203"))


def _run(dut, beats, p_valid, p_ready, seed, max_cycles=5000):
    rng = random.Random(seed)
    got, cycles = [], [0]

    async def bench(ctx):
        sent = 0
        while len(got) < len(beats):
            assert cycles[0] < max_cycles, f"stuck after {len(got)} of {len(beats)} beats"
            offer = sent < len(beats) and rng.random() < p_valid
            ctx.set(dut.i.valid, offer)
            if offer:
                ctx.set(dut.i.payload, beats[sent])
            ctx.set(dut.o.ready, rng.random() < p_ready)
            # both handshakes as the clock edge sees them
            took_in = offer and ctx.get(dut.i.ready)
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                got.append(ctx.get(dut.o.payload))
            await ctx.tick()
            cycles[0] += 1
            if took_in:
                sent += 1
        ctx.set(dut.i.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got, cycles[0]


@pytest.mark.parametrize("p_valid,p_ready", [(1.0, 1.0), (0.5, 1.0), (1.0, 0.3), (0.7, 0.6)])
def test_every_beat_once_in_order(p_valid, p_ready):
    seed = SEED + int(100 * p_valid) + int(1000 * p_ready)
    print(f"seed {seed}")
    rng = random.Random(seed)
    beats = [rng.randrange(1 << 16) for _ in range(300)]
    assert len(set(beats)) > 250
    got, cycles = _run(RegisterSlice(unsigned(16)), beats, p_valid, p_ready, seed)
    assert got == beats
    if p_valid == p_ready == 1.0:
        assert cycles == len(beats) + 1        # one beat a cycle after one cycle of latency


def test_ready_and_outputs_are_registers():
    # i.ready is the negated skid flag; o.valid / o.payload are written in the sync domain
    text = rtlil.convert(RegisterSlice(unsigned(8)), ports=None)
    assert "skid_full" in text
    dut = RegisterSlice(unsigned(8))

    async def bench(ctx):
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, 0x5A)
        ctx.set(dut.o.ready, 0)
        assert ctx.get(dut.i.ready) == 1
        assert ctx.get(dut.o.valid) == 0           # nothing passes in the same cycle
        await ctx.tick()
        assert ctx.get(dut.o.valid) == 1 and ctx.get(dut.o.payload) == 0x5A
        ctx.set(dut.i.payload, 0xA5)
        assert ctx.get(dut.i.ready) == 1           # the skid register is still free
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        assert ctx.get(dut.i.ready) == 0           # full: the output stalled with one parked
        ctx.set(dut.o.ready, 1)
        assert ctx.get(dut.i.ready) == 0           # o.ready does not reach i.ready this cycle
        await ctx.tick()
        assert ctx.get(dut.o.payload) == 0xA5 and ctx.get(dut.i.ready) == 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_axi_read_slice_registers_only_the_read_data():
    dut = AXI4ReadSlice(id_width=1)

    async def bench(ctx):
        ctx.set(dut.sub.araddr, 0x1234)
        ctx.set(dut.sub.arvalid, 1)
        ctx.set(dut.mgr.arready, 1)
        assert ctx.get(dut.mgr.araddr) == 0x1234 and ctx.get(dut.mgr.arvalid)
        assert ctx.get(dut.sub.arready)
        ctx.set(dut.mgr.bvalid, 1)
        assert ctx.get(dut.sub.bvalid)              # B passes through
        ctx.set(dut.sub.rready, 1)
        ctx.set(dut.mgr.rvalid, 1)
        ctx.set(dut.mgr.rdata, 0xCAFE)
        ctx.set(dut.mgr.rlast, 1)
        ctx.set(dut.mgr.rresp, 2)
        assert ctx.get(dut.sub.rvalid) == 0         # R: a cycle later
        await ctx.tick()
        ctx.set(dut.mgr.rvalid, 0)
        assert ctx.get(dut.sub.rvalid) == 1
        assert (ctx.get(dut.sub.rdata), ctx.get(dut.sub.rlast), ctx.get(dut.sub.rresp)) == \
            (0xCAFE, 1, 2)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
