"""cocotb drivers, monitors and tests of the IMNPU blocks (checks use :mod:`imnpu_ref`)."""
