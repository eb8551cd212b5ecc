"""Argument checks, written once for the library, the simulators and the command lines.

Each check turns a caller's value into the form the code stores, or raises
``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, out of
range) with a message that names the argument, before anything is changed.
``command_line`` wraps a check as an ``argparse`` ``type=``, so command lines
refuse the same values with the same words.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Literal, TypeVar, overload

T = TypeVar('T')


@overload
def as_bytes(value: object, name: str, *, encoding: str = ...,
             allow_none: Literal[False] = ...) -> bytes: ...
@overload
def as_bytes(value: object, name: str, *, encoding: str = ...,
             allow_none: bool = ...) -> bytes | None: ...
def as_bytes(value: object, name: str, *, encoding: str = 'utf-8',
             allow_none: bool = False) -> bytes | None:
    """Return ``value`` as bytes (a ``str`` is encoded with ``encoding``).

    Raises
    ------
    TypeError
        ``value`` is not bytes-like or str (or None, with ``allow_none``).
    """
    if value is None and allow_none:
        return None
    if isinstance(value, str):
        return value.encode(encoding)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    expected = 'bytes, str or None' if allow_none else 'bytes or str'
    raise TypeError(f'{name} must be {expected}, got {type(value).__name__}')


def port(value: object, name: str = 'port', *, allow_zero: bool = False) -> int:
    """Return ``value`` as a TCP port number, 1..65535 (an int-like str is accepted, as socs.tcp casts).

    With ``allow_zero``, 0 is accepted too: a port to listen on, 0 picking a free one.

    Raises
    ------
    TypeError
        Not an int (a bool is refused too).
    ValueError
        Outside 1..65535 (0..65535 with ``allow_zero``).
    """
    if isinstance(value, bool):
        raise TypeError(f'{name} must be an int, got {value!r}')
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise TypeError(f'{name} must be an int, got {value!r}') from None
    low = 0 if allow_zero else 1
    if not low <= number <= 65535:
        raise ValueError(f'{name} must be in {low}..65535, got {number}')
    return number


def seconds(value: object, name: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite number of seconds, > 0 (>= 0 with ``allow_zero``).

    Raises
    ------
    TypeError
        Not an int or float (a bool is refused too).
    ValueError
        Negative, zero (unless allowed), infinite or NaN.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{name} must be a number of seconds, got {value!r}')
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and math.isfinite(value)):  # NaN fails both comparisons
        bound = '>= 0' if allow_zero else '> 0'
        raise ValueError(f'{name} must be a finite number {bound}, got {value!r}')
    return float(value)


def count(value: object, name: str, *, allow_zero: bool = False) -> int:
    """Return ``value`` as an int, > 0 (>= 0 with ``allow_zero``).

    Raises
    ------
    TypeError
        Not an int (a bool is refused too).
    ValueError
        Too small.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} must be an int, got {value!r}')
    if value < (0 if allow_zero else 1):
        raise ValueError(f'{name} must be {">= 0" if allow_zero else "> 0"}, got {value}')
    return value


def command_line(check: Callable[..., T], parse: Callable[[str], object] = float,
                 **options) -> Callable[[str], T]:
    """Wrap ``check`` as an ``argparse`` ``type=``: parse the text, check it, or say why not.

    ``parse`` turns the text into the value ``check`` expects (``float`` for
    seconds, ``int`` for ports and counts); ``options`` go to ``check``.
    """
    def convert(text: str) -> T:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
        try:
            return check(value, 'the value', **options)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = check.__name__  # argparse names the type in its messages
    return convert
