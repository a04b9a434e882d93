"""The cluster in Amaranth's simulator: random layers bit-exact, cycle model exact.

The cocotb regression (``make sim K=cluster``) runs many more layers on the
exported Verilog; this is the fast check.
"""

import numpy as np
import pytest

from imnpu_hw import get_config
from imnpu_hw.cluster.cluster import Cluster
from imnpu_hw.cluster.descriptor import ClusterError
from imnpu_ref import OperandType
from imnpu_ref.numbers import Encoding
from imnpu_sw.compiler import Conv, compile_network, reference
from imnpu_sw.mapping import ClusterGeometry, MappingError
from imnpu_sw.perf_model import predict_layer_cycles
from imnpu_sw.tensor import pack_tensor, unpack_tensor
from imnpu_tb.cluster_amaranth import run_cluster
from imnpu_tb.cluster_tests import TYPES, random_layer
from imnpu_tb.stimulus import random_output_stage

SEED = 1124


@pytest.fixture(scope="module")
def tiny():
    cfg = get_config("tiny")
    return cfg, ClusterGeometry.from_config(cfg, 32)


def _cluster(cfg):
    return Cluster(tiles=cfg.T, rows=cfg.R, width=cfg.W, parallel=cfg.P, act_bytes=cfg.A,
                   tile_depth=cfg.pipeline_depth)


def _check_layer(cfg, geo, x, x_type, layer, name):
    """Run one layer on the cluster: bit-exact with the reference, cycle-exact with
    the model. Returns the compiled descriptor fields."""
    prog = compile_network(geo, x.shape, x_type, [layer])
    kind, fields, mapping = prog.layers[0]
    H, W, C = prog.output_shape
    result = run_cluster(_cluster(cfg), prog.memory, prog.input_base,
                         pack_tensor(x, x_type, 32), prog.output_base,
                         H * W * fields["out_pixel_words"], prog.desc_addr)
    assert result["error"] == ClusterError.NONE
    expected, saturated = reference(x, [layer])
    if prog.output_type == "int32":
        got = np.array([w - (1 << 32) if w >> 31 else w for w in result["output"]])
        got = got.reshape(H, W, C)
    else:
        got = unpack_tensor(result["output"], (H, W, C), prog.output_type, 32)
    assert (got == expected).all(), f"{kind} layer {name} differs"
    assert result["saturated"] == int(saturated)
    assert result["layers"] == [predict_layer_cycles(geo, cfg, kind, fields, mapping)], \
        f"layer {name}: {fields} {mapping}"
    return fields


def _check_random_layers(tiny, monkeypatch, seed, count, **layer_kwargs):
    """``count`` random mappable layers (``random_layer(..., **layer_kwargs)``) on the
    cluster: bit-exact with the reference, cycle-exact with the model."""
    cfg, geo = tiny
    import imnpu_tb.cluster_tests as ct
    monkeypatch.setattr(ct, "CONFIG", cfg)
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    done = 0
    while done < count:
        x_type = TYPES[done % len(TYPES)]
        shape = (int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 9)))
        x = x_type.random(rng, shape)
        layer = random_layer(rng, shape, x_type, **layer_kwargs)
        try:
            compile_network(geo, shape, x_type, [layer])
        except MappingError:
            continue
        done += 1
        _check_layer(cfg, geo, x, x_type, layer, done)


def test_random_layers(tiny, monkeypatch):
    _check_random_layers(tiny, monkeypatch, SEED, 10)


def test_raw_int32_layers_cycle_exact(tiny, monkeypatch):
    """Raw int32 outputs stall the output stages (one packer cycle per channel):
    the model's output engine must follow the stalled pipeline cycle by cycle (a
    closed formula was 1 to 11 cycles off on four of these six layers)."""
    _check_random_layers(tiny, monkeypatch, 1, 6, kind="conv", out_type="int32")


def test_back_to_back_accumulation(tiny):
    """One-word chunks, one row group each (cpt = 1): every cycle a result adds to
    the accumulator entry the previous cycle's result wrote, the case the
    accumulators' write forwarding exists for (their block RAM reads are issued
    two cycles early). Padding adds one-cycle all-zero chunks."""
    cfg, geo = tiny
    seed = SEED + 1
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    # 1-bit unsigned features widened to the 4-bit lanes of the weights: NL = W / 4
    # lanes, a position of C = NL channels is one 32-bit word and one chunk
    x_type, w_type = OperandType(1, Encoding.UNSIGNED), OperandType(4, Encoding.SIGNED)
    C, cout = cfg.W // 4, cfg.T
    x = x_type.random(rng, (3, 3, C))
    w = w_type.random(rng, (cout, 2, 3, C))
    layer = Conv(w, w_type, *random_output_stage(rng, cout, 6 * C, x_type, w_type, "int32"),
                 "int32", (1, 1), (1, 1), False)
    fields = _check_layer(cfg, geo, x, x_type, layer, "back-to-back")
    assert (fields["ppc"], fields["spp"], fields["cpt"], fields["nch"]) == (1, 1, 1, 6)
    assert fields["in_pixel_words"] == 1


@pytest.mark.parametrize("kwargs,exc,message", [
    (dict(tiles=0, rows=8, width=64, act_bytes=1024), ValueError, "tiles must be positive"),
    (dict(tiles=2, rows=8, width=48, act_bytes=1024), ValueError, "multiple of 32"),
    (dict(tiles=2, rows=8, width=64, act_bytes=1024, act_word=16), ValueError, "act_word"),
    (dict(tiles=2, rows=8, width=64, act_bytes=1030), ValueError, "act_bytes"),
    (dict(tiles=2.0, rows=8, width=64, act_bytes=1024), TypeError, "tiles must be an integer"),
])
def test_bad_parameters(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        Cluster(**kwargs)

