"""Simulation flow of the IMNPU: Verilog export, simulator set-up, lint, cocotb runs."""
