"""Channel: what a ``TCPInterface`` talks to its device through.

A ``TCPInterface`` checks its arguments, works out each call's deadline and
hands the call to its one channel. Two kinds implement it:

- `socs_tcp._link_channel.LinkChannel`: the connection owned by the reactor
  (``DeviceClientFactory``), reconnected in the background;
- `socs_tcp._socket_channel.SocketChannel`: the socket-like object that a
  patched ``TCPInterface._connect`` returned (SOCS's test seam), used the
  way ``socs.tcp`` uses its socket.

Every method that waits ends by ``deadline`` (a ``time.monotonic()``
value) and raises only ``ConnectionError``s for the device's failures.
"""

from __future__ import annotations

from typing import Protocol

from socs_tcp._framing import Frame


class Channel(Protocol):
    """The device I/O that ``TCPInterface`` needs."""

    @property
    def comm(self) -> object | None:
        """What ``TCPInterface.comm`` is: a socket-like object, or None."""

    @property
    def connected(self) -> bool:
        """Whether the device is connected now."""

    def send(self, data: bytes, deadline: float) -> None:
        """Write all of ``data``, connecting first if needed, retrying once on a new connection."""

    def recv(self, bufsize: int, deadline: float, reset_on_error: bool) -> bytes:
        """Return 1 to ``bufsize`` bytes of input, as soon as there is some."""

    def read(self, frame: Frame, deadline: float, method: str = 'read') -> bytes:
        """Return the next complete ``frame`` of input (``method`` names the call in errors)."""

    def query(self, data: bytes, frame: Frame, deadline: float) -> bytes:
        """Drop stale input, write ``data``, return the reply (a ``frame``); never a late reply."""

    def clear(self, deadline: float) -> int:
        """Drop buffered input; return how many bytes were dropped."""

    def stats(self) -> dict:
        """Counters and state, for ``TCPInterface.stats``."""

    def close(self) -> None:
        """Stop for good (idempotent)."""
