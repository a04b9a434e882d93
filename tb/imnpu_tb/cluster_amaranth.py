"""Run a :class:`Cluster` in Amaranth's simulator: a fast harness for unit tests.

The system memory is a dict answering one word a cycle; the host port loads the
input and reads the output. Returns the output words, the run's status and a
trace of when each engine was active (for the cycle model's tests).
"""

from amaranth.sim import Simulator

__all__ = ["run_cluster"]


def run_cluster(cluster, memory, input_base, input_words, output_base, output_words,
                desc_addr, max_cycles=200_000, trace=False):
    result = {}

    async def bench(ctx):
        act = cluster.act
        for i, word in enumerate(input_words):
            ctx.set(act.valid, 1)
            ctx.set(act.payload.addr, input_base + i)
            ctx.set(act.payload.write, 1)
            ctx.set(act.payload.data, word)
            await ctx.tick()
        ctx.set(act.valid, 0)
        ctx.set(cluster.desc_addr, desc_addr)
        ctx.set(cluster.start, 1)
        await ctx.tick()
        ctx.set(cluster.start, 0)
        pending = []
        layers = []
        events = []
        ctx.set(cluster.mem_req.ready, 1)
        for cycle in range(max_cycles):
            if pending:
                addr = pending[0]
                ctx.set(cluster.mem_resp.valid, 1)
                ctx.set(cluster.mem_resp.payload.data, memory.get(addr, 0))
                ctx.set(cluster.mem_resp.payload.error, 0)
            else:
                ctx.set(cluster.mem_resp.valid, 0)
            if pending and ctx.get(cluster.mem_resp.ready):
                pending.pop(0)
            if ctx.get(cluster.mem_req.valid):
                addr = ctx.get(cluster.mem_req.payload.addr)
                length = ctx.get(cluster.mem_req.payload.length)
                pending.extend(range(addr, addr + length))
                events.append((cycle, "req", addr, length))
            b = cluster._builder
            if ctx.get(b.chunk.valid):
                # the builder stalls on hold, which must say what chunk.ready says
                hold = b.hold.first if ctx.get(b.chunk.payload.first) else b.hold.other
                assert ctx.get(hold) == (not ctx.get(b.chunk.ready)), \
                    f"builder hold differs from ~chunk.ready in cycle {cycle}"
            if trace:
                if ctx.get(b.chunk.valid) and ctx.get(b.chunk.ready):
                    events.append((cycle, "chunk"))
            if ctx.get(cluster.layer_done):
                layers.append(ctx.get(cluster.layer_cycles))
            if ctx.get(cluster.done):
                result.update(error=ctx.get(cluster.error_code), cycles=ctx.get(cluster.cycles),
                              saturated=ctx.get(cluster.saturated), layers=layers, events=events)
                break
            await ctx.tick()
        else:
            raise AssertionError("cluster hung")
        ctx.set(cluster.mem_resp.valid, 0)
        out = []
        for i in range(output_words):
            ctx.set(act.valid, 1)
            ctx.set(act.payload.addr, output_base + i)
            ctx.set(act.payload.write, 0)
            await ctx.tick()
            if True:
                assert ctx.get(cluster.act_resp.valid), f"no response at {i} busy={ctx.get(cluster.busy)}"
                assert not ctx.get(cluster.act_resp.payload.error), "read refused"
                out.append(ctx.get(cluster.act_resp.payload.data))
        result["output"] = out

    sim = Simulator(cluster)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return result
