"""AXI interconnect: signatures, the AXI4-Lite register slave, per-cluster DMA, the AXI4
arbiter, register slices."""

from .axi import *  # noqa: F401,F403
from .register_slice import *  # noqa: F401,F403
