"""The DIMC macro: an SRAM tile that computes row dot products in place."""

from .dimc_tile import *  # noqa: F401,F403
