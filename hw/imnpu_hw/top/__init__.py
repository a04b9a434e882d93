"""The IMNPU top level: register map, AXI4-Lite control, clusters with their DMA."""

from .imnpu import IMNPU  # noqa: F401
