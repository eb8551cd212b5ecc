"""DeviceProtocol: one TCP connection to a device, owned by the reactor."""

from __future__ import annotations

import select
import socket
import threading
import time

from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from socs_tcp.errors import DeviceDisconnected, DeviceTimeout

# Keepalive so that a half-open connection (device power-cycled, cable
# pulled) is noticed in about half a minute rather than Linux's two hours.
KEEPALIVE_IDLE = 10
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3

# How long a writer waits between tries when the device stops reading.
_WRITE_POLL = 0.05


class DeviceProtocol(Protocol):
    """One connection to a device.

    The reactor reads: input goes to the factory, which hands it to callers
    unless the connection was discarded after a timeout (then late input is
    dropped, so a reply to a request that timed out never answers a later one).

    Writes go straight to the kernel from the calling thread, through a
    duplicate of the connection's socket made when it connects. This saves a
    hop into the reactor on every request; the duplicate is closed only under
    ``_write_lock``, so a writer never writes to a descriptor that has been
    closed and reused. Input and connection state stay with the reactor.

    The protocol's ``factory`` is a ``DeviceClientFactory``.
    """

    log = Logger()

    def __init__(self) -> None:
        self.usable = False
        self.generation = 0  # which of the factory's connections this is (set when made)
        self.lost_reason: Failure | None = None
        self._write_lock = threading.Lock()
        self._wsock: socket.socket | None = None

    # -- Protocol ----------------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        transport.setTcpNoDelay(True)
        transport.setTcpKeepAlive(True)
        sock = transport.getHandle()
        for option, value in (('TCP_KEEPIDLE', KEEPALIVE_IDLE), ('TCP_KEEPINTVL', KEEPALIVE_INTERVAL),
                              ('TCP_KEEPCNT', KEEPALIVE_COUNT)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
        self._wsock = sock.dup()  # shares the (non-blocking) open file
        self.usable = True
        self.factory.connection_made(self)

    def dataReceived(self, data: bytes) -> None:
        self.factory.input_received(self, data)

    def connectionLost(self, reason: Failure = None) -> None:
        self.usable = False
        self.lost_reason = reason
        with self._write_lock:
            wsock, self._wsock = self._wsock, None
        if wsock is not None:
            wsock.close()
        self.factory.connection_lost(self, reason)

    # -- writing (any thread) ---------------------------------------------

    def write_all(self, data: bytes, deadline: float | None) -> None:
        """Write every byte of ``data`` to the device.

        In a worker thread, pass a ``time.monotonic()`` deadline: if the device
        stops reading, the call waits for it until then. In the reactor thread
        pass ``None``: a write that cannot complete at once fails rather than
        block the reactor (device messages are small; a full send buffer means
        the device has stopped reading).

        @raise DeviceDisconnected: the connection is gone or the write failed.
        @raise DeviceTimeout: the device did not take the data by ``deadline``.
        """
        view = memoryview(data)
        while view:
            with self._write_lock:
                wsock = self._wsock
                if wsock is None:
                    raise DeviceDisconnected(f'connection lost: {self.describe_loss()}')
                try:
                    sent = wsock.send(view)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    raise DeviceDisconnected(f'write failed: {exc}') from exc
            self.factory.stats.record_out(sent)
            view = view[sent:]
            if not view:
                return
            if deadline is None:
                raise DeviceDisconnected('the device is not reading its input (send buffer full)')
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeviceTimeout(f'the device did not accept {len(view)} bytes within the timeout')
            try:
                select.select([], [wsock], [], min(remaining, _WRITE_POLL))
            except (OSError, ValueError):
                pass  # closed under us: the next turn of the loop says so

    # -- state ------------------------------------------------------------

    def describe_loss(self) -> str:
        """A short reason for the end of this connection, for error messages."""
        if self.lost_reason is None:
            return 'closed'
        return self.lost_reason.getErrorMessage()
