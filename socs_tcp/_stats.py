"""Counters that describe one device link, for ``TCPInterface.stats``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, fields


@dataclass
class LinkStats:
    """What happened on a link since it was made.

    Two kinds of counter, so that none is ever written by two threads at once:

    - owned by the reactor thread, written there only, as plain attributes:
      ``connects``, ``disconnects``, ``connect_failures``, ``input_pauses``,
      ``last_connect_time``;
    - written from any thread (callers and reactor code both read, write and
      query): everything else, only through the ``record_*``/``count_*``
      methods, which take ``lock``. ``Bridge`` passes its own lock, so that
      the link has one place where threads meet; it updates these fields
      directly while it holds that lock.

    ``as_dict`` reads everything under ``lock``.
    """

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    stale_bytes_dropped: int = 0
    queries: int = 0
    timeouts: int = 0
    input_pauses: int = 0
    last_error: str | None = None
    last_error_time: float | None = None
    last_connect_time: float | None = None

    def record_in(self, n: int) -> None:
        with self.lock:
            self.bytes_in += n

    def record_out(self, n: int) -> None:
        with self.lock:
            self.bytes_out += n

    def record_dropped(self, n: int) -> None:
        if n:
            with self.lock:
                self.stale_bytes_dropped += n

    def record_error(self, message: str) -> None:
        with self.lock:
            self.error_held(message)

    def count_query(self) -> None:
        with self.lock:
            self.queries += 1

    def count_timeout(self) -> None:
        with self.lock:
            self.timeouts += 1

    def error_held(self, message: str) -> None:
        """``record_error`` for a caller that already holds ``lock``."""
        self.last_error = message
        self.last_error_time = time.time()

    def as_dict(self) -> dict:
        with self.lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if f.name != 'lock'}
