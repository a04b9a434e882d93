"""Critical paths of a placed, unrouted design, from nextpnr's SDF.

nextpnr prints its post-placement Fmax estimate but names no path before
routing, and routing the whole self-test takes a quarter of an hour or more.
Its SDF, written after placement (``--no-route --sdf``), holds the same
estimates the placer uses:
cell delays (``IOPATH``), predicted net delays (``INTERCONNECT``) and setup
times. :func:`analyse` runs a longest-path search over them and returns the
worst register-to-register paths in the shape of nextpnr's JSON report
(``critical_paths``), so :func:`imnpu_fpga.report.critical_path_summary`
reads both, and counts the failing endpoints per RTL signal.

One clock domain is assumed (the core clock; the board pins are asynchronous
and are neither start nor end points). On the ``tile`` block the worst path
found here equals nextpnr's estimate to the picosecond (``test_fpga_flow.py``
checks the arithmetic on a hand-written SDF).
"""

import re
from collections import Counter, defaultdict, deque

from .report import rtl_name

__all__ = ["analyse", "CLOCK_PINS"]

#: cell pins that are clock inputs: an IOPATH from one is a clock-to-output delay
CLOCK_PINS = frozenset({"CLK", "CLKA", "CLKB", "CLK0", "CLK1", "CLK2", "CLK3", "WCK",
                        "RCLK", "WCLK"})

_TRIPLE = r"\((\d+):(\d+):(\d+)\)"
_INTERCONNECT = re.compile(rf"\(INTERCONNECT (\S+) (\S+) {_TRIPLE}")
_IOPATH = re.compile(rf"\(IOPATH (\S+) (\S+) {_TRIPLE}")
_SETUP = re.compile(rf"\(SETUPHOLD \((?:posedge|negedge) (\S+)\) \(posedge (\S+)\) {_TRIPLE}")
_INSTANCE = re.compile(r"\(INSTANCE (.*)\)")


def _unescape(name):
    return name.replace("\\", "")


def _parse(lines):
    """``(edges, starts, setup)``: ``edges[pin]`` lists ``(pin, ps, kind)`` with kind
    ``routing`` or ``logic``; ``starts[pin]`` the clock-to-out of a register output;
    ``setup[pin]`` the setup time of a register input. Delays are the slow corner."""
    edges, starts, setup = defaultdict(list), {}, {}
    inst = None
    for line in lines:
        line = line.strip()
        if line.startswith("(INTERCONNECT"):
            mo = _INTERCONNECT.match(line)
            edges[_unescape(mo.group(1))].append((_unescape(mo.group(2)), int(mo.group(5)),
                                                  "routing"))
        elif line.startswith("(INSTANCE"):
            inst = _unescape(_INSTANCE.match(line).group(1))
        elif line.startswith("(IOPATH"):
            mo = _IOPATH.match(line)
            src, dst, ps = mo.group(1), mo.group(2), int(mo.group(5))
            if src in CLOCK_PINS:
                pin = f"{inst}/{dst}"
                starts[pin] = max(starts.get(pin, 0), ps)
            else:
                edges[f"{inst}/{src}"].append((f"{inst}/{dst}", ps, "logic"))
        elif line.startswith("(SETUPHOLD"):
            mo = _SETUP.match(line)
            if mo and mo.group(2) in CLOCK_PINS:
                pin = f"{inst}/{mo.group(1)}"
                setup[pin] = max(setup.get(pin, 0), int(mo.group(5)))
    return edges, starts, setup


def _pin(node):
    cell, _, port = node.rpartition("/")
    return {"cell": cell, "port": port}


def analyse(sdf_path, period_ns, paths=10, clock="sync"):
    """Worst paths of the placed design in ``sdf_path`` against ``period_ns``.

    Returns a dict: ``fmax_mhz`` (of the worst path), ``endpoints``, ``failing``
    (endpoints over the period), ``failing_by_signal`` (``[(rtl_name, count)]``,
    most first) and ``critical_paths``: up to ``paths`` worst paths with distinct
    start and end signals, each ``{"from", "to", "path": [steps]}`` with steps
    ``{"type": clk-to-q | logic | routing | setup, "from", "to", "delay"}`` (ns),
    as in nextpnr's ``--report``.
    """
    if period_ns <= 0:
        raise ValueError(f"period_ns must be positive, not {period_ns}")
    with open(sdf_path) as f:
        edges, starts, setup = _parse(f)
    indegree = Counter()
    for succs in edges.values():
        for v, _, _ in succs:
            indegree[v] += 1
    arrival, pred = dict(starts), {}
    queue = deque(n for n in set(edges) | set(starts) if indegree[n] == 0)
    while queue:
        u = queue.popleft()
        at = arrival.get(u)
        for v, ps, kind in edges.get(u, ()):
            if at is not None and at + ps > arrival.get(v, -1):
                arrival[v], pred[v] = at + ps, (u, ps, kind)
            indegree[v] -= 1
            if indegree[v] == 0:
                queue.append(v)
    ends = sorted(((arrival[p] + s, p) for p, s in setup.items() if p in arrival), reverse=True)
    if not ends:
        raise ValueError(f"{sdf_path}: no register-to-register path")
    period = period_ns * 1000
    failing = [p for t, p in ends if t > period]
    by_signal = Counter(rtl_name(p.rpartition("/")[0]) for p in failing)

    critical, seen = [], set()
    for total, end in ends:
        if len(critical) >= paths:
            break
        steps, node = [], end
        while node in pred:
            u, ps, kind = pred[node]
            steps.append({"type": kind, "from": _pin(u), "to": _pin(node), "delay": ps / 1000})
            node = u
        key = (rtl_name(node.rpartition("/")[0]), rtl_name(end.rpartition("/")[0]))
        if key in seen:
            continue
        seen.add(key)
        steps.reverse()
        steps.insert(0, {"type": "clk-to-q", "from": _pin(node), "to": _pin(node),
                         "delay": starts[node] / 1000})
        steps.append({"type": "setup", "from": _pin(end), "to": _pin(end),
                      "delay": setup[end] / 1000})
        critical.append({"from": clock, "to": clock, "path": steps})
    return {
        "fmax_mhz": round(1e6 / ends[0][0], 2),
        "endpoints": len(ends),
        "failing": len(failing),
        "failing_by_signal": by_signal.most_common(),
        "critical_paths": critical,
    }
