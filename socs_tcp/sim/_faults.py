"""The fault settings a `DeviceServer` applies to its replies.

Kept apart from the server so the set of faults, and what "no fault" means,
is visible in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Faults:
    """Current reply-path faults of one server (all off by default).

    Attributes
    ----------
    delay : float
        Seconds between reading a request and starting its reply.
    silent : bool
        Requests are read and recorded, never handled nor answered.
    fragment_size : int or None
        Replies are written in chunks of this many bytes (None: whole).
    fragment_interval : float
        Seconds between two chunks of one reply.
    garbage : bytes
        Bytes put in front of the next reply sent, then cleared.
    drop_countdown : int or None
        Requests still to be read before the connection carrying the last
        one is dropped without a reply (None: no drop pending).
    """

    delay: float = 0.0
    silent: bool = False
    fragment_size: int | None = None
    fragment_interval: float = 0.0
    garbage: bytes = b''
    drop_countdown: int | None = None

    @property
    def shapes_replies(self) -> bool:
        """True if replies can't simply be written at once, whole."""
        return self.delay > 0 or self.fragment_size is not None
