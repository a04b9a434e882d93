"""Amaranth RTL of the IMNPU: ``macro`` (DIMC tile), ``cluster``, ``interconnect``, ``top``."""

from .config import IMNPUConfig, CONFIGS, get_config  # noqa: F401
