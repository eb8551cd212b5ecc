"""The one place where the traffic of every link can be watched.

A *tap* sees each link's connection events and every byte sent and received,
in order, whichever thread moved them. Tracing and recording are taps; the
channels call `notify_*` at the one point where each thing happens, so a new
observer never needs a new hook in the data path. With no tap installed a
notification costs one attribute load and an empty-tuple test.

Taps run in the thread that moved the bytes (a worker thread or the reactor
thread), so they must be quick and thread-safe, and must not raise: an
exception from a tap is logged and the tap is removed.
"""

from __future__ import annotations

import threading
from typing import Protocol

from twisted.logger import Logger

_log = Logger()


class Tap(Protocol):
    """What a tap receives. ``link`` names the device, as ``'host:port'``."""

    def opened(self, link: str) -> None:
        """A connection to ``link`` was made."""

    def sent(self, link: str, data: bytes) -> None:
        """``data`` was written to ``link``."""

    def received(self, link: str, data: bytes) -> None:
        """``data`` was read from ``link``."""

    def closed(self, link: str, reason: str) -> None:
        """The connection to ``link`` ended, for ``reason``."""


_lock = threading.Lock()
#: The installed taps; replaced whole (never mutated) so that readers need no lock.
taps: tuple[Tap, ...] = ()


def add_tap(tap: Tap) -> None:
    """Start sending every link's traffic to ``tap``."""
    global taps
    with _lock:
        taps = (*taps, tap)


def remove_tap(tap: Tap) -> None:
    """Stop sending traffic to ``tap`` (nothing if it was not installed)."""
    global taps
    with _lock:
        taps = tuple(t for t in taps if t is not tap)


def _notify(method: str, link: str, *args: object) -> None:
    for tap in taps:
        try:
            getattr(tap, method)(link, *args)
        except Exception:
            _log.failure('tap {tap!r} failed on {method}; removed', tap=tap, method=method)
            remove_tap(tap)


def notify_opened(link: str) -> None:
    if taps:
        _notify('opened', link)


def notify_sent(link: str, data: bytes) -> None:
    if taps:
        _notify('sent', link, data)


def notify_received(link: str, data: bytes) -> None:
    if taps:
        _notify('received', link, data)


def notify_closed(link: str, reason: str) -> None:
    if taps:
        _notify('closed', link, reason)
