"""The register map (``imnpu_hw.top.regmap``) and what ``imnpu_sim.regs`` generates from it.

Invariants of the map and the memory windows, ``docs/registers.md`` up to
date, the C header compiled and run by gcc against the Python values, the
standalone Python module against :mod:`imnpu_sw.regs`, field helpers.
"""

import importlib.util
import re
import shutil
import subprocess
import sys
from itertools import combinations

import pytest
from hypothesis import given, strategies as st

from imnpu_hw.config import CONFIGS
from imnpu_hw.top import regmap
from imnpu_sim import regs as gen
from imnpu_sw import regs as sw

BLOCKS = {"global": regmap.GLOBAL_REGISTERS, "cluster": regmap.CLUSTER_REGISTERS}
ALL_FIELDS = [(r.name, f.name) for r in regmap.GLOBAL_REGISTERS + regmap.CLUSTER_REGISTERS
              for f in r.fields]
CONSTANTS = [d for d in gen.definitions() if not isinstance(d, str)]


# ------------------------------------------------------------------ map invariants

@pytest.mark.parametrize("block", BLOCKS)
def test_registers_aligned_and_disjoint(block):
    regs = BLOCKS[block]
    offsets = [r.offset for r in regs]
    assert all(o % 4 == 0 and o >= 0 for o in offsets)
    assert len(set(offsets)) == len(offsets), "two registers at one offset"
    limit = regmap.CLUSTER_REG_BASE if block == "global" else regmap.CLUSTER_REG_STRIDE
    assert max(offsets) + 4 <= limit
    for r in regs:
        assert r.access in gen.ACCESS_RULES, r.name
        assert len({f.name for f in r.fields}) == len(r.fields), r.name
        for f in r.fields:
            assert f.width > 0 and f.lsb >= 0 and f.lsb + f.width <= 32, (r.name, f.name)
        for a, b in combinations(r.fields, 2):
            assert not a.mask & b.mask, (r.name, a.name, b.name)


def test_register_names_unique():
    names = [r.name for regs in BLOCKS.values() for r in regs]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", n) for n in names)


def test_register_space_layout():
    end = regmap.CLUSTER_REG_BASE + regmap.MAX_CLUSTERS * regmap.CLUSTER_REG_STRIDE
    assert regmap.CLUSTER_REG_BASE % 4 == regmap.CLUSTER_REG_STRIDE % 4 == 0
    assert end <= regmap.REG_SPACE
    assert regmap.REG_SPACE <= regmap.window_base(0)
    # the per-cluster vectors have a bit for every cluster
    for name in ("START", "BUSY", "IRQ_ENABLE", "IRQ_STATUS"):
        assert sum(f.width for f in sw.register(name).fields) >= regmap.MAX_CLUSTERS


def _largest():
    act = max(cfg.A for cfg in CONFIGS.values())
    tiles = max(cfg.T * regmap.tile_stride(cfg.W, cfg.R) for cfg in CONFIGS.values())
    return act, tiles


def test_windows_disjoint():
    """Windows of every cluster up to MAX_CLUSTERS, sized for the largest configuration."""
    act, tiles = _largest()
    spans = [(0, regmap.REG_SPACE, "registers")]
    for c in range(regmap.MAX_CLUSTERS):
        base = regmap.window_base(c)
        assert base % regmap.WINDOW_STRIDE == 0
        for start, size, what in ((base + regmap.ACT_WINDOW, act, "act"),
                                  (base + regmap.TILE_WINDOW, tiles, "tiles")):
            assert base <= start and start + size <= base + regmap.WINDOW_STRIDE, (c, what)
            spans.append((start, start + size, f"{what}{c}"))
    spans.sort()
    for (s0, e0, n0), (s1, e1, n1) in zip(spans, spans[1:]):
        assert e0 <= s1, f"{n0} overlaps {n1}"
    assert spans[-1][1] <= 1 << 32


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=list(CONFIGS))
def test_config_fits_windows(cfg):
    gen._check_config(cfg)
    stride = regmap.tile_stride(cfg.W, cfg.R)
    assert regmap.ACT_WINDOW + cfg.A <= regmap.TILE_WINDOW or regmap.TILE_WINDOW + \
        cfg.T * stride <= regmap.ACT_WINDOW
    assert sw.identity_values(cfg)["TILE_STRIDE"] == stride


@pytest.mark.parametrize("words", [1, 2, 3, 5, 8, 32, 33, 128])
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 16, 17, 32, 100])
def test_tile_stride(words, rows):
    """A power of two holding R rows at the documented pitch, 4 * 2**ceil(log2(W/32))."""
    width = 32 * words
    stride = regmap.tile_stride(width, rows)
    pitch = sw.row_pitch(width)
    assert pitch == 4 * (1 << (words - 1).bit_length())
    assert pitch >= 4 * words
    assert stride & (stride - 1) == 0
    assert stride >= rows * pitch


def test_docs_consistent_with_values():
    assert regmap.IMNPU_ID.to_bytes(4, "big") == b"IMNP"
    assert f"0x{regmap.IMNPU_ID:08X}" in sw.register("ID").doc
    for name, attr in sw.CONFIG_REGISTERS.items():
        assert sw.register(name).doc.startswith(f"`{attr}`:"), name
        assert sw.register(name).access == regmap.Access.RO
    version = {f.name: f for f in sw.register("VERSION").fields}
    assert sw.VERSION_MAJOR < 1 << version["MAJOR"].width
    assert sw.VERSION_MINOR < 1 << version["MINOR"].width


def test_error_codes():
    codes = [c for c, _, _ in regmap.ERROR_CODES]
    names = [n for _, n, _ in regmap.ERROR_CODES]
    assert codes == sorted(set(codes)) and codes[0] == 0
    assert len(set(names)) == len(names)
    width = {f.name: f for f in sw.register("STATUS").fields}["ERROR"].width
    assert max(codes) < 1 << width
    # the RTL's enums: the cluster's ClusterError, the DMA's JobError (STATUS.ERROR)
    from imnpu_hw.cluster.descriptor import ClusterError
    from imnpu_hw.interconnect.dma import JobError
    for e in ClusterError:
        assert sw.ERROR_NAMES[e.value] == e.name
    assert {e.value: e.name for e in JobError} == dict(sw.ERROR_NAMES)
    assert sw.ERROR.BAD_MAPPING == 7 and sw.ERROR_NAMES[7] == "BAD_MAPPING"


def test_responses():
    assert [n for n, _ in regmap.RESPONSES] == ["OKAY", "SLVERR", "DECERR"]
    assert [gen.AXI_RESP_CODES[n] for n, _ in regmap.RESPONSES] == [0, 2, 3]


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=list(CONFIGS))
def test_identity_values_match_rtl(cfg):
    """imnpu_sw.regs.identity_values agrees with what the control slave reads."""
    from imnpu_hw.top.control import ControlSlave
    slave = ControlSlave(cfg)
    for name, value in sw.identity_values(cfg).items():
        assert slave._constant(name) == value, name


# ------------------------------------------------------------------ generated document

def test_docs_up_to_date():
    result = subprocess.run([sys.executable, "-m", "imnpu_sim.regs", "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + "\nrun `make regs` and commit docs/registers.md"


def test_check_detects_stale_docs(tmp_path, monkeypatch):
    stale = tmp_path / "registers.md"
    stale.write_text(gen.render_markdown().replace("DESC_PTR", "DESC_PTX", 1))
    assert gen.check(stale)
    monkeypatch.setattr(gen, "DOCS", stale)
    assert gen.main(["--check"]) == 1
    stale.write_text(gen.render_markdown())
    assert gen.main(["--check"]) == 0


def test_docs_content():
    text = gen.render_markdown()
    for r in regmap.GLOBAL_REGISTERS:
        assert f"| `0x{r.offset:03X}` | [`{r.name}`]" in text
    for r in regmap.CLUSTER_REGISTERS:
        assert f"| `0x{r.offset:02X}` | [`{r.name}`]" in text
    for code, name, _ in regmap.ERROR_CODES:
        assert f"| {code} | `{name}` |" in text
    for cfg in CONFIGS.values():
        assert f"#### `{cfg.name}`" in text
        last = sw.tile_address(cfg, cfg.C - 1, cfg.T - 1, 0, 0)
        assert f"0x{last - (cfg.T - 1) * regmap.tile_stride(cfg.W, cfg.R):08X}" in text
    assert "0xFFFFFFFF" in text and "docs/cluster.md" in text


# ------------------------------------------------------------------ C header

@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Header and standalone module written by the CLI into a temporary directory."""
    out = tmp_path_factory.mktemp("regs")
    result = subprocess.run([sys.executable, "-m", "imnpu_sim.regs", "--out-dir", str(out),
                             "--only", "c", "python"], capture_output=True, text=True, check=True)
    header, module = out / "include" / "imnpu_regs.h", out / "python" / "imnpu_regs.py"
    assert result.stdout.split() == [str(header), str(module)]
    return header, module


def test_header_names(generated):
    text = generated[0].read_text()
    assert re.search(r"^#ifndef IMNPU_REGS_H\n#define IMNPU_REGS_H\n", text, re.M)
    assert "#include <stdint.h>" in text
    names = re.findall(r"^#define (\w+)", text, re.M)
    assert all(n.startswith("IMNPU_") for n in names)
    assert len(set(names)) == len(names)
    for name, *_ in CONSTANTS:
        assert name in names


def _tile_cases():
    for cfg in CONFIGS.values():
        stride, pitch = regmap.tile_stride(cfg.W, cfg.R), sw.row_pitch(cfg.W)
        for c, t, r, w in ((0, 0, 0, 0), (cfg.C - 1, cfg.T - 1, cfg.R - 1, cfg.W // 32 - 1),
                           (cfg.C // 2, cfg.T // 2, cfg.R // 2, cfg.W // 64)):
            yield cfg, (c, stride, pitch, t, r, w), sw.tile_address(cfg, c, t, r, w)


def _expressions():
    """(C expression, Python value) pairs printed by the test program."""
    exprs = [(name, value) for name, value, *_ in CONSTANTS]
    for c in (0, 1, 7, regmap.MAX_CLUSTERS - 1):
        exprs.append((f"IMNPU_WINDOW_BASE({c})", regmap.window_base(c)))
        exprs.append((f"IMNPU_CLUSTER_BIT({c})", 1 << c))
        exprs.append((f"IMNPU_ACT_ADDR({c}, 1000)", sw.act_address(c, 1000)))
        for r in regmap.CLUSTER_REGISTERS:
            exprs.append((f"IMNPU_CLUSTER_REG({c}, IMNPU_CL_{r.name}_OFFSET)",
                          sw.cluster_reg(c, r.name)))
    for _, args, addr in _tile_cases():
        exprs.append((f"IMNPU_TILE_ADDR({', '.join(map(str, args))})", addr))
    status = 0xDEADBEEF
    for f in sw.register("STATUS").fields:
        field = f"IMNPU_CL_STATUS_{f.name}"
        exprs.append((f"IMNPU_FIELD_GET({field}, 0x{status:X}u)",
                      sw.field_get("STATUS", f.name, status)))
        exprs.append((f"IMNPU_FIELD_SET({field}, 0x{status:X}u, 1u)",
                      sw.field_set("STATUS", f.name, status, 1)))
    exprs.append(("IMNPU_FIELD_GET(IMNPU_VERSION_MAJOR, IMNPU_VERSION_VALUE)", sw.VERSION_MAJOR))
    return exprs


GCC = shutil.which("gcc")
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]


@pytest.mark.skipif(GCC is None, reason="gcc not found")
def test_header_values_in_c(generated, tmp_path):
    """Compile and run a program printing every constant and macro; compare with Python."""
    exprs = _expressions()
    lines = ["#include <stdio.h>", '#include "imnpu_regs.h"',
             '#include "imnpu_regs.h"  /* the include guard allows a second include */',
             "int main(void) {"]
    lines += [f'    printf("%llu\\n", (unsigned long long)({e}));' for e, _ in exprs]
    lines += ["    return 0;", "}"]
    src = tmp_path / "print_regs.c"
    src.write_text("\n".join(lines) + "\n")
    exe = tmp_path / "print_regs"
    subprocess.run([GCC, *CFLAGS, "-I", str(generated[0].parent), str(src), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    printed = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    got = [int(v) for v in printed.split()]
    assert len(got) == len(exprs)
    wrong = [(e, hex(g), hex(v)) for (e, v), g in zip(exprs, got) if g != v]
    assert not wrong


@pytest.mark.skipif(GCC is None, reason="gcc not found")
def test_docs_c_example_compiles(generated, tmp_path):
    block = re.search(r"```c\n(.*?)```", gen.render_markdown(), re.S).group(1)
    src = tmp_path / "example.c"
    src.write_text(block)
    result = subprocess.run([GCC, *CFLAGS, "-fsyntax-only", "-I", str(generated[0].parent),
                             str(src)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------ Python definitions

@pytest.fixture(scope="module")
def standalone(generated):
    spec = importlib.util.spec_from_file_location("imnpu_regs_standalone", generated[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_standalone_module_agrees(standalone):
    m = standalone
    for name, value, *_ in CONSTANTS:
        assert getattr(m, name) == value, name
    assert m.IMNPU_ID_VALUE == sw.IMNPU_ID
    assert m.IMNPU_VERSION_VALUE == sw.VERSION_VALUE
    for name, offset in sw.REG.items():
        assert getattr(m, f"IMNPU_{name}_OFFSET") == offset
    for name, offset in sw.CLUSTER_REG.items():
        assert getattr(m, f"IMNPU_CL_{name}_OFFSET") == offset
        for c in (0, 3, regmap.MAX_CLUSTERS - 1):
            assert m.IMNPU_CLUSTER_REG(c, offset) == sw.cluster_reg(c, name)
    for code, name in sw.ERROR_NAMES.items():
        assert getattr(m, f"IMNPU_ERR_{name}") == code
    for c in range(regmap.MAX_CLUSTERS):
        assert m.IMNPU_WINDOW_BASE(c) == sw.window_base(c)
        assert m.IMNPU_ACT_ADDR(c, 5) == sw.act_address(c, 5)
    for cfg, args, addr in _tile_cases():
        assert m.IMNPU_TILE_ADDR(*args) == addr
        prefix = f"IMNPU_CFG_{cfg.name.upper()}_"
        for name, value in sw.identity_values(cfg).items():
            if name not in ("ID", "VERSION"):
                assert getattr(m, prefix + name) == value
        assert getattr(m, prefix + "ROW_PITCH") == sw.row_pitch(cfg.W)


@given(st.sampled_from(ALL_FIELDS), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_field_round_trip(standalone, reg_field, value, raw):
    reg, name = reg_field
    f = next(f for f in sw.register(reg).fields if f.name == name)
    x = raw & ((1 << f.width) - 1)
    new = sw.field_set(reg, name, value, x)
    assert 0 <= new < 1 << 32
    assert sw.field_get(reg, name, new) == x
    assert new & ~f.mask == value & ~f.mask
    assert sw.field_set(reg, name, value, sw.field_get(reg, name, value)) == value
    assert sw.fields(reg, new)[name] == x
    prefix = ("IMNPU_CL_" if reg in sw.CLUSTER_REG else "IMNPU_") + f"{reg}_{name}"
    assert standalone.IMNPU_FIELD_SET(prefix, value, x) == new
    assert standalone.IMNPU_FIELD_GET(prefix, value) == sw.field_get(reg, name, value)


def test_field_errors():
    with pytest.raises(ValueError):
        sw.field_set("STATUS", "ERROR", 0, 16)
    with pytest.raises(ValueError):
        sw.field_set("STATUS", "ERROR", 0, -1)
    with pytest.raises(ValueError):
        sw.field_get("STATUS", "NOPE", 0)
    with pytest.raises(ValueError):
        sw.field_get("NOPE", "ERROR", 0)


def test_address_helpers():
    assert sw.REG.START == sw.REG["START"] == 0x40
    with pytest.raises(TypeError):
        sw.REG["START"] = 0
    with pytest.raises(AttributeError):
        sw.REG.NOPE
    assert sw.cluster_reg(2, "STATUS") == regmap.CLUSTER_REG_BASE + 2 * regmap.CLUSTER_REG_STRIDE
    with pytest.raises(ValueError):
        sw.cluster_reg(regmap.MAX_CLUSTERS, "STATUS")
    with pytest.raises(ValueError):
        sw.cluster_reg(0, "START")
    cfg = CONFIGS["fpga"]
    assert sw.act_address(1, 3, cfg) == regmap.window_base(1) + regmap.ACT_WINDOW + 12
    with pytest.raises(ValueError):
        sw.act_address(0, cfg.A // 4, cfg)
    with pytest.raises(ValueError):
        sw.act_address(cfg.C, 0, cfg)
    for bad in ((cfg.C, 0, 0, 0), (0, cfg.T, 0, 0), (0, 0, cfg.R, 0), (0, 0, 0, cfg.W // 32)):
        with pytest.raises(ValueError):
            sw.tile_address(cfg, *bad)


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=list(CONFIGS))
def test_tile_addresses_distinct(cfg):
    """Every word of every tile of a cluster has its own address inside the tile window."""
    base = regmap.window_base(cfg.C - 1) + regmap.TILE_WINDOW
    addrs = {sw.tile_address(cfg, cfg.C - 1, t, r, w)
             for t in range(cfg.T) for r in range(cfg.R) for w in range(cfg.W // 32)}
    assert len(addrs) == cfg.T * cfg.R * cfg.W // 32
    assert min(addrs) == base
    assert max(addrs) < base + cfg.T * regmap.tile_stride(cfg.W, cfg.R)
