"""Floorplan: fixed block RAM sites for the DIMC tile arrays (ECP5).

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
spread over the block RAM rows and evenly along them, the outermost rows
first (on the ECP5-85F rows 22 and 82 of 95: each tile's popcount trees
spread above and below its row, and the band between the two rows is left to
the logic the tiles share, the patch builder, accumulators, output stages).
Everything else (the activation memories, accumulators, logic) stays with
the placer.

A cluster out of context (``BLOCK=cluster``) is one cluster over all the
columns. Only devices whose block RAM grid is listed in :data:`EBR_GRID` get a
floorplan; on others, and when the tiles do not fit, :func:`apply` leaves the
netlist as it is and says why.
"""

import re

__all__ = ["EBR_GRID", "tile_ebr_cells", "plan", "apply"]


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
#: LFE5U-85F (``NEXTPNR_BEL`` ``X<x>/Y<y>/EBR<k>``). Rows 22 and 82 first: with
#: 22 and 70 the cluster logic between and above the tiles was squeezed against
#: the device's top edge, and router2 did not finish the self-test; with 22 and
#: 82 it did (README, FPGA prototyping).
EBR_GRID = {
    "LFE5U-85F": ((22, 82, 46, 70), _ebr_columns_85f()),
}


def _grid(device):
    """The :data:`EBR_GRID` entry of a part name (``LFE5U-85F-6BG381C``), or ``None``."""
    return next((g for part, g in EBR_GRID.items() if device.startswith(part)), None)

#: a tile of a cluster's tile group; a cluster out of context (``BLOCK=cluster``) has
#: no index and counts as cluster 0
_TILE_MODULE = re.compile(r"(?:\.cluster(\d+))?\.tiles\.tile(\d+)$")
_BANK_CELL = re.compile(r"^bank(\d+)\.(\d+)\.(\d+)$")


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
    netlist, changed in place) after :func:`plan`. Returns the number of cells fixed
    and a one-line summary."""
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
            attrs = netlist["modules"][module]["cells"][cell].setdefault("attributes", {})
            attrs["BEL"] = site
    rows = sorted({s.split("/")[1] for v in sites.values() for s in v})
    return len(found) * per_tile, (
        f"{clusters} x {tiles} tiles, {per_tile} block RAMs each, fixed in block RAM "
        f"rows {', '.join(r[1:] for r in rows)} (one strip of columns per cluster)")
