"""Waiting on a condition in a test: poll it, bounded, and say what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from socs_tcp import _arguments as arguments

T = TypeVar('T')


def wait_for(get: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``get()`` until it returns something truthy; return that value.

    Parameters
    ----------
    get : callable
        Called every ``interval`` seconds, e.g.
        ``lambda: client.acq.status().session['data'].get('fields')``.
    timeout : float
        Seconds to wait at most.
    what : str
        What is awaited, for the error message.
    interval : float
        Seconds between two calls.

    Raises
    ------
    AssertionError
        After ``timeout`` seconds, naming ``what`` and the last value seen
        (a test failure, not an error).
    TypeError, ValueError
        If ``timeout`` or ``interval`` is not a number of seconds > 0.
    """
    timeout = arguments.seconds(timeout, 'timeout')
    interval = arguments.seconds(interval, 'interval')
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout:g} s waiting for {what}; '
                                 f'last value: {value!r}')
        time.sleep(interval)
