"""AXI interconnect: signatures, the AXI4-Lite register slave, per-cluster DMA, the AXI4 arbiter."""

from .axi import *  # noqa: F401,F403
