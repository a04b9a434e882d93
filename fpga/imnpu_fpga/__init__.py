"""FPGA prototyping flow of the IMNPU: board wrappers, constraints, synthesis,
place and route, bitstream and report (``python -m imnpu_fpga``, ``make fpga``)."""
