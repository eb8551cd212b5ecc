"""Counters that describe one device link, for ``TCPInterface.stats``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass


@dataclass
class LinkStats:
    """What happened on a link since it was made.

    Each counter is written from one thread only (input by the reactor,
    output by whoever writes), so plain attributes suffice under the GIL.
    """

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
        self.bytes_in += n

    def record_out(self, n: int) -> None:
        self.bytes_out += n

    def record_dropped(self, n: int) -> None:
        self.stale_bytes_dropped += n

    def record_error(self, message: str) -> None:
        self.last_error = message
        self.last_error_time = time.time()

    def as_dict(self) -> dict:
        return asdict(self)
