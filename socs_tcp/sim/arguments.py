"""Argument checks for the simulated-device server.

Each turns a user-supplied value into the form the server stores, or raises
TypeError/ValueError naming the argument, before anything is changed.
"""

from __future__ import annotations

import math
from typing import Optional


def as_bytes(value, name: str, *, allow_none: bool = False) -> Optional[bytes]:
    """Return ``value`` as bytes (str is UTF-8 encoded) or raise naming ``name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, str):
        return value.encode('utf-8')
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    expected = 'bytes, str or None' if allow_none else 'bytes or str'
    raise TypeError(f'{name} must be {expected}, got {type(value).__name__}')


def non_negative_seconds(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{name} must be a number of seconds, got {type(value).__name__}')
    if not math.isfinite(value) or value < 0:
        raise ValueError(f'{name} must be finite and >= 0, got {value!r}')
    return float(value)


def non_negative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} must be an int, got {type(value).__name__}')
    if value < 0:
        raise ValueError(f'{name} must be >= 0, got {value!r}')
    return value


def positive_int_or_none(value, name: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} must be an int or None, got {type(value).__name__}')
    if value < 1:
        raise ValueError(f'{name} must be >= 1, got {value!r}')
    return value
