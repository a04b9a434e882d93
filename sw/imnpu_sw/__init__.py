"""IMNPU software: tensor storage formats, layer mapping, descriptors (the compiler side)."""
