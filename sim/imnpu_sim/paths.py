"""Where the flow writes its outputs: everything under ``build/`` of the checkout."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("IMNPU_BUILD", REPO / "build"))
VERILOG = BUILD / "verilog"
SIM_BUILD = BUILD / "sim"
PERF = BUILD / "perf"
