"""The cluster's descriptor checks against the plain-integer reference.

The checks are a five-stage register pipeline fed while the descriptor arrives
word by word (``Cluster._check``); this drives it the same way, one word per
cycle (the tightest case the sequencer allows) into a register that held
another descriptor, and compares the error code in
DECODE with :func:`imnpu_ref.descriptor_checks.descriptor_error` for compiled
descriptors and for descriptors with random and corner-value fields.
"""

import numpy as np
import pytest
from amaranth import Elaboratable, Module, Shape, Signal
from amaranth.lib import data
from amaranth.sim import Simulator

from imnpu_hw import get_config
from imnpu_hw.cluster.cluster import Cluster
from imnpu_hw.cluster.descriptor import DESCRIPTOR_WORDS, ClusterError, Descriptor
from imnpu_ref.descriptor_checks import MAX_DIM, RESIDENT_WEIGHTS, descriptor_error
from imnpu_sw.compiler import compile_network, encode_descriptor
from imnpu_sw.mapping import ClusterGeometry, MappingError
from imnpu_tb.cluster_tests import TYPES, random_layer

SEED = 5150
DESCRIPTORS = 500          # per configuration, after the targeted ones
WORD = 32


class _Checks(Elaboratable):
    """The cluster's check pipeline alone, on a descriptor register ``desc``."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.desc = Signal(Descriptor.size)
        self.code = Signal(ClusterError)

    def elaborate(self, platform):
        m = Module()
        code, _ = self.cluster._check(m, Descriptor(self.desc))
        m.d.comb += self.code.eq(code)
        return m


def _width(shape):
    return Shape.cast(shape).width


def _decode(words):
    """Descriptor fields (plain integers, types as dicts) of descriptor ``words``."""
    bits = sum(w << (WORD * i) for i, w in enumerate(words))
    fields = {}
    for name, field in data.Layout.cast(Descriptor):
        value = (bits >> field.offset) & ((1 << _width(field.shape)) - 1)
        if name in ("x_type", "w_type", "o_type"):
            value = {"bits": value & 7, "encoding": value >> 3}
        fields[name] = value
    return fields


def _encode(fields):
    """Words of descriptor ``fields`` given as plain integers; unlike
    :func:`imnpu_sw.compiler.encode_descriptor` it takes codes the enums do not
    have (a kind 7, a lane code 3)."""
    bits = 0
    for name, field in data.Layout.cast(Descriptor):
        value = fields[name]
        if isinstance(value, dict):
            value = value["bits"] | value["encoding"] << 3
        bits |= (int(value) & ((1 << _width(field.shape)) - 1)) << field.offset
    return [(bits >> (WORD * i)) & 0xFFFFFFFF for i in range(DESCRIPTOR_WORDS)]


#: one descriptor per error class, as changes of a compiled conv layer
TARGETED = [dict(kind=7), dict(cin=0), dict(x_type={"bits": 1, "encoding": 1}),
            dict(lane=3), dict(kh=300), dict(out_h=5000), dict(nch=99),
            dict(out_base=0xFFFF_FF00), dict(out_base=1), dict(in_pixel_words=0xFFFF),
            dict(passes=2, weights=0xFFFF_FFFF), dict(spp=0xFFFF, ppc=1)]


def _corner_values(rng, width, cfg, depth):
    top = (1 << width) - 1
    pool = [0, 1, 2, 3, top, top - 1, MAX_DIM, MAX_DIM + 1, depth, depth + 1, depth - 1,
            int(rng.integers(1, 65)), int(rng.integers(0, top + 1)), cfg.R, cfg.R + 1]
    return [v & top for v in pool]


def _mutate(rng, fields, cfg, depth):
    fields = {k: (dict(v) if isinstance(v, dict) else v) for k, v in fields.items()}
    layout = data.Layout.cast(Descriptor)
    names = [n for n, _ in layout if not n.startswith("_")]
    for _ in range(int(rng.integers(1, 4))):
        name = names[rng.integers(len(names))]
        if name in ("x_type", "w_type", "o_type"):
            fields[name] = {"bits": int(rng.integers(0, 8)), "encoding": int(rng.integers(0, 4))}
        elif name == "kind":
            fields[name] = int(rng.integers(1, 16))
        else:
            values = _corner_values(rng, _width(layout[name].shape), cfg, depth)
            fields[name] = values[rng.integers(len(values))]
    return fields


def _base_descriptors(rng, geo, count):
    """``count`` compiled single-layer descriptors (``random_layer`` draws for
    ``imnpu_tb.cluster_tests.CONFIG``)."""
    out = []
    while len(out) < count:
        x_type = TYPES[len(out) % len(TYPES)]
        shape = (int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 9)))
        try:
            prog = compile_network(geo, shape, x_type, [random_layer(rng, shape, x_type)])
        except MappingError:
            continue
        out.append(_decode(encode_descriptor(prog.layers[0][1])))
    return out


@pytest.mark.parametrize("name", ["tiny", "fpga", "seed"])
def test_checks_match_reference(name, monkeypatch):
    import imnpu_tb.cluster_tests as ct
    cfg = get_config(name)
    monkeypatch.setattr(ct, "CONFIG", cfg)
    seed = SEED + sum(map(ord, name))
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    geo = ClusterGeometry.from_config(cfg, WORD)
    cluster = Cluster(tiles=cfg.T, rows=cfg.R, width=cfg.W, parallel=cfg.P, act_bytes=cfg.A,
                      tile_depth=cfg.pipeline_depth)
    depth = geo.act_words
    geometry = dict(tiles=cfg.T, rows=cfg.R, width=cfg.W, parallel=cfg.P, act_word=WORD,
                    act_depth=depth)

    bases = _base_descriptors(rng, geo, 12)
    while not any(b["passes"] > 1 for b in bases):
        bases += _base_descriptors(rng, geo, 1)
    cases = []
    for base in bases:
        assert descriptor_error(base, **geometry) == "NONE", "the compiler made a bad descriptor"
        cases.append(base)
    for change in TARGETED:
        cases.append(dict(bases[0], **change))
    # resident weights need one pass: ``weights`` is the last word the checks read
    cases += [dict(b, weights=RESIDENT_WEIGHTS) for b in bases if b["passes"] > 1]
    for _ in range(DESCRIPTORS):
        cases.append(_mutate(rng, bases[rng.integers(len(bases))], cfg, depth))

    dut = _Checks(cluster)
    seen, mismatches = {}, []

    async def bench(ctx):
        for fields in cases:
            words = _encode(fields)
            # the register holds another descriptor (random words; or the complement,
            # so every field differs) and the pipeline has settled on it
            previous = [int(w) for w in rng.integers(0, 1 << 32, DESCRIPTOR_WORDS,
                                                     dtype=np.uint64)]
            if rng.random() < 0.5:
                previous = [w ^ 0xFFFFFFFF for w in words]
            ctx.set(dut.desc, sum(w << (WORD * i) for i, w in enumerate(previous)))
            await ctx.tick().repeat(6)
            # words arrive one per cycle: word k is in the register from the cycle
            # after its response on, and the cycle after the last one is DECODE
            for k in range(DESCRIPTOR_WORDS):
                previous[k] = words[k]
                ctx.set(dut.desc, sum(w << (WORD * i) for i, w in enumerate(previous)))
                if k < DESCRIPTOR_WORDS - 1:
                    await ctx.tick()
            got = ClusterError(ctx.get(dut.code)).name       # DECODE
            want = descriptor_error(_decode(words), **geometry)
            seen[want] = seen.get(want, 0) + 1
            if got != want:
                mismatches.append((want, got, _decode(words)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    print(f"{name}: {len(cases)} descriptors, verdicts {seen}")
    assert not mismatches, f"{len(mismatches)} differ, first: {mismatches[0]}"
    classes = {e.name for e in ClusterError} - {"MEM_ERROR"}
    assert set(seen) == classes, f"not every verdict was drawn: missing {classes - set(seen)}"


def test_reference_constants_match_rtl():
    """The reference keeps its own copies (it never imports the RTL)."""
    import imnpu_hw.cluster.cluster as rtl
    assert MAX_DIM == rtl.MAX_DIM and RESIDENT_WEIGHTS == rtl.RESIDENT_WEIGHTS
