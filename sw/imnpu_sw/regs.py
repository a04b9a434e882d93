"""The IMNPU register map for host software and testbenches.

Built at import from the one source of truth, :mod:`imnpu_hw.top.regmap`
(``docs/registers.md`` documents it; ``python -m imnpu_sim.regs`` also
writes it as a C header and a standalone Python module). Addresses are byte
addresses on the IMNPU's AXI4-Lite slave.

Examples
--------
>>> hex(REG.IRQ_STATUS), hex(cluster_reg(1, "STATUS"))
('0x4c', '0x140')
>>> ERROR_NAMES[field_get("STATUS", "ERROR", 0x0003_0700)]
'BAD_MAPPING'
"""

from types import MappingProxyType

from imnpu_hw.top import regmap
from imnpu_hw.top.regmap import (ACT_WINDOW, CLUSTER_REG_BASE, CLUSTER_REG_STRIDE,
                                 IMNPU_ID, MAX_CLUSTERS, REG_SPACE, TILE_WINDOW,
                                 WINDOW_STRIDE, tile_stride, window_base)

__all__ = [
    "REG", "CLUSTER_REG", "REGISTERS", "ERROR", "ERROR_NAMES", "CONFIG_REGISTERS",
    "IMNPU_ID", "VERSION_MAJOR", "VERSION_MINOR", "VERSION_VALUE",
    "REG_SPACE", "MAX_CLUSTERS", "CLUSTER_REG_BASE", "CLUSTER_REG_STRIDE",
    "WINDOW_STRIDE", "ACT_WINDOW", "TILE_WINDOW",
    "register", "cluster_reg", "field_get", "field_set", "fields", "identity_values",
    "window_base", "tile_stride", "row_pitch", "act_address", "tile_address",
]


class _Names(dict):
    """A read-only ``name -> number`` dict whose names are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def _readonly(self, *args, **kwargs):
        raise TypeError("the register map is read-only")

    __setitem__ = __delitem__ = __setattr__ = _readonly
    clear = pop = popitem = setdefault = update = __ior__ = _readonly


#: global register offsets: ``REG.START == REG["START"] == 0x40``
REG = _Names((r.name, r.offset) for r in regmap.GLOBAL_REGISTERS)
#: cluster register offsets inside a cluster's block (see :func:`cluster_reg`)
CLUSTER_REG = _Names((r.name, r.offset) for r in regmap.CLUSTER_REGISTERS)
#: every register by name, global and cluster (:class:`imnpu_hw.top.regmap.Register`)
REGISTERS = MappingProxyType(
    {r.name: r for r in regmap.GLOBAL_REGISTERS + regmap.CLUSTER_REGISTERS})
if len(REGISTERS) != len(REG) + len(CLUSTER_REG):
    raise AssertionError("a global and a cluster register share a name")

#: ``STATUS.ERROR`` codes: ``ERROR.BAD_MAPPING == ERROR["BAD_MAPPING"] == 7``
ERROR = _Names((name, code) for code, name, _ in regmap.ERROR_CODES)
#: ``STATUS.ERROR`` codes: ``code -> name``
ERROR_NAMES = MappingProxyType({code: name for code, name, _ in regmap.ERROR_CODES})

#: configuration registers: register name -> the :class:`imnpu_hw.IMNPUConfig`
#: parameter it reads (``TILE_STRIDE`` reads ``tile_stride(W, R)``)
CONFIG_REGISTERS = MappingProxyType({"CLUSTERS": "C", "TILES": "T", "ROWS": "R",
                                     "WIDTH": "W", "PARALLEL": "P", "ACT_BYTES": "A"})

VERSION_MAJOR, VERSION_MINOR = regmap.VERSION
#: value of the ``VERSION`` register
VERSION_VALUE = VERSION_MAJOR << 16 | VERSION_MINOR


def register(name):
    """The register called ``name`` (global or cluster).

    Parameters
    ----------
    name : str
        Register name, e.g. ``"IRQ_STATUS"`` or ``"STATUS"``.

    Returns
    -------
    imnpu_hw.top.regmap.Register
    """
    try:
        return REGISTERS[name]
    except KeyError:
        raise ValueError(f"no register {name!r}") from None


def _check_cluster(cluster, config=None):
    limit = MAX_CLUSTERS if config is None else config.C
    if not isinstance(cluster, int) or not 0 <= cluster < limit:
        raise ValueError(f"cluster must be an integer in [0, {limit}), not {cluster!r}")


def cluster_reg(cluster, name):
    """Byte address of cluster ``cluster``'s register ``name``.

    Parameters
    ----------
    cluster : int
        Cluster index, ``0 <= cluster < MAX_CLUSTERS``.
    name : str
        Cluster register name, e.g. ``"DESC_PTR"``.

    Returns
    -------
    int
        ``CLUSTER_REG_BASE + cluster * CLUSTER_REG_STRIDE + offset``.
    """
    _check_cluster(cluster)
    try:
        offset = CLUSTER_REG[name]
    except KeyError:
        raise ValueError(f"no cluster register {name!r}") from None
    return CLUSTER_REG_BASE + cluster * CLUSTER_REG_STRIDE + offset


def _field(reg_name, field_name):
    for f in register(reg_name).fields:
        if f.name == field_name:
            return f
    raise ValueError(f"register {reg_name} has no field {field_name!r}")


def field_get(reg_name, field_name, value):
    """Field ``field_name`` of register ``reg_name`` extracted from ``value``.

    Parameters
    ----------
    reg_name, field_name : str
        E.g. ``"STATUS"``, ``"ERROR"``.
    value : int
        The 32-bit register value.

    Returns
    -------
    int
    """
    f = _field(reg_name, field_name)
    return (value & f.mask) >> f.lsb


def field_set(reg_name, field_name, value, field_value):
    """``value`` with field ``field_name`` of register ``reg_name`` replaced.

    Parameters
    ----------
    reg_name, field_name : str
        E.g. ``"VERSION"``, ``"MAJOR"``.
    value : int
        The 32-bit register value to modify.
    field_value : int
        New field value, ``0 <= field_value < 2**width``.

    Returns
    -------
    int
        The new 32-bit register value.

    Raises
    ------
    ValueError
        If ``field_value`` does not fit the field.
    """
    f = _field(reg_name, field_name)
    if not 0 <= field_value < 1 << f.width:
        raise ValueError(f"{reg_name}.{field_name} is {f.width} bits wide: "
                         f"{field_value!r} does not fit")
    return (value & ~f.mask & 0xFFFF_FFFF) | field_value << f.lsb


def fields(reg_name, value):
    """Every field of register ``reg_name`` in ``value``, as ``{field name: value}``."""
    return {f.name: (value & f.mask) >> f.lsb for f in register(reg_name).fields}


def identity_values(config):
    """Values the identification and configuration registers read for ``config``.

    Parameters
    ----------
    config : imnpu_hw.IMNPUConfig

    Returns
    -------
    dict
        ``{register name: value}`` for ``ID``, ``VERSION``, ``CLUSTERS`` ...
        ``TILE_STRIDE``.
    """
    return {"ID": IMNPU_ID, "VERSION": VERSION_VALUE,
            **{name: getattr(config, attr) for name, attr in CONFIG_REGISTERS.items()},
            "TILE_STRIDE": tile_stride(config.W, config.R)}


def row_pitch(width):
    """Bytes between two rows of a tile in the tile window: ``4 * 2**ceil(log2(W/32))``."""
    return 4 << max(0, (width // 32 - 1).bit_length())


def act_address(cluster, word, config=None):
    """Byte address of word ``word`` of cluster ``cluster``'s activation memory.

    Parameters
    ----------
    cluster : int
        Cluster index.
    word : int
        32-bit word address in the activation memory (as in ``IN_DST``).
    config : imnpu_hw.IMNPUConfig, optional
        When given, ``cluster`` and ``word`` are checked against ``C`` and ``A``.

    Returns
    -------
    int
        ``window_base(cluster) + ACT_WINDOW + 4 * word``.
    """
    _check_cluster(cluster, config)
    limit = (TILE_WINDOW - ACT_WINDOW if config is None else config.A) // 4
    if not isinstance(word, int) or not 0 <= word < limit:
        raise ValueError(f"word must be an integer in [0, {limit}), not {word!r}")
    return window_base(cluster) + ACT_WINDOW + 4 * word


def tile_address(config, cluster, tile, row, word):
    """Byte address of word ``word`` of row ``row`` of tile ``tile`` in cluster ``cluster``.

    Parameters
    ----------
    config : imnpu_hw.IMNPUConfig
        Gives ``C``, ``T``, ``R`` and ``W``.
    cluster, tile, row, word : int
        ``word`` counts 32-bit words of the ``W``-bit row, lowest bits first.

    Returns
    -------
    int
        ``window_base(cluster) + TILE_WINDOW + tile * tile_stride(W, R)
        + 4 * (row * 2**ceil(log2(W/32)) + word)``.
    """
    _check_cluster(cluster, config)
    for name, value, limit in (("tile", tile, config.T), ("row", row, config.R),
                               ("word", word, config.W // 32)):
        if not isinstance(value, int) or not 0 <= value < limit:
            raise ValueError(f"{name} must be an integer in [0, {limit}), not {value!r}")
    return (window_base(cluster) + TILE_WINDOW + tile * tile_stride(config.W, config.R)
            + row * row_pitch(config.W) + 4 * word)
