"""The cluster: DIMC tiles, patch builder, accumulators, output stage, maxpool, sequencer."""

from .accumulator import *  # noqa: F401,F403
from .output_stage import *  # noqa: F401,F403
from .descriptor import *  # noqa: F401,F403
from .patch_builder import *  # noqa: F401,F403
from .maxpool import *  # noqa: F401,F403
from .cluster import *  # noqa: F401,F403
