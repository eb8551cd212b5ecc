"""CommSocket: what ``TCPInterface.comm`` is while connected."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from socs_tcp.interface import TCPInterface


class CommSocket:
    """A socket-like face on a ``TCPInterface``, for drivers written against ``socs.tcp``.

    SOCS drivers call ``self.comm.sendall(...)`` and ``self.comm.recv(...)``,
    and wait on ``select.select([self.comm], ...)``. Those go through the
    interface (its locking, timeouts and reconnects). ``fileno()`` is a
    descriptor that is readable exactly while input the reactor received is
    waiting to be read, and not after it has been read.
    """

    def __init__(self, interface: 'TCPInterface') -> None:
        self._interface = interface

    def sendall(self, data: bytes) -> None:
        self._interface.send(data)

    def send(self, data: bytes) -> int:
        self._interface.send(data)
        return len(data)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if flags:
            raise ValueError(f'recv flags are not supported, got flags={flags!r}')
        return self._interface.recv(bufsize)

    def fileno(self) -> int:
        return self._interface._factory.buffer.fileno()

    def settimeout(self, timeout: float | None) -> None:
        self._interface.timeout = timeout

    def gettimeout(self) -> float:
        return self._interface.timeout

    def getpeername(self) -> tuple[str, int]:
        return (self._interface.ip_address, self._interface.port)

    def close(self) -> None:
        """Drop the connection; the next ``send`` reconnects (as a closed SOCS socket would)."""
        self._interface._reset('comm.close() called')

    def __repr__(self) -> str:
        return f'<CommSocket {self._interface.ip_address}:{self._interface.port}>'
