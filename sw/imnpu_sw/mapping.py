"""How a layer maps onto a cluster: the contract between compiler and sequencer.

Reduction chunking. A conv layer's reduction runs over ``K = kh * kw * Cin``
elements in ``(ky, kx, c)`` order (``imnpu_ref.im2col``), at compute lane width
``L``; a tile row holds ``NL = W / L`` lanes.

* ``Cin <= NL``: a chunk holds ``ppc`` whole kernel positions (``ppc * Cin``
  lanes, position ``p`` at lane ``(p - c*ppc) * Cin``); ``nch = ceil(kh*kw / ppc)``.
* ``Cin > NL``: a chunk holds one slice of ``NL`` channels of one position
  (``spp`` slices a position); ``nch = kh * kw * spp``.

Weight stationary rows. Each tile uses ``nch * cpt`` rows: row ``r = c*cpt + j``
holds chunk ``c`` of output channel ``pass*T*cpt + j*T + t`` (tile ``t``), so
the ``T`` tiles produce ``T`` consecutive channels at once. ``cpt`` (channels
per tile and pass) is a multiple of ``P`` with ``nch * cpt <= R``; a layer with
more than ``T * cpt`` output channels runs in ``passes``, each reloading the
weights. For more than one pass, a pass's channels start on a 4-bit boundary
of the output pixel (``T * cpt * S_out`` a multiple of 4): the activation
memory is written with 4-bit enables, so passes never overwrite each other.

Compute lane width. ``L = lane_format(weights, features)``'s lane, except that
bipolar features with zero padding need ``L >= 2`` (a 1-bit bipolar lane cannot
hold the padding value 0).
"""

from dataclasses import dataclass

import numpy as np

from imnpu_ref import encode, lane_encoding, lane_format, pack, to_words
from imnpu_ref.numbers import Encoding

from .tensor import pixel_words, storage_lane

__all__ = ["ClusterGeometry", "LayerMapping", "MappingError", "compute_lane", "plan_conv",
           "weight_image", "param_image", "SYSTEM_WORD"]

#: width of a system-memory word (weights, parameters, descriptors)
SYSTEM_WORD = 32
#: write granularity of the activation memory, bits
NIBBLE = 4


class MappingError(ValueError):
    """The layer cannot run on this cluster as asked."""


@dataclass(frozen=True)
class ClusterGeometry:
    T: int
    R: int
    W: int
    P: int
    act_word: int       # activation memory word width
    act_words: int      # activation memory depth in words

    @classmethod
    def from_config(cls, cfg, act_word=32):
        return cls(cfg.T, cfg.R, cfg.W, cfg.P, act_word, cfg.A * 8 // act_word)


@dataclass(frozen=True)
class LayerMapping:
    lane: int
    kpos: int
    ppc: int
    spp: int
    nch: int
    cpt: int
    passes: int
    out_h: int
    out_w: int
    in_pixel_words: int
    out_pixel_words: int

    def channel(self, geometry, pass_, tile, j):
        return pass_ * geometry.T * self.cpt + j * geometry.T + tile

    def chunk_range(self, c, cin, lanes_per_row):
        """Reduction element range ``[lo, hi)`` of chunk ``c``."""
        if self.spp == 1:
            return c * self.ppc * cin, min((c + 1) * self.ppc, self.kpos) * cin
        p, s = divmod(c, self.spp)
        return p * cin + s * lanes_per_row, p * cin + min((s + 1) * lanes_per_row, cin)


def compute_lane(w_type, x_type, padding=(0, 0)):
    lane, _, _ = lane_format(w_type, x_type)
    if lane == 1 and x_type.encoding is Encoding.BIPOLAR and any(padding):
        lane = 2
    return lane


def _out_bits(out_type):
    return 32 if out_type == "int32" else storage_lane(out_type)


def conv_output(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def plan_conv(geometry, in_shape, cout, kernel, stride, padding, w_type, x_type, out_type):
    """The :class:`LayerMapping` of a conv layer, or :class:`MappingError`."""
    H, Wd, cin = in_shape
    kh, kw = kernel
    if min(H, Wd, cin, cout, kh, kw) <= 0:
        raise MappingError("every dimension must be positive")
    if kh > H + 2 * padding[0] or kw > Wd + 2 * padding[1]:
        raise MappingError("kernel larger than the padded input")
    lane = compute_lane(w_type, x_type, padding)
    NL = geometry.W // lane
    kpos = kh * kw
    if cin <= NL:
        spp, ppc = 1, min(NL // cin, kpos)
        nch = -(-kpos // ppc)
    else:
        spp, ppc = -(-cin // NL), 1
        nch = kpos * spp
    if nch > geometry.R:
        raise MappingError(f"reduction needs {nch} chunks; a tile has {geometry.R} rows")
    T, P = geometry.T, geometry.P
    cpt = (geometry.R // nch) // P * P
    need = -(-cout // T)
    cpt = min(cpt, -(-need // P) * P)
    if cpt == 0:
        raise MappingError(f"{nch} chunks leave no group of {P} rows")
    if cout > T * cpt:
        bits = _out_bits(out_type)
        while cpt > 0 and (T * cpt * bits) % NIBBLE:
            cpt -= P
        if cpt == 0:
            raise MappingError("no channel split of the output starts on a 4-bit boundary")
    passes = -(-cout // (T * cpt))
    return LayerMapping(lane, kpos, ppc, spp, nch, cpt, passes,
                        conv_output(H, kh, stride[0], padding[0]),
                        conv_output(Wd, kw, stride[1], padding[1]),
                        pixel_words(cin, x_type, geometry.act_word),
                        -(-cout * _out_bits(out_type) // geometry.act_word))


def weight_image(geometry, mapping, weights, w_type, x_type):
    """System-memory words of a conv layer's weights, pass by pass.

    ``weights`` has shape ``(Cout, kh, kw, Cin)``. For each pass, tile and row
    ``r < nch * cpt``: the row's ``W / 32`` words, lowest first.
    """
    weights = np.asarray(weights, dtype=np.int64)
    cout, kh, kw, cin = weights.shape
    w_type.check(weights)
    lane = mapping.lane
    wenc = lane_encoding(w_type, lane)
    flat = weights.reshape(cout, -1)
    NL = geometry.W // lane
    words = []
    for p in range(mapping.passes):
        for t in range(geometry.T):
            for c in range(mapping.nch):
                for j in range(mapping.cpt):
                    co = mapping.channel(geometry, p, t, j)
                    row = 0
                    if co < cout:
                        lo, hi = mapping.chunk_range(c, cin, NL)
                        row = pack(encode(flat[co, lo:hi], lane, wenc), lane, geometry.W)
                    words += to_words(row, SYSTEM_WORD, geometry.W)
    return words


def param_image(geometry, mapping, bias, mult, shift, cout):
    """Two words a channel, pass by pass, then ``j``, then tile: bias, then
    ``mult[15:0] | shift << 16``. Channels beyond ``cout`` are zero."""
    bias, mult, shift = (np.broadcast_to(np.asarray(a, dtype=np.int64), (cout,))
                         for a in (bias, mult, shift))
    words = []
    for p in range(mapping.passes):
        for j in range(mapping.cpt):
            for t in range(geometry.T):
                co = mapping.channel(geometry, p, t, j)
                if co < cout:
                    words += [int(bias[co]) & 0xFFFFFFFF,
                              (int(mult[co]) & 0xFFFF) | (int(shift[co]) << 16)]
                else:
                    words += [0, 0]
    return words
