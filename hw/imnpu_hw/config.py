"""Named IMNPU configurations (ARCHITECTURE.md section 3).

``C`` clusters of ``T`` DIMC tiles of ``R`` rows by ``W`` bits, ``P`` rows
computed per cycle per tile, ``A`` bytes of activation memory per cluster.
``word_width`` is the width of the tiles' memory-mode and feature ports and
``pipeline_depth`` the tile's latency in cycles; both are our choices, not the
seed's.

The ``seed`` row is our reading of the seed chip, not a published floor plan:
2 Mb as 64 tiles of 32 x 1024 bits; with ``P = 4`` its 1-bit peak,
``2 * C*T*P*W * f``, is 229 TOPS at f of about 437 MHz.
"""

from dataclasses import dataclass, asdict

__all__ = ["IMNPUConfig", "CONFIGS", "get_config"]


@dataclass(frozen=True)
class IMNPUConfig:
    name: str
    C: int
    T: int
    R: int
    W: int
    P: int
    A: int
    word_width: int
    pipeline_depth: int

    def __post_init__(self):
        for field in ("C", "T", "R", "W", "P", "A", "word_width", "pipeline_depth"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{field} must be a positive integer, not {value!r}")

    def peak_macs_per_cycle(self, lane, clusters=None):
        """Peak MAC/cycle at lane width ``lane``: ``C * T * P * W / L``."""
        if lane not in (1, 2, 4):
            raise ValueError(f"lane width must be 1, 2 or 4, not {lane!r}")
        clusters = self.C if clusters is None else clusters
        return clusters * self.T * self.P * self.W // lane

    def tile_params(self):
        """Keyword arguments of :class:`imnpu_hw.macro.DIMCTile` for this configuration."""
        return dict(rows=self.R, width=self.W, parallel=self.P,
                    word_width=self.word_width, pipeline_depth=self.pipeline_depth)

    def as_dict(self):
        return asdict(self)


CONFIGS = {
    cfg.name: cfg for cfg in (
        IMNPUConfig("tiny", C=1, T=2, R=8, W=64, P=1, A=4096,
                    word_width=32, pipeline_depth=2),
        IMNPUConfig("fpga", C=2, T=4, R=16, W=256, P=1, A=65536,
                    word_width=64, pipeline_depth=6),
        IMNPUConfig("seed", C=8, T=8, R=32, W=1024, P=4, A=65536,
                    word_width=64, pipeline_depth=4),
    )
}


def get_config(name):
    """The named configuration ``name`` (``tiny``, ``fpga`` or ``seed``)."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(
            f"unknown configuration {name!r}; choose one of {', '.join(CONFIGS)}") from None
