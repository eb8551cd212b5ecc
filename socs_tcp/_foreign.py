"""I/O over a socket that ``_connect`` returned instead of socs_tcp's own ``comm``.

``socs.tcp.TCPInterface`` builds its connection with ``self._connect(address)``,
and tests (SOCS's own among them) patch that seam to hand the driver a fake
socket. When ``TCPInterface._connect`` returns anything but the interface's
own ``comm``, the interface uses that object the way ``socs.tcp`` would: the
reactor's link stays out of it, ``comm`` is that object, and these functions
do the I/O on it. Every failure is a ``ConnectionError``, as elsewhere.
"""

from __future__ import annotations

import selectors
import socket
from typing import TYPE_CHECKING

from twisted.logger import Logger, LogLevel

from socs_tcp._errors import DeviceDisconnected, DeviceTimeout, NotConnected
from socs_tcp._framing import Frame

if TYPE_CHECKING:
    from socs_tcp._interface import TCPInterface

log = Logger(namespace='socs_tcp._foreign')


def send(interface: TCPInterface, data: bytes) -> None:
    """``sendall`` on ``interface.comm``; on failure connect again (through ``_connect``) and retry once."""
    for attempt in (1, 2):
        comm = interface.comm
        if comm is None:
            reconnect(interface)
            comm = interface.comm
            if comm is None:
                raise NotConnected('unable to establish connection')
        try:
            comm.sendall(data)
            return
        except Exception as exc:  # a fake socket may raise anything: all of it is a failed write
            if attempt == 2:
                raise DeviceDisconnected(f'write failed: {exc!r}') from exc
            reconnect(interface)


def recv(interface: TCPInterface, bufsize: int, reset_on_error: bool) -> bytes:
    """``recv`` on ``interface.comm``, bounded by the timeout for a real socket (as socs.tcp's
    ``select`` first); a peer that closed (``b''``) is a disconnect."""
    comm = interface.comm
    if comm is None:
        raise NotConnected('connection not established, not ready to read')
    if isinstance(comm, socket.socket) and not _readable(comm, interface.timeout):
        if reset_on_error:
            reconnect(interface)
        raise DeviceTimeout(f'nothing to read within {interface.timeout} s')
    try:
        data = comm.recv(bufsize)
    except Exception as exc:
        if reset_on_error:
            reconnect(interface)
        raise DeviceDisconnected(f'read failed: {exc!r}') from exc
    if data == b'':
        raise DeviceDisconnected('the peer closed the connection')
    return data


def read(interface: TCPInterface, frame: Frame) -> bytes:
    """``recv`` until ``frame`` is complete; return the frame (what a fake sent beyond it is dropped)."""
    buffer = bytearray()
    while (reply := frame.extract(buffer)) is None:
        buffer += recv(interface, 4096, False)
    return reply


def _readable(sock: socket.socket, timeout: float) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(timeout))


def reconnect(interface: TCPInterface) -> None:
    """Close ``comm`` and make a new one through ``_connect``, as ``socs.tcp``'s ``_reset`` does."""
    comm = interface.comm
    if comm is not None:
        try:
            comm.close()
        except Exception:  # a fake's close may fail; the old socket is dropped either way
            log.failure('closing the old comm failed', level=LogLevel.debug)
    interface.comm = interface._connect((interface.ip_address, interface.port))
