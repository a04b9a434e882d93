"""Clock enables on global nets (ECP5): a ``DCCA`` in front of every large one.

Each DIMC tile's pipeline moves on one enable, the tile group's ``advance``: on the
`fpga` self-test it is the ``CE`` of about 1,550 flip-flops in each of the eight
tiles, 12,300 loads in all, the largest nets after the clock and the reset. In the
general routing such a net is a tree through the tile's whole region, among the
popcount trees that are the design's most congested logic. The ECP5's global
clock network reaches every flip-flop's clock, set/reset and enable through the
tile's own muxes, and nextpnr places and routes it apart from the general routing
(the placer leaves global nets out of its wire length, router2 does not route
them). The board wrapper puts the reset there already.

:func:`apply` gives each module's enable net with at least ``min_loads``
flip-flop ``CE`` pins a ``DCCA`` of its own (most loads first, at most
``budget``): the flip-flops' ``CE`` pins move to the buffer's output, every other
load (a LUT input, a block RAM's clock enable) stays on the net. It works on
yosys's JSON netlist (``synth.json``), module by module, so the nets are those of
one tile each.

The flow applies it on request only (``make fpga ENABLE_GLOBALS=1``): on the `fpga`
self-test it raises nextpnr's placement estimate by about 2 MHz, but router2 then
falls behind (README, "The tiles' pipeline enables on global nets").
"""

import collections

__all__ = ["GLOBAL_NETS", "MIN_LOADS", "candidates", "apply"]

#: global (primary clock) nets of an ECP5
GLOBAL_NETS = 16

#: the fewest flip-flop enables that earn a net a global buffer (on the `fpga`
#: self-test the eight tiles' ``advance`` nets have 1,532 to 1,558; the next largest,
#: each output stage's, 363)
MIN_LOADS = 1000


def _ff_enables(module):
    """``{net bit: number of TRELLIS_FF CE pins}`` of one module."""
    loads = collections.Counter()
    for cell in module.get("cells", {}).values():
        if cell["type"] == "TRELLIS_FF":
            bits = cell.get("connections", {}).get("CE", [])
            if len(bits) == 1 and isinstance(bits[0], int):
                loads[bits[0]] += 1
    return loads


def _buffers(module):
    """The module's global buffers (``DCCA``)."""
    return [cell for cell in module.get("cells", {}).values() if cell["type"] == "DCCA"]


def _net_name(module, bit):
    """The module's port on ``bit``, else its shortest name that yosys did not make up."""
    ports = [name for name, port in module.get("ports", {}).items() if port["bits"] == [bit]]
    if ports:
        return min(ports)
    names = [name for name, net in module.get("netnames", {}).items() if net["bits"] == [bit]]
    names.sort(key=lambda n: (n.lstrip("\\").startswith("$"), len(n), n))
    return names[0] if names else f"net{bit}"


def candidates(design, min_loads=MIN_LOADS):
    """``[(loads, module, bit)]``: the enable nets with at least ``min_loads``
    flip-flop ``CE`` pins and no global buffer yet, most loads first."""
    found = []
    for name, module in design["modules"].items():
        buffered = {b for cell in _buffers(module)
                    for b in cell.get("connections", {}).get("CLKO", [])}
        for bit, loads in _ff_enables(module).items():
            if loads >= min_loads and bit not in buffered:
                found.append((loads, name, bit))
    found.sort(key=lambda f: (-f[0], f[1], f[2]))
    return found


def apply(design, min_loads=MIN_LOADS, budget=None):
    """Put the enable nets of :func:`candidates` on global buffers, in ``design``
    (yosys's JSON, changed in place). ``budget``: the most nets to promote (default:
    the global nets the design leaves, less one for the clock). Returns
    ``[(module, net name, loads)]`` of the nets promoted."""
    if min_loads < 1:
        raise ValueError(f"min_loads must be at least 1, not {min_loads}")
    if budget is None:
        budget = max(0, GLOBAL_NETS - 1 - sum(len(_buffers(m))
                                                 for m in design["modules"].values()))
    if budget < 0:
        raise ValueError(f"budget must not be negative, not {budget}")
    promoted = []
    for loads, name, bit in candidates(design, min_loads)[:budget]:
        module = design["modules"][name]
        used = [b for net in module.get("netnames", {}).values() for b in net["bits"]]
        used += [b for port in module.get("ports", {}).values() for b in port["bits"]]
        used += [b for cell in module["cells"].values()
                 for bits in cell["connections"].values() for b in bits]
        buffered = max(b for b in used if isinstance(b, int)) + 1
        for cell in module["cells"].values():
            if cell["type"] == "TRELLIS_FF" and cell["connections"].get("CE") == [bit]:
                cell["connections"]["CE"] = [buffered]
        net = _net_name(module, bit)
        module["cells"][f"{net}$enable_dcca"] = {
            "hide_name": 0, "type": "DCCA", "parameters": {}, "attributes": {},
            "port_directions": {"CLKI": "input", "CE": "input", "CLKO": "output"},
            "connections": {"CLKI": [bit], "CE": ["1"], "CLKO": [buffered]},
        }
        module.setdefault("netnames", {})[f"{net}$global"] = {
            "hide_name": 0, "bits": [buffered], "attributes": {}}
        promoted.append((name, net, loads))
    return promoted
