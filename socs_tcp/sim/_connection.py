"""One client connection of a `DeviceServer`, and the factory that builds them.

The connection frames requests out of the byte stream, hands each to its
server, and sends replies through an outbox that applies the delay and
fragment faults while keeping replies in request order.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.internet.interfaces import IAddress, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from socs_tcp.sim._faults import Faults

if TYPE_CHECKING:
    from socs_tcp.sim._server import DeviceServer

log = Logger(namespace='socs_tcp.sim')


class _PendingReply:
    """One reply waiting in a connection's outbox."""

    __slots__ = ('due', 'chunks', 'interval')

    def __init__(self, due: float, chunks: deque, interval: float):
        self.due = due            # reactor time at which the next chunk may go
        self.chunks = chunks
        self.interval = interval


class DeviceConnection(Protocol):
    """One client connection to a `DeviceServer` (built by its factory).

    Requests are framed from the byte stream, handed to the server, and
    replies go out through an outbox in request order, so a delayed or
    fragmented reply is never overtaken by a later one.
    """

    # Set by connectionMade: a TCP connection (or a test's StringTransport).
    transport: ITCPTransport

    def __init__(self, server: DeviceServer):
        self._server = server
        self._buf = bytearray()
        self._outbox: deque = deque()
        self._timer = None
        self._gone_waiters: list = []
        self.closing = False   # dropped or hung up: the slot is free, input ignored
        self.gone = False

    # -- Protocol -----------------------------------------------------------
    def connectionMade(self):
        # Replies are small and latency matters more than segment count
        # (fragments must also leave as separate segments).
        set_no_delay = getattr(self.transport, 'setTcpNoDelay', None)
        if set_no_delay is not None:
            set_no_delay(True)
        self._server._connection_made(self)

    def dataReceived(self, data: bytes):
        if self.closing:
            return
        self._buf += data
        framer = self._server._framer
        while not self.closing:
            try:
                request = framer(self._buf)
            except Exception:
                log.failure('Framing error; dropping the connection')
                self.drop()
                return
            if request is None:
                return
            self._server._request_received(self, request)

    def connectionLost(self, reason=None):
        self.closing = True
        self.gone = True
        self._outbox.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._server._connection_gone(self)
        waiters, self._gone_waiters = self._gone_waiters, []
        for d in waiters:
            d.callback(None)

    # -- used by the server -------------------------------------------------
    def drop(self):
        """Drop this connection at once (RST), discarding queued replies."""
        if self.closing:
            return
        self.closing = True
        self._outbox.clear()
        self.transport.abortConnection()

    def hangup(self):
        """Hang up: end this connection cleanly (FIN), discarding queued replies."""
        if self.closing:
            return
        self.closing = True
        self._outbox.clear()
        self.transport.loseConnection()

    def when_gone(self) -> defer.Deferred:
        """Deferred that fires (with None) once the connection is gone."""
        if self.gone:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._gone_waiters.append(d)
        return d

    def write_now(self, data: bytes):
        if not self.closing and data:
            self.transport.write(data)

    def queue_reply(self, data: bytes, faults: Faults):
        """Send ``data`` shaped by the delay and fragment faults, in order."""
        if not faults.shapes_replies and not self._outbox:
            self.write_now(data)
            return
        size = faults.fragment_size
        if size is None:
            chunks = deque([data])
        else:
            chunks = deque(data[i:i + size] for i in range(0, len(data), size))
        reactor = self._server._reactor
        self._outbox.append(_PendingReply(reactor.seconds() + faults.delay, chunks,
                                          faults.fragment_interval))
        if self._timer is None:
            self._pump()

    def _pump(self):
        """Write what is due from the outbox; schedule the next step if any."""
        self._timer = None
        reactor = self._server._reactor
        while self._outbox and not self.closing:
            reply = self._outbox[0]
            now = reactor.seconds()
            if reply.due > now:
                self._timer = reactor.callLater(reply.due - now, self._pump)
                return
            self.transport.write(reply.chunks.popleft())
            if not reply.chunks:
                self._outbox.popleft()
                continue
            # Always go through the reactor between chunks, even with a zero
            # interval, so each chunk leaves in its own write.
            reply.due = now + reply.interval
            self._timer = reactor.callLater(reply.interval, self._pump)
            return


class DeviceServerFactory(Factory):
    """Builds `DeviceConnection` s; refuses those over ``max_connections``."""

    def __init__(self, server: DeviceServer):
        self._server = server

    def buildProtocol(self, addr: IAddress | None) -> DeviceConnection | None:
        # Returning None makes Twisted refuse the new socket (close it at once): a
        # one-client instrument that refuses a second client.
        if not self._server._has_free_slot():
            self._server.rejected_count += 1
            log.debug('Refusing connection from {addr}: max_connections reached', addr=addr)
            return None
        return DeviceConnection(self._server)
