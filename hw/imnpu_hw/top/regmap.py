"""The IMNPU's AXI4-Lite register map: the one source of truth.

The RTL (:mod:`.control`) decodes these offsets; ``python -m imnpu_sim.regs``
generates ``docs/registers.md``, the C header ``imnpu_regs.h`` and the Python
definitions (:mod:`imnpu_sw.regs`) from them.

Every register is 32 bits wide at a 4-byte aligned byte address. Global
registers sit at :data:`GLOBAL_REGISTERS` offsets; cluster ``c``'s registers
at ``CLUSTER_REG_BASE + c * CLUSTER_REG_STRIDE`` plus their offset. Cluster
``c``'s memories are windows at ``window_base(c)``: its activation memory
(``ACT_WINDOW``) and its tile arrays in memory mode (``TILE_WINDOW``).
"""

from dataclasses import dataclass, field

__all__ = [
    "Access", "Field", "Register", "GLOBAL_REGISTERS", "CLUSTER_REGISTERS",
    "CLUSTER_REG_BASE", "CLUSTER_REG_STRIDE", "REG_SPACE", "WINDOW_STRIDE",
    "ACT_WINDOW", "TILE_WINDOW", "window_base", "tile_stride", "IMNPU_ID", "VERSION",
    "MAX_CLUSTERS", "RESPONSES",
]

#: ``ID`` register value: ASCII "IMNP"
IMNPU_ID = 0x494D4E50
#: ``VERSION`` register value: major << 16 | minor
VERSION = (1, 0)

#: register block of cluster c: CLUSTER_REG_BASE + c * CLUSTER_REG_STRIDE
CLUSTER_REG_BASE = 0x100
CLUSTER_REG_STRIDE = 0x40
#: bytes of register space; above it, the clusters' memory windows
REG_SPACE = 0x1000
#: most clusters: the per-cluster bit vectors (START, BUSY, IRQ_*) are 32 bits
MAX_CLUSTERS = 32
#: each cluster's memory windows take this many bytes: cluster c at (c + 1) * WINDOW_STRIDE
WINDOW_STRIDE = 0x100000
#: offset of the activation memory in a cluster's window (A bytes, word w at 4 * w)
ACT_WINDOW = 0x00000
#: offset of the tile arrays in a cluster's window (tile t at t * tile_stride(W, R))
TILE_WINDOW = 0x80000


def window_base(cluster):
    """Byte address of cluster ``cluster``'s memory windows."""
    return (cluster + 1) * WINDOW_STRIDE


def tile_stride(width, rows):
    """Bytes between two tiles in the tile window: row ``r`` word ``w`` of a tile
    is at byte ``4 * (r * 2**ceil(log2(W/32)) + w)``."""
    words = width // 32
    word_bits = max(0, (words - 1).bit_length())
    row_bits = max(1, (rows - 1).bit_length())
    return 4 << (word_bits + row_bits)


class Access:
    RO = "RO"       # read only; writes answer SLVERR
    RW = "RW"       # read and write; writes while the cluster is busy answer SLVERR
    W1S = "W1S"     # write 1 to a bit to act; reads as 0
    W1C = "W1C"     # write 1 to a bit to clear it


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    doc: str

    @property
    def mask(self):
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    access: str
    doc: str
    fields: tuple = field(default_factory=tuple)


#: per-cluster bit vectors have one bit per cluster, bit c for cluster c
_PER_CLUSTER = (Field("CLUSTER", 0, MAX_CLUSTERS, "bit c: cluster c"),)

GLOBAL_REGISTERS = (
    Register("ID", 0x000, Access.RO, 'Identification, 0x494D4E50 ("IMNP").'),
    Register("VERSION", 0x004, Access.RO, "Register map version.",
             (Field("MINOR", 0, 16, "minor version"), Field("MAJOR", 16, 16, "major version"))),
    Register("CLUSTERS", 0x008, Access.RO, "`C`: clusters."),
    Register("TILES", 0x00C, Access.RO, "`T`: DIMC tiles per cluster."),
    Register("ROWS", 0x010, Access.RO, "`R`: rows per tile."),
    Register("WIDTH", 0x014, Access.RO, "`W`: bits per tile row."),
    Register("PARALLEL", 0x018, Access.RO, "`P`: rows computed per cycle per tile."),
    Register("ACT_BYTES", 0x01C, Access.RO, "`A`: activation memory bytes per cluster."),
    Register("TILE_STRIDE", 0x020, Access.RO,
             "Bytes between two tiles in a cluster's tile window."),
    Register("START", 0x040, Access.W1S,
             "Writing 1 to bit c starts cluster c's job (ignored while it is busy). "
             "Several clusters start in the same cycle.", _PER_CLUSTER),
    Register("BUSY", 0x044, Access.RO, "Bit c is set while cluster c runs a job.", _PER_CLUSTER),
    Register("IRQ_ENABLE", 0x048, Access.RW,
             "Bit c lets cluster c's IRQ_STATUS bit raise the `irq` output.", _PER_CLUSTER),
    Register("IRQ_STATUS", 0x04C, Access.W1C,
             "Bit c is set when cluster c's job ends (success or error); write 1 to clear. "
             "`irq` is high while IRQ_STATUS & IRQ_ENABLE is non-zero.", _PER_CLUSTER),
)

CLUSTER_REGISTERS = (
    Register("STATUS", 0x00, Access.RO, "Result of the cluster's last job.", (
        Field("BUSY", 0, 1, "a job is running"),
        Field("SATURATED", 1, 1, "an accumulation or acc + bias saturated (sticky per job)"),
        Field("ERROR", 8, 4, "error code of the last job (0: none; docs/registers.md lists them)"),
        Field("LAYERS", 16, 16, "layers completed by the last job"),
    )),
    Register("DESC_PTR", 0x04, Access.RW,
             "Byte address (4-aligned; bits 1:0 read as 0) of the job's descriptor list "
             "in system memory."),
    Register("IN_SRC", 0x08, Access.RW,
             "Byte address (4-aligned) in system memory of the input tensor the job copies "
             "into the activation memory before its first layer."),
    Register("IN_DST", 0x0C, Access.RW, "Activation memory word address of the input copy."),
    Register("IN_WORDS", 0x10, Access.RW, "32-bit words of the input copy (0: no copy)."),
    Register("OUT_SRC", 0x14, Access.RW,
             "Activation memory word address of the output the job copies to system memory "
             "after its last layer."),
    Register("OUT_DST", 0x18, Access.RW,
             "Byte address (4-aligned) in system memory of the output copy."),
    Register("OUT_WORDS", 0x1C, Access.RW, "32-bit words of the output copy (0: no copy)."),
    Register("JOB_CYCLES", 0x20, Access.RO,
             "Cycles of the last job, from START to its end, copies included."),
    Register("RUN_CYCLES", 0x24, Access.RO,
             "Cycles the cluster's sequencer ran the descriptor list in the last job."),
    Register("LAYER_CYCLES", 0x28, Access.RO, "Cycles of the last layer that ended."),
)

#: response codes of the AXI4-Lite slave, documented with the map
RESPONSES = (
    ("OKAY", "the access was done"),
    ("SLVERR", "write to a read-only register, write strobes other than 0xF, a job register "
               "written or a memory window accessed while its cluster is busy, a tile array or "
               "activation memory address past its end"),
    ("DECERR", "no register or window at the address (including clusters >= C)"),
)


def _check_map():
    for block in (GLOBAL_REGISTERS, CLUSTER_REGISTERS):
        offsets = [r.offset for r in block]
        assert len(set(offsets)) == len(offsets), "overlapping registers"
        assert all(o % 4 == 0 for o in offsets)
        for r in block:
            used = 0
            for f in r.fields:
                assert f.lsb + f.width <= 32 and not used & f.mask, r.name
                used |= f.mask
    assert max(r.offset for r in GLOBAL_REGISTERS) < CLUSTER_REG_BASE
    assert CLUSTER_REG_BASE + MAX_CLUSTERS * CLUSTER_REG_STRIDE <= REG_SPACE
    assert max(r.offset for r in CLUSTER_REGISTERS) < CLUSTER_REG_STRIDE


_check_map()


#: STATUS.ERROR codes: the cluster's ClusterError (0..10) and the DMA's own (11, 12)
ERROR_CODES = (
    (0, "NONE", "the job ran to its end"),
    (1, "BAD_KIND", "unknown layer kind"),
    (2, "ZERO_DIM", "a dimension, stride, pixel word count or mapping count is zero"),
    (3, "BAD_TYPE", "an operand width/encoding pair section 1 of the architecture does not have"),
    (4, "BAD_LANE", "lane code 3, lane narrower than an operand, or 1-bit bipolar features "
                    "with padding"),
    (5, "KERNEL_TOO_LARGE", "kernel larger than the padded input"),
    (6, "BAD_SHAPE", "output size inconsistent with input, kernel, stride and padding"),
    (7, "BAD_MAPPING", "chunking, rows, passes or pixel words inconsistent; resident weights "
                       "with more than one pass"),
    (8, "ACT_OVERFLOW", "a layer's tensor region runs past the activation memory"),
    (9, "OVERLAP", "a layer's input and output regions overlap"),
    (10, "MEM_ERROR", "a system-memory read (descriptor, weights, parameters, input copy) "
                      "answered SLVERR or DECERR"),
    (11, "WRITE_ERROR", "an output-copy write answered SLVERR or DECERR"),
    (12, "BAD_COPY", "the input or output copy runs past the activation memory"),
)
__all__.append("ERROR_CODES")
