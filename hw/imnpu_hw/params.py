"""Elaboration-time checks of constructor parameters, shared by every block."""

__all__ = ["positive_int", "non_negative_int"]


def positive_int(name, value):
    """Raise ``TypeError`` unless ``value`` is an int (not a bool), ``ValueError``
    unless it is positive; both messages name the parameter ``name``."""
    _integer(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value!r}")


def non_negative_int(name, value):
    """As :func:`positive_int`, but 0 is allowed."""
    _integer(name, value)
    if value < 0:
        raise ValueError(f"{name} must be 0 or more, not {value!r}")


def _integer(name, value):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
