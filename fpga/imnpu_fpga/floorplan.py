"""Floorplan: fixed block RAM and multiplier sites for the clusters (ECP5).

A DIMC tile reads its whole ``W``-bit row in one cycle, and each of its 16
channel popcount trees takes a product from every nibble of that row. On the
FPGA the row is ``ceil(W / 36)`` block RAMs (``DP16KD``) side by side; left
to itself, nextpnr's placer scatters them over the device (on the `fpga`
self-test one tile's 8 block RAMs ended up 72 columns and two block RAM rows
apart), and the row's 256 bits then cross the device into 16 trees. In
router2's congestion map of that placement the block RAMs' read data and the
row registers behind them were a third of the tiles' over-used wires.

:func:`apply` fixes the sites (nextpnr's ``BEL`` attribute) of every tile's
block RAMs, next to each other in one block RAM row, in an order that follows
the row's bits. Each cluster gets a vertical strip of the device, so that its
tiles, and the logic they share, stay together; the tiles of a strip are
spread over the block RAM rows and evenly along them.

The cluster's other hard blocks go into the same strip, nearest its centre
first (the point between its tile rows): the activation memory, then the
accumulator and channel parameter memories, and the multipliers (``MULT18X18D``)
of the patch builder, the cluster, the pool and the output stages, in that
order. Left to the placer they spread over the whole device (on the `fpga`
self-test a builder's multipliers spanned columns 4 to 119, the two clusters'
memories mixed), and so did the logic between them: the builder's longest
paths were four fifths routing. The logic itself stays with the placer.

A cluster out of context (``BLOCK=cluster``) is one cluster over all the
columns. Only devices whose block RAM grid is listed in :data:`EBR_GRID` get a
floorplan; on others, and when the tiles do not fit, :func:`apply` leaves the
netlist as it is and says why.
"""

import re

__all__ = ["EBR_GRID", "DSP_GRID", "tile_ebr_cells", "cluster_hard_cells", "plan",
           "plan_cluster", "apply"]


def _ebr_columns_85f():
    # 13 groups of 4 block RAMs (EBR0..EBR3, two columns apart), groups 9 columns
    # apart, 11 between the seventh and the eighth (the centre clock spine)
    cols = []
    for g in range(13):
        base = 4 + 9 * g + (2 if g >= 7 else 0)
        cols += [(base + 2 * k, k) for k in range(4)]
    return cols


#: device (part name up to its speed grade) -> (block RAM rows, preferred first;
#: [(column, EBR index in its group)]), read from nextpnr's placements on the
#: LFE5U-85F (``NEXTPNR_BEL`` ``X<x>/Y<y>/EBR<k>``)
EBR_GRID = {
    "LFE5U-85F": ((22, 70, 46, 82), _ebr_columns_85f()),
}


def _dsp_columns_85f():
    # the block RAM groups' columns: MULT18_0, _1, _4 and _5 at offsets 0, 1, 4, 5
    cols = []
    for g in range(13):
        base = 4 + 9 * g + (2 if g >= 7 else 0)
        cols += [(base + k, k) for k in (0, 1, 4, 5)]
    return cols


#: device -> (multiplier rows; [(column, MULT18 index in its group)]), read from
#: nextpnr's placements on the LFE5U-85F (``NEXTPNR_BEL`` ``X<x>/Y<y>/MULT18_<k>``)
DSP_GRID = {
    "LFE5U-85F": ((10, 34, 58), _dsp_columns_85f()),
}


def _grid(device, grids=EBR_GRID):
    """The :data:`EBR_GRID` (or ``grids``) entry of a part name (``LFE5U-85F-6BG381C``),
    or ``None``."""
    return next((g for part, g in grids.items() if device.startswith(part)), None)

#: a tile of a cluster's tile group; a cluster out of context (``BLOCK=cluster``) has
#: no index and counts as cluster 0
_TILE_MODULE = re.compile(r"(?:\.cluster(\d+))?\.tiles\.tile(\d+)$")
_BANK_CELL = re.compile(r"^bank(\d+)\.(\d+)\.(\d+)$")
_NUMBERS = re.compile(r"(\d+)")


def _natural(name):
    # act.0.10 after act.0.9
    return [int(p) if p.isdigit() else p for p in _NUMBERS.split(name)]


def tile_ebr_cells(netlist):
    """``{(cluster, tile): [cell names]}`` of the tiles' block RAMs in a yosys JSON
    netlist whose tile modules kept their hierarchy, in row-bit order (bank, then
    yosys' split of the bank by depth and by width)."""
    tiles = {}
    for name, module in netlist["modules"].items():
        m = _TILE_MODULE.search(name)
        if not m:
            continue
        cells = []
        for cell, info in module.get("cells", {}).items():
            b = _BANK_CELL.match(cell)
            if info.get("type") == "DP16KD" and b:
                cells.append((tuple(int(v) for v in b.groups()), cell))
        if cells:
            tiles[(int(m[1] or 0), int(m[2]))] = (name, [c for _, c in sorted(cells)])
    return tiles


def cluster_hard_cells(netlist, tile_modules):
    """The cluster's other hard blocks, ``{cluster: (block RAMs, multipliers)}``, each
    a list of ``(module, cell)`` in the order :func:`plan_cluster` places them:
    block RAMs of the activation memory first, multipliers of the patch builder
    first, then the cluster's own, then its other blocks'. ``tile_modules`` is
    ``{(cluster, tile): module}``; a cluster is the module above its tile group."""
    prefixes = {}
    for (c, _), module in tile_modules.items():
        prefixes[c] = module[:module.rindex(".tiles.tile")]
    found = {}
    for c, prefix in prefixes.items():
        ebr, dsp = [], []
        for name, module in netlist["modules"].items():
            if name != prefix and not name.startswith(prefix + "."):
                continue
            sub = name[len(prefix) + 1:]
            if sub == "tiles" or sub.startswith("tiles."):
                continue
            for cell, info in module.get("cells", {}).items():
                if info.get("type") == "DP16KD":
                    rank = 0 if sub == "" and cell.startswith("act") else 1
                    ebr.append(((rank, _natural(sub), _natural(cell)), (name, cell)))
                elif info.get("type") == "MULT18X18D":
                    rank = {"builder": 0, "": 1}.get(sub, 2)
                    dsp.append(((rank, _natural(sub), _natural(cell)), (name, cell)))
        found[c] = ([v for _, v in sorted(ebr)], [v for _, v in sorted(dsp)])
    return found


def plan_cluster(device, cluster, clusters, taken, ebr, dsp):
    """Sites for the other block RAMs and multipliers of cluster ``cluster``
    (``(["X<x>/Y<y>/EBR<k>", ...], ["X<x>/Y<y>/MULT18_<k>", ...])``) in its strip of
    columns, or a reason (``str``). ``ebr`` and ``dsp`` are the sizes of their groups
    (one group per module, in placing order); ``taken`` the sites of the tiles.

    A group's first block goes to the free site nearest the strip's centre between
    the block RAM rows of the tiles, its others nearest to that one (distances in
    the device's tile grid), so that each module's blocks stay together.
    """
    ebr_grid, dsp_grid = _grid(device), _grid(device, DSP_GRID)
    if ebr_grid is None or dsp_grid is None:
        return f"no block RAM and multiplier grid known for device {device!r}"
    tile_rows = sorted({int(s.split("/")[1][1:]) for s in taken})
    centre_y = sum(tile_rows) / len(tile_rows)
    result = []
    for kind, (rows, columns), groups in (("EBR", ebr_grid, ebr), ("MULT18_", dsp_grid, dsp)):
        strip = len(columns) // clusters
        mine = columns[cluster * strip:(cluster + 1) * strip]
        centre_x = sum(x for x, _ in mine) / len(mine)
        free = [(x, y, f"X{x}/Y{y}/{kind}{k}") for y in rows for x, k in mine
                if f"X{x}/Y{y}/{kind}{k}" not in taken]
        if sum(groups) > len(free):
            what = "block RAMs" if kind == "EBR" else "multipliers"
            return (f"cluster {cluster}'s {sum(groups)} other {what} do not fit in its "
                    f"strip ({len(free)} free sites)")
        sites = []
        for size in groups:
            ax, ay = centre_x, centre_y
            for n in range(size):
                best = min(free, key=lambda f: (abs(f[0] - ax) + abs(f[1] - ay), f[1], f[0]))
                free.remove(best)
                sites.append(best[2])
                if n == 0:
                    ax, ay = best[0], best[1]
        result.append(sites)
    return tuple(result)


def plan(device, clusters, tiles, ebr_per_tile):
    """Block RAM sites ``{(cluster, tile): ["X<x>/Y<y>/EBR<k>", ...]}``, or a reason
    (``str``) why there is no floorplan.

    Cluster ``c`` gets the ``c``-th of ``clusters`` equal vertical strips of the
    block RAM columns; its tiles fill the fewest block RAM rows they fit in (but
    at least two when there are two tiles or more, so that they spread over the
    height of the device), a tile's block RAMs adjacent, the tiles of a row evenly
    spaced along the strip.
    """
    if _grid(device) is None:
        return f"no block RAM grid known for device {device!r}"
    rows, columns = _grid(device)
    strip = len(columns) // clusters
    per_row = strip // ebr_per_tile if ebr_per_tile else 0
    if per_row == 0:
        return (f"a tile's {ebr_per_tile} block RAMs do not fit in a strip of {strip} "
                f"block RAM columns")
    n_rows = max(-(-tiles // per_row), min(2, tiles))
    if n_rows > len(rows):
        return f"{clusters} x {tiles} tiles do not fit in {len(rows)} block RAM rows"
    sites = {}
    for c in range(clusters):
        start = c * strip
        for t in range(tiles):
            row, pos = t % n_rows, t // n_rows
            in_row = len(range(row, tiles, n_rows))
            # evenly spaced: tile centre at (pos + 1/2) / in_row of the strip
            first = start + round((pos + 0.5) * strip / in_row - ebr_per_tile / 2)
            first = min(max(first, start), start + strip - ebr_per_tile)
            sites[(c, t)] = [f"X{columns[k][0]}/Y{rows[row]}/EBR{columns[k][1]}"
                             for k in range(first, first + ebr_per_tile)]
    return sites


def apply(netlist, device):
    """Set the ``BEL`` attribute of every tile block RAM in ``netlist`` (a yosys JSON
    netlist, changed in place) after :func:`plan`, then of the clusters' other block
    RAMs and multipliers after :func:`plan_cluster`. Returns the number of cells
    fixed and a one-line summary."""
    found = tile_ebr_cells(netlist)
    if not found:
        return 0, "no tile block RAMs in the netlist: no floorplan"
    clusters = 1 + max(c for c, _ in found)
    tiles = 1 + max(t for _, t in found)
    counts = {len(cells) for _, cells in found.values()}
    if len(found) != clusters * tiles or len(counts) != 1:
        return 0, (f"tiles with different block RAM counts ({sorted(counts)}) or missing "
                   f"tiles: no floorplan")
    per_tile = counts.pop()
    sites = plan(device, clusters, tiles, per_tile)
    if isinstance(sites, str):
        return 0, f"{sites}: no floorplan"
    for key, (module, cells) in found.items():
        for cell, site in zip(cells, sites[key]):
            _fix(netlist, module, cell, site)
    fixed = len(found) * per_tile
    rows = sorted({s.split("/")[1] for v in sites.values() for s in v})
    summary = (f"{clusters} x {tiles} tiles, {per_tile} block RAMs each, fixed in block RAM "
               f"rows {', '.join(r[1:] for r in rows)} (one strip of columns per cluster)")
    hard = cluster_hard_cells(netlist, {k: m for k, (m, _) in found.items()})
    others = {}
    for c, (ebr, dsp) in sorted(hard.items()):
        taken = [s for (cc, _), v in sites.items() if cc == c for s in v]
        others[c] = plan_cluster(device, c, clusters, taken, _group_sizes(ebr),
                                 _group_sizes(dsp))
        if isinstance(others[c], str):
            return fixed, f"{summary}; {others[c]}: the clusters' other blocks left to the placer"
    for c, (ebr, dsp) in hard.items():
        for cells, places in zip((ebr, dsp), others[c]):
            for (module, cell), site in zip(cells, places):
                _fix(netlist, module, cell, site)
    n_ebr = sum(len(ebr) for ebr, _ in hard.values())
    n_dsp = sum(len(dsp) for _, dsp in hard.values())
    if n_ebr or n_dsp:
        summary += (f"; the clusters' other {n_ebr} block RAMs and {n_dsp} multipliers "
                    f"in their strips")
    return fixed + n_ebr + n_dsp, summary


def _group_sizes(cells):
    # runs of one module (and, in the cluster's own module, of one memory) in ``cells``
    sizes, last = [], None
    for module, cell in cells:
        key = (module, cell.split(".")[0] if "." in cell else "")
        if key != last:
            sizes.append(0)
            last = key
        sizes[-1] += 1
    return sizes


def _fix(netlist, module, cell, site):
    netlist["modules"][module]["cells"][cell].setdefault("attributes", {})["BEL"] = site
