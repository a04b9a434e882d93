"""The boards of the FPGA prototyping flow: device, package, pins, constraint file.

Pin data comes from ``amaranth-boards`` (the ``amaranth_boards`` package, pinned
in the ``fpga`` extra of ``pyproject.toml``): each :class:`Board` names the
amaranth-boards platform class and the resources it uses, and
:mod:`imnpu_fpga.constraints` writes the checked-in LPF/PCF/XDC files in
``constraints/`` from them (``python -m imnpu_fpga constraints --check``
verifies they still agree).

Every board wrapper (:mod:`imnpu_fpga.wrapper`) has the same top-level ports,
the names the constraint files use:

``clk_board``      the board oscillator
``button_reset``   a push button used as reset (polarity per board)
``led[n]``         user LEDs (polarity per LED)
``uart_tx``        FPGA transmit, to the USB-UART bridge
``uart_rx``        FPGA receive, from the USB-UART bridge
"""

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Pin", "Board", "BOARDS", "get_board", "CONSTRAINTS_DIR", "LED_ROLES"]

#: the repository's constraints/ folder
CONSTRAINTS_DIR = Path(__file__).resolve().parents[2] / "constraints"

#: what the self-test shows on LED n (boards with fewer LEDs drop the tail)
LED_ROLES = ("pass", "fail", "busy", "heartbeat", "error code bit 0", "error code bit 1",
             "error code bit 2", "error code bit 3")


@dataclass(frozen=True)
class Pin:
    """One top-level port bit: its package pin and where the pin data comes from."""
    port: str                 # port name in the wrapper, e.g. "led[0]"
    site: str                 # package pin / ball
    resource: str             # amaranth-boards resource, e.g. "led#0" or "uart#0.tx"
    inverted: bool = False    # active low
    attrs: tuple = ()         # (key, value) I/O attributes


@dataclass(frozen=True)
class Board:
    name: str                 # BOARD= value
    title: str
    family: str               # "ecp5", "ice40" or "xilinx"
    device: str               # part name as the vendor writes it
    package: str              # package as nextpnr / the vendor names it
    nextpnr_args: tuple       # device selection for nextpnr (empty: no open P&R)
    platform: str             # amaranth-boards module.class holding the pin data
    clk_mhz: float            # board oscillator
    pins: tuple               # every Pin: clk_board, button_reset, led[*], uart_*
    config: str               # default IMNPU configuration on this board
    core_mhz: float           # default core clock (PLL from clk_board when different)
    constraints: str          # file name in constraints/
    notes: tuple = field(default_factory=tuple)

    @property
    def constraint_path(self):
        return CONSTRAINTS_DIR / self.constraints

    @property
    def leds(self):
        return [p for p in self.pins if p.port.startswith("led[")]

    def pin(self, port):
        for p in self.pins:
            if p.port == port:
                return p
        raise KeyError(port)

    @property
    def open_flow(self):
        return bool(self.nextpnr_args)

    @property
    def reset_active_low(self):
        return self.pin("button_reset").inverted


_ECP5_IO = (("IO_TYPE", "LVCMOS33"),)

ULX3S = Board(
    name="ulx3s",
    title="Radiona ULX3S, LFE5U-85F (ECP5-85F)",
    family="ecp5",
    device="LFE5U-85F-6BG381C",
    package="CABGA381",
    nextpnr_args=("--85k", "--package", "CABGA381", "--speed", "6"),
    platform="amaranth_boards.ulx3s.ULX3S_85F_Platform",
    clk_mhz=25.0,
    pins=(
        Pin("clk_board", "G2", "clk25#0", attrs=_ECP5_IO),
        # BTN0 ("PWR"), active low with the FPGA's pull-up: the ULX3S examples' reset
        Pin("button_reset", "D6", "button_pwr#0", inverted=True,
            attrs=_ECP5_IO + (("PULLMODE", "UP"),)),
        *(Pin(f"led[{i}]", site, f"led#{i}", attrs=_ECP5_IO + (("DRIVE", "4"),))
          for i, site in enumerate("B2 C2 C1 D2 D1 E2 E1 H3".split())),
        Pin("uart_tx", "L4", "uart#0.tx", attrs=_ECP5_IO),
        Pin("uart_rx", "M1", "uart#0.rx", attrs=_ECP5_IO),
    ),
    config="fpga",
    core_mhz=50.0,
    constraints="ulx3s.lpf",
    notes=("UART: the FT231X on the USB1 (US1) port, 115200 8N1.",
           "Reset: BTN0 (PWR) held down."),
)

ICEBREAKER = Board(
    name="icebreaker",
    title="1BitSquared iCEBreaker, iCE40UP5K-SG48",
    family="ice40",
    device="iCE40UP5K-SG48",
    package="sg48",
    nextpnr_args=("--up5k", "--package", "sg48"),
    platform="amaranth_boards.icebreaker.ICEBreakerPlatform",
    clk_mhz=12.0,
    pins=(
        Pin("clk_board", "35", "clk12#0"),
        Pin("button_reset", "10", "button#0", inverted=True),
        # the two LEDs on the main board, then the break-off PMOD's five (LED1..LED5)
        Pin("led[0]", "37", "led_g#0", inverted=True),
        Pin("led[1]", "11", "led_r#0", inverted=True),
        *(Pin(f"led[{i + 2}]", site, f"led#{i + 2} (break_off_pmod)")
          for i, site in enumerate("26 27 25 23 21".split())),
        Pin("uart_tx", "9", "uart#0.tx"),
        Pin("uart_rx", "6", "uart#0.rx"),
    ),
    config="tiny",
    core_mhz=12.0,
    constraints="icebreaker.pcf",
    notes=("LED 0 is the green LED (LEDG_N), LED 1 the red one (LEDR_N); LEDs 2..6 sit "
           "on the break-off PMOD (attached to PMOD2).",
           "UART: the FT2232H's second channel, 115200 8N1.",
           "Reset: the user button (BTN_N) held down."),
)

ARTY_A7 = Board(
    name="arty_a7",
    title="Digilent Arty A7-100T (XC7A100T-1CSG324C); the A7-35T has the same pins",
    family="xilinx",
    device="xc7a100tcsg324-1",
    package="csg324",
    nextpnr_args=(),
    platform="amaranth_boards.arty_a7.ArtyA7_100Platform",
    clk_mhz=100.0,
    pins=(
        Pin("clk_board", "E3", "clk100#0", attrs=(("IOSTANDARD", "LVCMOS33"),)),
        Pin("button_reset", "C2", "rst#0", inverted=True, attrs=(("IOSTANDARD", "LVCMOS33"),)),
        *(Pin(f"led[{i}]", site, f"led#{i}", attrs=(("IOSTANDARD", "LVCMOS33"),))
          for i, site in enumerate("H5 J5 T9 T10".split())),
        Pin("uart_tx", "D10", "uart#0.tx", attrs=(("IOSTANDARD", "LVCMOS33"),)),
        Pin("uart_rx", "A9", "uart#0.rx", attrs=(("IOSTANDARD", "LVCMOS33"),)),
    ),
    config="fpga",
    core_mhz=50.0,
    constraints="arty_a7.xdc",
    notes=("Vendor tools only: the flow writes the wrapper's Verilog, the XDC and a "
           "Vivado Tcl script; there is no open place and route for 7-series on PyPI.",
           "Reset: the red RESET button (ck_rst), active low.",
           "UART: the FT2232HQ's second channel, 115200 8N1."),
)

BOARDS = {b.name: b for b in (ULX3S, ICEBREAKER, ARTY_A7)}


def get_board(name):
    """The board ``name``; an unknown name lists the boards."""
    try:
        return BOARDS[name]
    except KeyError:
        lines = [f"unknown board {name!r}; choose one of:"]
        lines += [f"  {b.name:<11} {b.title}" for b in BOARDS.values()]
        raise ValueError("\n".join(lines)) from None
