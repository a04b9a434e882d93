"""Layer descriptors: the binary format the cluster sequencer executes.

A descriptor is :data:`DESCRIPTOR_WORDS` 32-bit words in system memory, the
:class:`Descriptor` layout below with field 0 in the lowest bits of word 0. A
list of descriptors is read one after the other until a descriptor of kind
``END``. The mapping fields (``ppc`` .. ``passes``, pixel words, output size)
are computed by the compiler (``imnpu_sw.mapping``) and checked by the
hardware, which rejects any descriptor that could hang it or make it write
outside the layer's output region (:class:`ClusterError`).
"""

from amaranth.lib import data, enum

from ..macro import LaneEncoding, LaneWidth
from .output_stage import OutputKind

__all__ = ["LayerKind", "ClusterError", "Descriptor", "DESCRIPTOR_WORDS", "TensorType"]

DESCRIPTOR_WORDS = 16


class LayerKind(enum.Enum, shape=4):
    END = 0        #: end of the descriptor list
    CONV = 1       #: conv2d (HWC, kernel, stride, zero padding)
    DENSE = 2      #: fully connected: a conv whose kernel covers the whole input
    MAXPOOL = 3    #: channel-wise max over a window, no padding


class ClusterError(enum.Enum, shape=4):
    """Error code of a cluster run (``error_code``); the run stops at the bad layer."""
    NONE = 0
    BAD_KIND = 1          #: unknown layer kind
    ZERO_DIM = 2          #: a dimension, stride or mapping count is zero
    BAD_TYPE = 3          #: operand width/encoding pair that section 1 does not have
    BAD_LANE = 4          #: lane width narrower than an operand, or 1-bit bipolar features with padding
    KERNEL_TOO_LARGE = 5  #: kernel larger than the padded input
    BAD_SHAPE = 6         #: output size does not follow from input, kernel, stride and padding
    BAD_MAPPING = 7       #: chunking / rows / passes inconsistent or beyond the tile rows
    ACT_OVERFLOW = 8      #: a tensor region runs past the activation memory
    OVERLAP = 9           #: input and output regions overlap
    MEM_ERROR = 10        #: a system-memory read answered with an error


class TensorType(data.Struct):
    """An operand type: ``bits`` wide with encoding ``encoding``.

    For the output, ``encoding`` is an :class:`OutputKind` (``RAW32`` writes
    the int32 ``t`` of the output stage).
    """
    bits: 3
    encoding: 2


Descriptor = data.StructLayout({
    # word 0
    "kind": LayerKind,
    "relu": 1,
    "_r0": 3,
    "x_type": TensorType,
    "w_type": TensorType,
    "o_type": TensorType,
    "lane": LaneWidth,
    "_r1": 7,
    # words 1 .. 7
    "in_h": 16, "in_w": 16,
    "cin": 16, "cout": 16,
    "kh": 8, "kw": 8, "stride_h": 4, "stride_w": 4, "pad_h": 4, "pad_w": 4,
    "out_h": 16, "out_w": 16,
    "in_base": 32,
    "out_base": 32,
    "in_pixel_words": 16, "out_pixel_words": 16,
    # words 8 .. 10: mapping
    "ppc": 16, "spp": 16,
    "nch": 16, "cpt": 16,
    "passes": 16, "_r2": 16,
    # words 11 .. 12: system-memory word addresses
    "weights": 32,
    "params": 32,
    "_r3": 96,
})

assert Descriptor.size == 32 * DESCRIPTOR_WORDS
