"""CommSocket: what ``TCPInterface.comm`` is, once the interface has ever connected."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Protocol

from socs_tcp._errors import NotConnected

if TYPE_CHECKING:
    from socs_tcp._link_channel import LinkChannel


class _Blocking(Protocol):
    """The public ``TCPInterface`` calls a ``CommSocket`` passes on."""

    ip_address: str
    port: int
    timeout: float

    def send(self, msg: bytes) -> None: ...

    def recv(self, bufsize: int = 4096) -> bytes: ...


class CommSocket:
    """A socket-like face on a ``TCPInterface``, for drivers written against ``socs.tcp``.

    SOCS drivers call ``self.comm.sendall(...)``, ``self.comm.recv(...)``,
    ``self.comm.settimeout(...)`` and ``self.comm.close()``, and wait on
    ``select.select([self.comm], ...)``, at any time: also after the device
    hung up and while it is down. Each goes through the interface (its
    locking, timeouts and reconnects), so every failure is a
    ``ConnectionError``, never an ``AttributeError``. ``fileno()`` is readable
    exactly while input the reactor received waits to be read, and while the
    connection is gone (as a dead socket is; the next ``recv`` then raises).

    It holds its interface weakly: a driver that was dropped closes its
    connection at once, even if something still holds its ``comm``.

    Parameters
    ----------
    interface : TCPInterface
        Whose public calls ``sendall``, ``recv`` and ``settimeout`` make.
    channel : LinkChannel
        The interface's link: ``fileno`` and ``close`` act on it.
    """

    def __init__(self, interface: _Blocking, channel: LinkChannel) -> None:
        self._interface = weakref.ref(interface)
        self._channel = channel

    def sendall(self, data: bytes) -> None:
        self._owner().send(data)

    def send(self, data: bytes) -> int:
        self._owner().send(data)
        return len(data)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if flags:
            raise ValueError(f'recv flags are not supported, got flags={flags!r}')
        return self._owner().recv(bufsize)

    def fileno(self) -> int:
        self._owner()
        return self._channel.fileno()

    def settimeout(self, timeout: float | None) -> None:
        """Set the interface's timeout. None keeps it: socs_tcp never waits without a bound."""
        if timeout is not None:
            self._owner().timeout = timeout

    def gettimeout(self) -> float:
        return self._owner().timeout

    def getpeername(self) -> tuple[str, int]:
        owner = self._owner()
        return (owner.ip_address, owner.port)

    def close(self) -> None:
        """Close the connection, and stay closed until the next ``send`` connects again.

        As with a socket that a ``socs.tcp`` driver closed: nothing reconnects
        in the background meanwhile (many devices take one client only).
        """
        if self._interface() is not None:
            self._channel.release('comm.close() called')

    def _owner(self) -> _Blocking:
        interface = self._interface()
        if interface is None:
            raise NotConnected('the interface this comm belonged to is gone')
        return interface

    def __repr__(self) -> str:
        interface = self._interface()
        where = f'{interface.ip_address}:{interface.port}' if interface is not None else 'gone'
        return f'<CommSocket {where}>'
