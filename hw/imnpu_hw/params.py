"""Elaboration-time checks of constructor parameters, shared by every block."""

__all__ = ["positive_int"]


def positive_int(name, value):
    """Raise ``TypeError`` unless ``value`` is an int (not a bool), ``ValueError``
    unless it is positive; both messages name the parameter ``name``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value!r}")
