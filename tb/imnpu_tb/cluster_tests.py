"""cocotb regression of the cluster (top level ``cluster``).

Environment: ``IMNPU_CONFIG``, ``IMNPU_SEED`` (as the tile tests),
``IMNPU_LAYERS`` (random layers per run), ``IMNPU_PERF_DIR``.
Every output tensor is compared bit-exactly with the numpy reference
(:func:`imnpu_sw.compiler.reference`), every layer's cycle count with the
analytical model (:mod:`imnpu_sw.perf_model`, within 2 %).
"""

import json
import os
from pathlib import Path

import cocotb
import numpy as np

from imnpu_hw import get_config
from imnpu_hw.cluster.descriptor import ClusterError, LayerKind
from imnpu_ref import OperandType
from imnpu_ref.numbers import Encoding
from imnpu_sw.compiler import Conv, Dense, MaxPool, compile_network, encode_descriptor, reference
from imnpu_sw.mapping import ClusterGeometry, MappingError
from imnpu_sw.perf_model import predict_layer_cycles
from imnpu_sw.tensor import pack_tensor, unpack_tensor
from imnpu_tb.cluster_driver import ClusterHost, SystemMemory
from imnpu_tb.stimulus import random_output_stage

CONFIG = get_config(os.environ.get("IMNPU_CONFIG", "tiny"))
SEED = int(os.environ.get("IMNPU_SEED", "20261124"))
LAYERS = int(os.environ.get("IMNPU_LAYERS", "24"))
ACT_WORD = 32
GEOMETRY = ClusterGeometry.from_config(CONFIG, ACT_WORD)

TYPES = ([OperandType(b, Encoding.SIGNED) for b in (2, 3, 4)] +
         [OperandType(b, Encoding.UNSIGNED) for b in (1, 2, 3, 4)] +
         [OperandType(1, Encoding.BIPOLAR)])


def _rng(dut, name):
    seed = SEED + sum(map(ord, name))
    dut._log.info(f"test {name}: config {CONFIG.name}, seed {seed} (IMNPU_SEED={SEED})")
    return np.random.default_rng(seed)


_params = random_output_stage


def random_layer(rng, in_shape, x_type, kind=None, w_type=None, out_type=None):
    kind = kind or rng.choice(["conv", "conv", "conv", "dense", "maxpool"])
    H, W, C = in_shape
    if kind == "maxpool":
        k = (int(rng.integers(1, min(3, H) + 1)), int(rng.integers(1, min(3, W) + 1)))
        return MaxPool(k, (int(rng.integers(1, 3)), int(rng.integers(1, 3))))
    w_type = w_type or TYPES[rng.integers(len(TYPES))]
    out_type = out_type or (TYPES + ["int32"])[rng.integers(len(TYPES) + 1)]
    cout = int(rng.integers(1, 2 * CONFIG.T * CONFIG.R + 1)) if rng.random() < 0.3 else \
        int(rng.integers(1, CONFIG.T * 4 + 1))
    relu = bool(rng.random() < 0.5)
    if kind == "dense":
        k = H * W * C
        w = w_type.random(rng, (cout, k))
        return Dense(w, w_type, *_params(rng, cout, k, x_type, w_type, out_type), out_type, relu)
    pad = (int(rng.integers(0, 2)), int(rng.integers(0, 2)))
    kh = int(rng.integers(1, min(3, H + 2 * pad[0]) + 1))
    kw = int(rng.integers(1, min(3, W + 2 * pad[1]) + 1))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    w = w_type.random(rng, (cout, kh, kw, C))
    return Conv(w, w_type, *_params(rng, cout, kh * kw * C, x_type, w_type, out_type),
                out_type, stride, pad, relu)


async def _setup(dut, rng=None):
    """Clock, reset, host and system memory model: once per cocotb test."""
    host = ClusterHost(dut, ACT_WORD)
    await host.start_clock()
    memory = SystemMemory(dut, {}, rng)
    cocotb.start_soon(memory.run())
    return host, memory


async def run_network(bench, in_values, in_type, layers, pause=0.0):
    """Compile, load, run and check one network; returns per-layer results."""
    host, memory = bench
    program = compile_network(GEOMETRY, in_values.shape, in_type, layers)
    memory.words = dict(program.memory)
    memory.pause = pause
    await host.write_words(program.input_base, pack_tensor(in_values, in_type, ACT_WORD))
    code, cycles, saturated = await host.run(program.desc_addr, max_cycles=2_000_000)
    assert code == ClusterError.NONE.value, f"cluster error {ClusterError(code).name}"
    expected, exp_sat = reference(in_values, layers)
    H, W, C = program.output_shape
    out_t = program.output_type
    if out_t == "int32":
        words = await host.read_words(program.output_base, H * W * C)
        got = np.array([w - (1 << 32) if w >> 31 else w for w in words]).reshape(H, W, C)
    else:
        opw = -(-C * {1: 1, 2: 2, 3: 4, 4: 4}[out_t.bits] // ACT_WORD)
        words = await host.read_words(program.output_base, H * W * opw)
        got = unpack_tensor(words, (H, W, C), out_t, ACT_WORD)
    mismatch = np.argwhere(got != expected)
    assert mismatch.size == 0, (
        f"{len(mismatch)} output elements differ; first at {tuple(mismatch[0])}: "
        f"got {got[tuple(mismatch[0])]}, expected {expected[tuple(mismatch[0])]}")
    assert saturated == int(exp_sat), f"saturation flag {saturated}, reference {exp_sat}"
    results = []
    assert len(host.layers) == len(layers)
    for (index, measured), (kind, fields, mapping) in zip(host.layers, program.layers):
        predicted = predict_layer_cycles(GEOMETRY, CONFIG, kind, fields, mapping, pause=pause)
        results.append({"kind": kind, "cycles": measured, "predicted": predicted,
                        "fields": {k: (v if isinstance(v, int) else str(v))
                                   for k, v in fields.items() if k != "kind"},
                        "mapping": mapping.__dict__ if mapping else None})
        # random memory pauses make the load phases random: exact cycles only without
        if pause == 0:
            assert abs(measured - predicted) <= 0.02 * measured, (
                f"layer {index} ({kind}): {measured} cycles measured, model says {predicted}")
    return results


@cocotb.test()
async def random_layers(dut):
    """Random conv, dense and maxpool layers over every type, shape and mapping case."""
    rng = _rng(dut, "random_layers")
    bench = await _setup(dut, rng)
    seen = set()
    done = 0
    attempts = 0
    while done < LAYERS:
        attempts += 1
        assert attempts < 50 * LAYERS, "could not draw mappable layers"
        x_type = TYPES[done % len(TYPES)]
        shape = (int(rng.integers(1, 6)), int(rng.integers(1, 6)),
                 int(rng.integers(1, 9)) if rng.random() < 0.8 else
                 int(rng.integers(CONFIG.W // 4, CONFIG.W + 8)))
        x = x_type.random(rng, shape)
        # every weight and output type comes round as often as every input type
        # (the first round is all conv with weights of the input's type: L = 1, 2, 4)
        layer = random_layer(rng, shape, x_type, kind="conv" if done < len(TYPES) else None,
                             w_type=TYPES[(done + done // 8) % len(TYPES)],
                             out_type=(TYPES + ["int32"])[(5 * done + 2) % (len(TYPES) + 1)])
        try:
            results = await run_network(bench, x, x_type, [layer],
                                        pause=0.1 if done % 2 else 0.0)
        except MappingError:
            continue
        r = results[0]
        seen.add(f"x={x_type}")
        if r["mapping"]:
            m = r["mapping"]
            seen.add(f"w={layer.w_type}")
            seen.add(f"out={layer.out_type}")
            seen.add("multi-chunk" if m["nch"] > 1 else "one-chunk")
            seen.add("multi-pass" if m["passes"] > 1 else "one-pass")
            seen.add("slices" if m["spp"] > 1 else "whole-cin")
            seen.add(f"L={m['lane']}")
        seen.add(r["kind"])
        f = r["fields"]
        dut._log.info(f"layer {done}: {r['kind']} {f['in_h']}x{f['in_w']}x{f['cin']} "
                      f"x={f['x_type']} w={f.get('w_type')} out={f.get('o_type')} "
                      f"map={r['mapping'] and {k: r['mapping'][k] for k in ('lane', 'nch', 'cpt', 'passes', 'spp')}} "
                      f"-> {r['cycles']} cycles (model {r['predicted']}) bit-exact")
        done += 1
    dut._log.info(f"random_layers: {done} layers bit-exact; cases {sorted(seen)}")
    if LAYERS >= 40:
        wanted = ({f"x={t}" for t in TYPES} | {f"w={t}" for t in TYPES} |
                  {f"out={t}" for t in TYPES + ['int32']} |
                  {"multi-chunk", "multi-pass", "slices", "L=1", "L=2", "L=4",
                   "conv", "dense", "maxpool"})
        assert wanted <= seen, f"cases never drawn: {sorted(wanted - seen)}"


@cocotb.test()
async def three_layer_network(dut):
    """conv -> conv -> dense from one descriptor list, no host action between layers."""
    rng = _rng(dut, "three_layer_network")
    x_type = OperandType(4, Encoding.UNSIGNED)
    s4, u2 = OperandType(4, Encoding.SIGNED), OperandType(2, Encoding.UNSIGNED)
    x = x_type.random(rng, (6, 6, 3))
    layers = [
        Conv(s4.random(rng, (8, 3, 3, 3)), s4, *_params(rng, 8, 27, x_type, s4, u2), u2,
             (1, 1), (1, 1), True),
        Conv(s4.random(rng, (8, 3, 3, 8)), s4, *_params(rng, 8, 72, u2, s4, u2), u2,
             (2, 2), (1, 1), True),
        Dense(s4.random(rng, (10, 3 * 3 * 8)), s4, *_params(rng, 10, 72, u2, s4, "int32"),
              "int32", False),
    ]
    bench = await _setup(dut, rng)
    await run_network(bench, x, x_type, layers, pause=0.2)
    results = await run_network(bench, x, x_type, layers, pause=0.0)
    for r in results:
        dut._log.info(f"{r['kind']}: {r['cycles']} cycles (model {r['predicted']})")


ILLEGAL = {
    "BAD_KIND": dict(kind=7),
    "ZERO_DIM": dict(cin=0),
    "BAD_TYPE": dict(x_type={"bits": 1, "encoding": 1}),
    "BAD_LANE": dict(lane=0, x_type={"bits": 4, "encoding": 1}),
    "KERNEL_TOO_LARGE": dict(kh=9),
    "BAD_SHAPE": dict(out_h=5),
    "BAD_MAPPING": dict(nch=99),
    "ACT_OVERFLOW": dict(out_base=10 ** 6),
    "OVERLAP": dict(out_base=1),
}


@cocotb.test()
async def illegal_descriptors(dut):
    """Every illegal descriptor class: its error code, no hang, no write outside."""
    rng = _rng(dut, "illegal_descriptors")
    s4 = OperandType(4, Encoding.SIGNED)
    x = s4.random(rng, (4, 4, 4))
    layer = Conv(s4.random(rng, (4, 3, 3, 4)), s4, *_params(rng, 4, 36, s4, s4, s4), s4,
                 (1, 1), (1, 1), False)
    program = compile_network(GEOMETRY, x.shape, s4, [layer])
    base_fields = program.layers[0][1]
    host, memory = await _setup(dut, rng)
    memory.words = dict(program.memory)
    in_words = pack_tensor(x, s4, ACT_WORD)
    await host.write_words(program.input_base, in_words)
    sentinel = [0xA5A5A5A5 ^ i for i in range(64)]
    await host.write_words(program.output_base, sentinel)
    for name, change in ILLEGAL.items():
        raw_kind = change.get("kind")
        fields = dict(base_fields, **{k: v for k, v in change.items() if k != "kind"})
        words = encode_descriptor(fields)
        if raw_kind is not None:     # a kind code the enum does not have
            words[0] = (words[0] & ~0xF) | raw_kind
        memory.words.update(enumerate(words, 0x40))
        code, _, _ = await host.run(0x40, max_cycles=10_000)
        assert ClusterError(code).name == name, f"{name}: got {ClusterError(code).name}"
        assert await host.read_words(program.output_base, 64) == sentinel, f"{name} wrote output"
        assert await host.read_words(program.input_base, len(in_words)) == in_words
        dut._log.info(f"illegal descriptor {name}: error code {code}, nothing written")
    # a system-memory read error in the weights
    memory.error_addrs.add(base_fields["weights"] + 3)
    code, _, _ = await host.run(program.desc_addr, max_cycles=10_000)
    assert code == ClusterError.MEM_ERROR.value
    # the cluster still works afterwards; host accesses while it runs are refused
    memory.error_addrs.clear()
    await host.start(program.desc_addr)
    _, err = await host.access(program.output_base, write=True, data=0)
    assert err == 1, "a host write while busy was accepted"
    code, _, _ = await host.wait_done(max_cycles=100_000)
    assert code == ClusterError.NONE.value
    expected, _ = reference(x, [layer])
    H, W, C = program.output_shape
    got = unpack_tensor(await host.read_words(program.output_base, H * W), (H, W, C), s4, ACT_WORD)
    assert (got == expected).all()


@cocotb.test()
async def utilisation(dut):
    """Representative layers for make perf: cycles, model, MAC utilisation."""
    rng = _rng(dut, "utilisation")
    bench = await _setup(dut, rng)
    s4 = OperandType(4, Encoding.SIGNED)
    b1 = OperandType(1, Encoding.BIPOLAR)
    cases = []
    W, R, T = CONFIG.W, CONFIG.R, CONFIG.T
    # reduction exactly fills a row at L = 4 and at L = 1; 1x1 and 2x2 kernels
    hw = 24 if CONFIG.W >= 256 else 8      # enough pixels to amortise the weight load
    for name, xt, wt, cin, k, hw in (
            ("conv1x1 s4 fills row", s4, s4, W // 4, 1, hw),
            ("conv2x2 s4 fills row", s4, s4, W // 16, 2, hw + 1),
            ("conv1x1 b1 fills row", b1, b1, W, 1, hw),
            ("conv3x3 s4 3 chunks", s4, s4, W // 12 if W >= 48 else 4, 3, hw)):
        cout = T * R
        out_t = s4
        x = xt.random(rng, (hw, hw, cin))
        layer = Conv(wt.random(rng, (cout, k, k, cin)), wt,
                     *_params(rng, cout, k * k * cin, xt, wt, out_t), out_t, (1, 1), (0, 0), True)
        try:
            results = await run_network(bench, x, xt, [layer], pause=0.0)
        except MappingError as exc:
            dut._log.info(f"{name}: does not map ({exc})")
            continue
        r = results[0]
        m = r["mapping"]
        macs = (r["fields"]["out_h"] * r["fields"]["out_w"] * cout * k * k * cin)
        peak = T * CONFIG.P * W // m["lane"]
        r.update(name=name, macs=macs, utilisation=macs / (r["cycles"] * peak))
        cases.append(r)
        dut._log.info(f"{name}: {r['cycles']} cycles (model {r['predicted']}), "
                      f"utilisation {100 * r['utilisation']:.1f} %")
    perf_dir = os.environ.get("IMNPU_PERF_DIR")
    if perf_dir:
        Path(perf_dir).mkdir(parents=True, exist_ok=True)
        sim = os.environ.get("IMNPU_SIM", "unknown")
        (Path(perf_dir) / f"cluster_layers_{CONFIG.name}_{sim}.json").write_text(
            json.dumps(cases, indent=1, default=str))
    assert cases
