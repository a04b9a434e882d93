"""Random stimulus shared by the cluster and top-level testbenches."""

import numpy as np

__all__ = ["random_output_stage"]


def random_output_stage(rng, cout, k, x_type, w_type, out_type):
    """Per-channel bias, mult, shift that keep outputs spread over the output range."""
    typical = max(1, int(np.sqrt(k) * max(abs(x_type.min), x_type.max) *
                         max(abs(w_type.min), w_type.max)))
    bias = rng.integers(-typical, typical + 1, size=cout)
    if rng.random() < 0.1:
        bias[rng.integers(0, cout)] = rng.choice([-(2 ** 31), 2 ** 31 - 1])
    mult = rng.integers(-32768, 32768, size=cout)
    mult[rng.random(cout) < 0.1] = rng.choice([-32768, 32767, 1, -1, 0])
    out_bits = 31 if out_type == "int32" else out_type.bits
    base = max(0, (typical * 32768).bit_length() - out_bits)
    shift = np.clip(base + rng.integers(-2, 3, size=cout), 0, 47)
    return bias, mult, shift
