"""SocketChannel: a ``TCPInterface``'s channel over the socket that ``_connect`` returned.

``socs.tcp.TCPInterface`` builds its connection with ``self._connect(address)``,
and tests (SOCS's own among them) patch that seam to hand the driver a fake
socket. When ``TCPInterface._connect`` returns anything but the interface's
own ``comm``, the interface talks through this channel: the object is used
the way ``socs.tcp`` uses its socket (``sendall``, ``recv``; a failed write
closes it and connects again through the seam), with no reactor. Every
failure is a ``ConnectionError``, as on the reactor's link.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Callable

from twisted.logger import Logger, LogLevel

from socs_tcp import _tap as tap
from socs_tcp._errors import DeviceDisconnected, DeviceTimeout, NotConnected
from socs_tcp._framing import Chunk, Frame, FrameTooLong
from socs_tcp._stats import LinkStats

log = Logger(namespace='socs_tcp._socket_channel')

_RECV_SIZE = 4096


class SocketChannel:
    """Blocking calls on a socket-like object, one at a time.

    Parameters
    ----------
    sock : object or None
        What ``_connect`` returned: anything with ``sendall`` and ``recv``
        (a real socket's reads wait at most until the deadline, as
        ``socs.tcp`` selects first); None: not connected.
    reconnect : callable
        Makes a new one (``TCPInterface._connect`` with the address).
    address : str
        ``'host:port'``, for messages and taps.
    """

    def __init__(self, sock: object | None, reconnect: Callable[[], object | None], address: str) -> None:
        self._sock = sock
        self._reconnect = reconnect
        self._address = address
        self._input = bytearray()   # read beyond the frames returned so far
        self._lock = threading.Lock()
        self._stats = LinkStats()

    @property
    def comm(self) -> object | None:
        return self._sock

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def stats(self) -> dict:
        values = self._stats.as_dict()
        values.update(state='connected' if self._sock is not None else 'idle',
                      connected=self._sock is not None, buffered=len(self._input),
                      reading_paused=False, input_limit=None, reconnect_delay=0.0)
        return values

    def send(self, data: bytes, deadline: float) -> None:
        self._enter(deadline)
        try:
            self._send(data)
        finally:
            self._lock.release()

    def recv(self, bufsize: int, deadline: float, reset_on_error: bool) -> bytes:
        self._enter(deadline)
        try:
            if self._input:
                return Chunk(bufsize).extract(self._input) or b''
            try:
                return self._receive(bufsize, deadline)
            except ConnectionError:
                if reset_on_error:
                    self._renew()
                raise
        finally:
            self._lock.release()

    def read(self, frame: Frame, deadline: float, method: str = 'read') -> bytes:
        self._enter(deadline)
        try:
            return self._read(frame, deadline)
        finally:
            self._lock.release()

    def query(self, data: bytes, frame: Frame, deadline: float) -> bytes:
        self._enter(deadline)
        try:
            self._stats.record_dropped(len(self._input))
            self._input.clear()
            self._send(data)
            reply = self._read(frame, deadline)
        finally:
            self._lock.release()
        self._stats.count_query()
        return reply

    def clear(self, deadline: float) -> int:
        self._enter(deadline)
        try:
            dropped = len(self._input)
            self._input.clear()
        finally:
            self._lock.release()
        self._stats.record_dropped(dropped)
        return dropped

    def close(self) -> None:
        sock = self._sock
        if sock is not None:
            _close_quietly(sock)

    # -- internals -------------------------------------------------------------

    def _enter(self, deadline: float) -> None:
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise DeviceTimeout(f'{self._address} was busy with another call for the whole timeout')

    def _send(self, data: bytes) -> None:
        """``sendall``; on failure connect again (through ``_connect``) and retry once."""
        for attempt in (1, 2):
            if self._sock is None:
                self._renew()
                if self._sock is None:
                    raise NotConnected(f'unable to connect to {self._address}')
            try:
                self._sock.sendall(data)  # type: ignore[attr-defined]
            except Exception as exc:  # a fake socket may raise anything: all of it is a failed write
                self._stats.record_error(f'write failed: {exc!r}')
                if attempt == 2:
                    raise DeviceDisconnected(f'write to {self._address} failed: {exc!r}') from exc
                self._renew()
                continue
            self._stats.record_out(len(data))
            tap.notify_sent(self._address, data)
            return

    def _receive(self, bufsize: int, deadline: float) -> bytes:
        """One ``recv``, bounded by ``deadline`` for a real socket; a peer that closed (``b''``) is a disconnect."""
        sock = self._sock
        if sock is None:
            raise NotConnected(f'not connected to {self._address}, not ready to read')
        if isinstance(sock, socket.socket) and not _readable(sock, deadline - time.monotonic()):
            raise DeviceTimeout(f'nothing to read from {self._address} within the timeout')
        try:
            data = sock.recv(bufsize)  # type: ignore[attr-defined]
        except Exception as exc:
            raise DeviceDisconnected(f'read from {self._address} failed: {exc!r}') from exc
        if data == b'':
            raise DeviceDisconnected(f'{self._address} closed the connection')
        self._stats.record_in(len(data))
        tap.notify_received(self._address, data)
        return data

    def _read(self, frame: Frame, deadline: float) -> bytes:
        """``recv`` until ``frame`` is complete; keep what came beyond it for the next read."""
        try:
            while (reply := frame.extract(self._input)) is None:
                self._input += self._receive(_RECV_SIZE, deadline)
        except FrameTooLong as exc:
            self._stats.record_dropped(len(self._input))
            self._input.clear()
            sock, self._sock = self._sock, None   # the next send connects again, as after a reset
            if sock is not None:
                _close_quietly(sock)
            raise DeviceDisconnected(f'a reply from {self._address} went over the maximum frame length '
                                     f'(max_frame_length={exc.max_length} bytes): connection dropped') from None
        return reply

    def _renew(self) -> None:
        """Close the socket and make a new one through ``_connect``, as ``socs.tcp``'s ``_reset`` does."""
        sock = self._sock
        if sock is not None:
            _close_quietly(sock)
        self._input.clear()
        self._sock = self._reconnect()


def _close_quietly(sock: object) -> None:
    try:
        sock.close()  # type: ignore[attr-defined]
    except Exception:  # a fake's close may fail; the old socket is dropped either way
        log.failure('closing the old comm failed', level=LogLevel.debug)


def _readable(sock: socket.socket, timeout: float) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(max(0.0, timeout)))
