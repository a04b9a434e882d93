"""Transaction-level model of the DIMC tile, for every testbench of it.

A transaction is a :class:`Bus` access, a :class:`Feat` write or a :class:`Cmd`;
:class:`TileModel` applies them in order and says what the tile must answer,
computing dot products with :func:`imnpu_ref.row_dot` (the golden model).
"""

from dataclasses import dataclass

from imnpu_hw.macro import LaneEncoding, LaneWidth
from imnpu_ref import Encoding, row_dot

__all__ = ["TileModel", "Bus", "Feat", "Cmd", "LANE_CODE", "ENC_CODE", "LEGAL_ENCODINGS",
           "cmd_bits"]

LANE_CODE = {1: LaneWidth.L1, 2: LaneWidth.L2, 4: LaneWidth.L4}
ENC_CODE = {
    Encoding.UNSIGNED: LaneEncoding.UNSIGNED,
    Encoding.SIGNED: LaneEncoding.SIGNED,
    Encoding.BIPOLAR: LaneEncoding.BIPOLAR,
}
#: lane encodings each lane width accepts
LEGAL_ENCODINGS = {1: (Encoding.UNSIGNED, Encoding.BIPOLAR),
                   2: (Encoding.UNSIGNED, Encoding.SIGNED),
                   4: (Encoding.UNSIGNED, Encoding.SIGNED)}


@dataclass
class Bus:
    """A memory-mode access of word ``word`` of row ``row``."""
    row: int
    word: int
    write: bool
    data: int = 0


@dataclass
class Feat:
    """A write of word ``word`` of the feature register."""
    word: int
    data: int


@dataclass
class Cmd:
    """A compute command; ``lane_code``/``*_code`` override the encodings with raw codes."""
    group: int
    lane: int
    weight_encoding: Encoding
    feature_encoding: Encoding
    lanes: int
    lane_code: int = None
    weight_code: int = None
    feature_code: int = None


class TileModel:
    """Transaction-level model of the tile: what every response must be."""

    def __init__(self, tile):
        self.tile = tile
        self.rows = [0] * tile.rows
        self.feature = 0

    def _word_ok(self, row, word):
        return 0 <= row < self.tile.rows and 0 <= word < self.tile.words_per_row

    def bus(self, op):
        """Expected ``(data, error)`` of a memory-mode access, applying writes."""
        ww = self.tile.word_width
        if not self._word_ok(op.row, op.word):
            return 0, 1
        shift, mask = op.word * ww, (1 << ww) - 1
        if op.write:
            self.rows[op.row] = (self.rows[op.row] & ~(mask << shift)) | ((op.data & mask) << shift)
            return 0, 0
        return (self.rows[op.row] >> shift) & mask, 0

    def feat(self, op):
        ww = self.tile.feature_width
        shift, mask = op.word * ww, (1 << ww) - 1
        self.feature = (self.feature & ~(mask << shift)) | ((op.data & mask) << shift)

    def cmd(self, op):
        """Expected ``(row, dots, error)`` of a compute command."""
        P, W = self.tile.parallel, self.tile.width
        row = (op.group * P) % (1 << max(1, (self.tile.rows - 1).bit_length()))
        raw = op.lane_code is not None or op.weight_code is not None or op.feature_code is not None
        legal = (not raw and op.lane in LEGAL_ENCODINGS
                 and op.weight_encoding in LEGAL_ENCODINGS[op.lane]
                 and op.feature_encoding in LEGAL_ENCODINGS[op.lane]
                 and 0 <= op.lanes <= W // op.lane
                 and 0 <= op.group < self.tile.rows // P)
        if not legal:
            return row, [0] * P, 1
        dots = [row_dot(self.rows[op.group * P + i], self.feature, op.lane,
                        op.weight_encoding, op.feature_encoding, op.lanes, W)
                for i in range(P)]
        return row, dots, 0




def cmd_bits(layout, op):
    """The packed ``cmd`` payload of ``op`` (raw codes override the encodings)."""
    fields = {
        "group": op.group,
        "lane_width": LANE_CODE[op.lane] if op.lane_code is None else 0,
        "weight_encoding": ENC_CODE[op.weight_encoding] if op.weight_code is None else 0,
        "feature_encoding": ENC_CODE[op.feature_encoding] if op.feature_code is None else 0,
        "lanes": op.lanes,
    }
    bits = layout.const(fields).as_bits()
    for name, code in (("lane_width", op.lane_code), ("weight_encoding", op.weight_code),
                       ("feature_encoding", op.feature_code)):
        if code is not None:
            bits |= code << layout[name].offset
    return bits
