"""Analytical cycle model of a cluster layer (ARCHITECTURE.md section 4).

The model follows the sequencer's phases and, for the run of each weight pass,
the three engines that work concurrently, as a max-plus recurrence over the
chunks and output pixels (no RTL is simulated):

* patch builder: chunk ``k`` takes ``max(1, words(k))`` cycles and may run one
  chunk ahead of the compute engine;
* compute engine: a chunk is taken when it is built, the previous chunk's
  ``G = cpt / P`` commands are issued and, for a pixel's first chunk, an
  accumulator bank is free; it then issues ``G`` commands on ``G`` cycles;
* output engine: ``tile_depth + 1`` cycles after a pixel's last command, its
  bank feeds ``cpt`` steps into the output stages (one a cycle; a raw int32
  step takes one cycle per channel), and the packer writes the pixel. The
  output stages and the packer are followed cycle by cycle (:class:`_OutputEngine`:
  the packer's slow raw steps stall the whole output pipeline).

``predict_layer_cycles`` returns the layer's total; :func:`layer_breakdown`
the parts (descriptor fetch, weight and parameter load, run, stalls) for
``make perf``.
"""

from dataclasses import dataclass

__all__ = ["predict_layer_cycles", "layer_breakdown", "LayerBreakdown", "chunk_words"]

FETCH = 1 + 16 + 2          # FETCH_REQ, 16 descriptor words, DECODE, CHECKED
LAYER_END = 1
BUILDER_START = 9           # patch builder: first chunk START_LATENCY + cycles(0)
OUTPUT_DEPTH = 6            # output stage pipeline depth (the cluster's output_depth)
MAXPOOL_OVERHEAD = 6
BANKS = 3                   # accumulator banks


@dataclass
class LayerBreakdown:
    fetch: int
    load: int               # weights and parameters, all passes
    run: int                # compute runs, all passes
    total: int
    macs: int = 0


def _storage(bits):
    return {1: 1, 2: 2, 3: 4, 4: 4}[bits]


def chunk_words(fields, mapping, W, AW, oy, ox):
    """Activation words the patch builder reads for each chunk of pixel (oy, ox)."""
    S = _storage(fields["x_type"]["bits"])
    lane = mapping.lane
    NL = W // lane
    cin = fields["cin"]
    kh, kw = fields["kh"], fields["kw"]
    words = []
    for c in range(mapping.nch):
        if mapping.spp == 1:
            positions = range(c * mapping.ppc, min((c + 1) * mapping.ppc, kh * kw))
        else:
            positions = [c // mapping.spp]
        total = 0
        for p in positions:
            ky, kx = divmod(p, kw)
            iy = oy * fields["stride_h"] - fields["pad_h"] + ky
            ix = ox * fields["stride_w"] - fields["pad_w"] + kx
            if not (0 <= iy < fields["in_h"] and 0 <= ix < fields["in_w"]):
                continue
            if mapping.spp == 1:
                total += fields["in_pixel_words"]
            else:
                s = c % mapping.spp
                n = min(NL, cin - s * NL)
                total += -(-(((s * NL * S) % AW) + n * S) // AW)
        words.append(total)
    return words


def _run_cycles(fields, mapping, config, geometry, pass_index):
    """Cycles of RUN_START + RUN for one pass."""
    T, P = geometry.T, geometry.P
    G = mapping.cpt // P
    D = config.pipeline_depth
    AW = geometry.act_word
    raw = fields["o_type"]["encoding"] == 3
    b_out = 32 if raw else _storage(fields["o_type"]["bits"])
    cout = fields["cout"]
    pass_base = pass_index * T * mapping.cpt
    pass_bit = pass_base * b_out

    # output engine: service time per step and whether the pixel ends with a tail write
    steps = []
    for j in range(mapping.cpt):
        n = max(0, min(T, cout - pass_base - j * T))
        steps.append(max(1, n) if raw else 1)
    bits = sum(max(0, min(T, cout - pass_base - j * T)) * b_out for j in range(mapping.cpt))
    start = pass_bit % AW
    # the last append crosses a word boundary -> one more cycle for the tail
    last_len = 32 if raw else max(0, min(T, cout - pass_base - (mapping.cpt - 1) * T)) * b_out
    end_bits = start + bits
    tail = 1 if (end_bits - last_len) % AW + last_len > AW else 0

    t_build = BUILDER_START         # the builder's previous chunk was ready here
    taken_prev = -10 ** 9
    issue_end = -1
    bank_free = [0] * BANKS
    out_end_prev = -1
    engine = _OutputEngine()
    bank = 0
    for oy in range(fields["out_h"]):
        for ox in range(fields["out_w"]):
            words = chunk_words(fields, mapping, geometry.W, AW, oy, ox)
            for c, w in enumerate(words):
                ready = max(t_build + max(1, w), taken_prev + 1)
                take = max(ready, issue_end + 1)
                if c == 0:
                    take = max(take, bank_free[bank])
                t_build = ready
                taken_prev = take
                issue_end = take + G - 1
            acc_done = issue_end + D             # last result accumulates in this cycle
            out_start = max(acc_done + 1, out_end_prev + 1)
            out_end = engine.feed(out_start, steps, tail)
            bank_free[bank] = out_end + 1
            out_end_prev = out_end
            bank = (bank + 1) % BANKS
    # RUN_START is cycle 0; RUN ends in the cycle of the last pixel's advance
    return engine.drain() + 1


class _OutputEngine:
    """The output stages and the packer, cycle by cycle.

    The output stages are one rigid pipeline of :data:`OUTPUT_DEPTH` registers
    that advances in every cycle but those in which its output register holds a
    step the packer has not taken. The packer starts a step when it has arrived
    and the previous one is done; a step takes ``s`` cycles (one per raw int32
    channel, else 1) and is taken in its last; a pixel's last step is followed
    by ``tail`` cycles of the packer.
    """

    def __init__(self):
        self.cycle = 0                          # the next cycle to simulate
        self.pipe = [None] * OUTPUT_DEPTH       # (s, tail) per register, last: output
        self.taken_at = None                    # cycle the packer takes the output step
        self.packer_done = -1                   # the packer's last busy cycle

    def _step(self, feed):
        """Simulate one cycle; ``feed`` is the step offered to the input (or None).
        Returns whether it was taken."""
        out = self.pipe[-1]
        if out is not None and self.taken_at is None:
            s, _ = out
            self.taken_at = max(self.cycle, self.packer_done + 1) + s - 1
        advance = out is None or self.taken_at == self.cycle
        if advance:
            if out is not None:
                self.packer_done = self.taken_at + out[1]
                self.taken_at = None
            self.pipe = [feed] + self.pipe[:-1]
        self.cycle += 1
        return advance and feed is not None

    def feed(self, start, steps, tail):
        """Feed a pixel's ``steps`` from cycle ``start`` on; returns the cycle of its
        last feed."""
        while self.cycle < start:
            self._step(None)
        for n, s in enumerate(steps):
            step = (s, tail if n == len(steps) - 1 else 0)
            while not self._step(step):
                pass
        return self.cycle - 1

    def drain(self):
        """Run until every step is taken; returns the packer's last busy cycle."""
        while any(item is not None for item in self.pipe):
            self._step(None)
        return self.packer_done


def layer_breakdown(geometry, config, kind, fields, mapping, pause=0.0):
    """Predicted cycles of one layer, split into its phases."""
    slow = 1.0 / (1.0 - pause) if pause else 1.0
    fetch = 1 + round(16 * slow) + 2
    if kind == "maxpool":
        n = fields["out_h"] * fields["out_w"] * fields["in_pixel_words"] * fields["kh"] * fields["kw"]
        run = n + MAXPOOL_OVERHEAD
        return LayerBreakdown(fetch, 0, run, fetch + run + LAYER_END)
    words = geometry.T * mapping.nch * mapping.cpt * geometry.W // 32
    params = 2 * geometry.T * mapping.cpt
    load = mapping.passes * (1 + round(words * slow) + 1 + round(params * slow))
    run = sum(_run_cycles(fields, mapping, config, geometry, p) for p in range(mapping.passes))
    macs = (fields["out_h"] * fields["out_w"] * fields["cout"] * fields["kh"] * fields["kw"] *
            fields["cin"])
    return LayerBreakdown(fetch, load, run, fetch + load + run + LAYER_END, macs)


def predict_layer_cycles(geometry, config, kind, fields, mapping, pause=0.0):
    return layer_breakdown(geometry, config, kind, fields, mapping, pause).total
