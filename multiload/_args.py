"""Argument checks shared by the front ends: clear ValueErrors up front."""

import numbers


#: Largest count the core takes for threads and slots (a C unsigned int):
#: larger values would wrap around silently.
UINT_MAX = 2**32 - 1


def positive_int(name, value, default=None, maximum=None):
    """Return value as an int >= 1 (or default when value is None), and at
    most `maximum` when one is given."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return value
