"""DeviceProtocol: one TCP connection to a device, owned by the reactor."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.protocol import Protocol

from socs_tcp import _tap as tap

# Keepalive so that a half-open connection (device power-cycled, cable
# pulled) is noticed in about half a minute rather than Linux's two hours.
KEEPALIVE_IDLE = 10
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3


class DeviceProtocol(Protocol):
    """One connection to a device: sets up the socket and hands every event to its factory.

    The factory (a ``DeviceClientFactory``) decides what the events mean;
    this class only knows TCP: NODELAY and keepalive on, reading paused or
    resumed when the factory's input limit says so, and ``abort``.

    Attributes
    ----------
    generation : int
        Which of the factory's connections this is (set when it is made).
    """

    # A TCP transport (ITCPTransport and more), not the bare ITransport Protocol declares.
    transport: Any

    def __init__(self) -> None:
        self.generation = 0

    def connectionMade(self) -> None:
        transport = self.transport
        transport.setTcpNoDelay(True)
        transport.setTcpKeepAlive(True)
        sock = transport.getHandle()
        for option, value in (('TCP_KEEPIDLE', KEEPALIVE_IDLE), ('TCP_KEEPINTVL', KEEPALIVE_INTERVAL),
                              ('TCP_KEEPCNT', KEEPALIVE_COUNT)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
        tap.notify_opened(self.factory.address)
        self.factory.connection_made(self)

    def dataReceived(self, data: bytes) -> None:
        tap.notify_received(self.factory.address, data)
        self.factory.input_received(self, data)

    def connectionLost(self, reason=None) -> None:
        tap.notify_closed(self.factory.address, reason.getErrorMessage() if reason else 'closed')

    def socket(self) -> socket.socket:
        """The connection's socket."""
        return self.transport.getHandle()

    def write(self, data: bytes) -> None:
        """Send ``data``: the transport buffers what the kernel does not take yet."""
        self.transport.write(data)

    def abort(self) -> None:
        """End the connection at once, dropping unsent output; ``connectionLost`` follows."""
        self.transport.abortConnection()

    def pause_reading(self) -> None:
        """Stop reading the socket: the kernel buffers fill, then TCP holds the device back."""
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        """Read the socket again."""
        self.transport.resumeProducing()
