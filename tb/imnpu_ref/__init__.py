"""Numpy reference kernels of the IMNPU: the executable form of ARCHITECTURE.md section 1.

This package is the golden model. It depends on numpy only, never on the RTL.
"""

from .numbers import *  # noqa: F401,F403
from .dimc import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
