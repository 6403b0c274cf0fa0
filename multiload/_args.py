"""Argument checks shared by the front ends: clear ValueErrors up front."""

import numbers


def positive_int(name, value, default=None):
    """Return value as an int >= 1 (or default when value is None)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value
