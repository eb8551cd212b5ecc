"""DeviceClientFactory: keeps one device connected, in the reactor."""

from __future__ import annotations

import enum
import threading

from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.protocol import ReconnectingClientFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from socs_tcp.backoff import Backoff
from socs_tcp.buffer import InputBuffer
from socs_tcp.errors import DeviceDisconnected, DeviceTimeout, NotConnected
from socs_tcp.framing import Chunk, Exactly, Terminated
from socs_tcp.protocol import DeviceProtocol
from socs_tcp.stats import LinkStats


class LinkState(enum.Enum):
    """Where the link to the device stands."""

    IDLE = 'idle'                    # not started yet
    CONNECTING = 'connecting'        # an attempt is under way
    CONNECTED = 'connected'
    WAITING = 'waiting'              # a retry is scheduled (backoff)
    DISCONNECTING = 'disconnecting'  # we dropped the connection; its loss has not landed yet
    CLOSED = 'closed'                # for good


def reply_frame(terminator: bytes | None, size: int | None, strip: bool = True):
    """The frame a reply is read with: ``size`` bytes, up to ``terminator``, or any bytes."""
    if size is not None:
        return Exactly(size)
    if terminator:
        return Terminated(terminator, strip=strip)
    return Chunk(1 << 30)


class DeviceClientFactory(ReconnectingClientFactory):
    """Keeps a connection to one device, reconnecting in the background.

    Retries follow a ``Backoff`` (capped, with jitter, reset on every success).
    A caller that needs the device now calls ``connect_now``, which skips the
    pending wait: recovery then takes one connect, not the rest of a backoff.

    All methods run in the reactor thread; ``TCPInterface`` is the blocking
    adapter for worker threads. The state worker threads look at (``current``,
    ``generation``, ``failures``, ``state``) changes under ``lock``, and
    ``changed`` is notified each time.

    Parameters
    ----------
    host, port :
        The device's address.
    connect_timeout : float
        Seconds a connection attempt may take.
    backoff : Backoff, optional
        Retry policy; ``Backoff()`` by default.
    reactor : optional
        The reactor to use (default: the global one).
    """

    protocol = DeviceProtocol
    log = Logger()
    noisy = False

    def __init__(self, host: str, port: int, *, connect_timeout: float = 10.0,
                 backoff: Backoff | None = None, reactor=None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.reactor = reactor
        self.clock = reactor  # ReconnectingClientFactory schedules retries on it
        (backoff or Backoff()).apply_to(self)
        self.trace = False

        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.buffer = InputBuffer(self.lock)
        self.stats = LinkStats()
        self.state = LinkState.IDLE
        self.current: DeviceProtocol | None = None
        self.generation = 0        # number of connections made so far
        self.failures = 0          # number of failed connection attempts so far
        self.last_failure = 'no attempt yet'
        self._connect_when_lost = False
        self._outage_logged = False
        self._waiters: list[tuple[Deferred, int | None]] = []
        self._query_lock = DeferredLock()
        self._lost = Deferred()    # fires when the current connection is gone; renewed then
        self._shutdown_trigger = None

    @property
    def address(self) -> str:
        return f'{self.host}:{self.port}'

    # -- control (reactor thread) ------------------------------------------

    def start(self) -> None:
        """Make the first connection attempt (nothing if already started or closed)."""
        if self.state is not LinkState.IDLE:
            return
        self._shutdown_trigger = self.reactor.addSystemEventTrigger(
            'before', 'shutdown', self._reactor_stopping)
        self._set_state(LinkState.CONNECTING)
        self.reactor.connectTCP(self.host, self.port, self, timeout=self.connect_timeout)

    def connect_now(self) -> None:
        """Get a connection as soon as possible, skipping any backoff wait.

        A connection that was dropped is reconnected once its loss has landed,
        so the old and new connections never overlap (single-client devices
        would refuse the new one).
        """
        state = self.state
        if state is LinkState.IDLE:
            self.start()
        elif state is LinkState.DISCONNECTING:
            self._connect_when_lost = True
        elif state is LinkState.WAITING:
            if self._callID is not None and self._callID.active():
                self._callID.cancel()
            self._callID = None
            self._set_state(LinkState.CONNECTING)
            self.connector.connect()
        elif state is LinkState.CONNECTED and self.current is not None and not self.current.usable:
            self.drop(self.current, 'discarded')
            self._connect_when_lost = True

    def drop(self, proto: DeviceProtocol, why: str) -> None:
        """Abort ``proto``'s connection (input it still delivers is dropped)."""
        if proto is not self.current or proto.transport is None:
            return
        self.discard(proto, DeviceDisconnected(f'connection to {self.address} dropped: {why}'))
        self.log.info('{address}: dropping the connection ({why})', address=self.address, why=why)
        if self.state is LinkState.CONNECTED:
            self._set_state(LinkState.DISCONNECTING)
        proto.transport.abortConnection()

    def discard(self, proto: DeviceProtocol, error: ConnectionError) -> None:
        """Stop handing ``proto``'s input to callers at once (any thread).

        Readers get ``error``; the abort itself is ``drop``'s job, in the reactor.
        """
        proto.usable = False
        self.stats.record_dropped(self.buffer.discard(proto, error))

    def close(self) -> Deferred:
        """Stop for good: no more retries, the connection aborted, waiters failed.

        @return: a Deferred that fires once the connection is gone.
        """
        if self.state is LinkState.CLOSED:
            return self._lost if self.current is not None else defer.succeed(None)
        self.stopTrying()
        proto = self.current
        self._set_state(LinkState.CLOSED)
        error = NotConnected(f'connection to {self.address} closed')
        self._fail_waiters(error, everyone=True)
        if self._shutdown_trigger is not None:
            try:
                self.reactor.removeSystemEventTrigger(self._shutdown_trigger)
            except (ValueError, KeyError):
                pass
            self._shutdown_trigger = None
        if proto is not None and proto.transport is not None:
            self.discard(proto, error)
            proto.transport.abortConnection()
            return self._lost
        self.buffer.connection_down(None, error)
        return defer.succeed(None)

    # -- Deferred API for reactor-side code ---------------------------------

    def whenConnected(self, timeout: float | None = None,
                      failAfterFailures: int | None = None) -> Deferred:
        """Return a Deferred that fires with a connected ``DeviceProtocol``.

        @param timeout: give up after this many seconds (``DeviceTimeout``).
        @param failAfterFailures: give up after this many failed attempts
            (``NotConnected``); None waits through failures, retrying.
        """
        if self.current is not None and self.current.usable:
            return defer.succeed(self.current)
        if self.state is LinkState.CLOSED:
            return defer.fail(NotConnected(f'connection to {self.address} closed'))
        self.start()
        entry: list = []

        def cancel(d: Deferred) -> None:
            if entry and entry[0] in self._waiters:
                self._waiters.remove(entry[0])
        d = Deferred(cancel)
        entry.append((d, None if failAfterFailures is None else self.failures + failAfterFailures))
        self._waiters.append(entry[0])
        if timeout is not None:
            d.addTimeout(timeout, self.reactor)
            d.addErrback(self._timeout_as, f'no connection to {self.address} within {timeout} s')
        return d

    def query(self, data: bytes, *, terminator: bytes | None = None, size: int | None = None,
              timeout: float = 10.0) -> Deferred:
        """Send ``data`` and return a Deferred for the reply (without terminator).

        Queries are serialised; stale input is dropped before writing; a
        missing connection is made at once. On a timeout the connection is
        dropped, so the late reply is never mistaken for another one.
        """
        frame = reply_frame(terminator, size)
        d = self._query_lock.run(self._query, bytes(data), frame)
        d.addTimeout(timeout, self.reactor)
        return d.addErrback(self._timeout_as, f'no reply from {self.address} within {timeout} s')

    def _query(self, data: bytes, frame) -> Deferred:
        self.connect_now()
        d = self.whenConnected(failAfterFailures=1)
        return d.addCallback(self._query_on, data, frame)

    def _query_on(self, proto: DeviceProtocol, data: bytes, frame) -> Deferred:
        self.stats.record_dropped(self.buffer.clear())
        proto.write_all(data, None)
        d = self.buffer.when_frame(frame)

        def on_cancel(f: Failure) -> Failure:
            f.trap(defer.CancelledError)
            self.stats.timeouts += 1
            self.drop(proto, 'no reply within the timeout')
            return f
        d.addErrback(on_cancel)
        d.addCallback(self._count_query)
        return d

    def _count_query(self, reply: bytes) -> bytes:
        self.stats.queries += 1
        return reply

    @staticmethod
    def _timeout_as(f: Failure, message: str):
        f.trap(defer.TimeoutError)
        raise DeviceTimeout(message)

    # -- from DeviceProtocol ------------------------------------------------

    def connection_made(self, proto: DeviceProtocol) -> None:
        if self.state is LinkState.CLOSED:
            proto.usable = False
            proto.transport.abortConnection()
            return
        self.resetDelay()
        self.stats.connects += 1
        self.stats.last_connect_time = self.reactor.seconds()
        dropped = self.buffer.connection_up(proto)
        self.stats.record_dropped(dropped)
        with self.lock:
            self.current = proto
            self.generation += 1
            proto.generation = self.generation
            self.state = LinkState.CONNECTED
            self.changed.notify_all()
        self.log.info('{address}: connected', address=self.address)
        self._outage_logged = False
        waiters, self._waiters = self._waiters, []
        for d, _ in waiters:
            d.callback(proto)

    def input_received(self, proto: DeviceProtocol, data: bytes) -> None:
        if self.buffer.feed(data, proto):
            self.stats.record_in(len(data))
            if self.trace:
                self.log.debug('{address} < {data!r}', address=self.address, data=data)
        else:
            self.stats.record_dropped(len(data))

    def connection_lost(self, proto: DeviceProtocol, reason: Failure) -> None:
        if proto is not self.current:
            return
        message = reason.getErrorMessage() if reason is not None else 'closed'
        self.stats.disconnects += 1
        self.stats.record_error(f'connection lost: {message}')
        self.buffer.connection_down(proto, DeviceDisconnected(
            f'connection to {self.address} lost: {message}'))
        with self.lock:
            self.current = None
            if self.state is not LinkState.CLOSED:
                self.state = LinkState.WAITING
            self.changed.notify_all()
        self.log.info('{address}: connection lost ({message})', address=self.address, message=message)
        lost, self._lost = self._lost, Deferred()
        lost.callback(None)

    # -- ReconnectingClientFactory -----------------------------------------

    def startedConnecting(self, connector) -> None:
        if self.state is not LinkState.CLOSED:
            self._set_state(LinkState.CONNECTING)

    def clientConnectionFailed(self, connector, reason: Failure) -> None:
        message = reason.getErrorMessage()
        self.stats.connect_failures += 1
        self.stats.record_error(f'cannot connect: {message}')
        self.buffer.connection_down(None, NotConnected(f'cannot connect to {self.address}: {message}'))
        with self.lock:
            self.failures += 1
            self.last_failure = message
            self.changed.notify_all()
        if not self._outage_logged:  # once per outage: dead devices must not flood the log
            self._outage_logged = True
            self.log.warn('{address}: cannot connect ({message}); retrying in the background',
                          address=self.address, message=message)
        self._fail_waiters(NotConnected(f'cannot connect to {self.address}: {message}'))
        self._retry_or_stop(connector, reason, super().clientConnectionFailed)

    def clientConnectionLost(self, connector, reason: Failure) -> None:
        if self._connect_when_lost and self.state is not LinkState.CLOSED:
            self._connect_when_lost = False
            self.connector = connector
            self._set_state(LinkState.CONNECTING)
            connector.connect()
            return
        self._retry_or_stop(connector, reason, super().clientConnectionLost)

    def _retry_or_stop(self, connector, reason: Failure, retry) -> None:
        if self.state is LinkState.CLOSED:
            return
        self._set_state(LinkState.WAITING)
        retry(connector, reason)  # schedules the next attempt after the backoff delay

    # -- internals -------------------------------------------------------------

    def _set_state(self, state: LinkState) -> None:
        with self.lock:
            self.state = state
            self.changed.notify_all()

    def _fail_waiters(self, error: ConnectionError, everyone: bool = False) -> None:
        keep = []
        for d, fail_at in self._waiters:
            if everyone or (fail_at is not None and self.failures >= fail_at):
                d.errback(error)
            else:
                keep.append((d, fail_at))
        self._waiters = keep

    def _reactor_stopping(self) -> None:
        """Release every caller: nothing will be answered once the reactor stops."""
        self._shutdown_trigger = None
        self.stopTrying()
        error = NotConnected(f'connection to {self.address} ended: the reactor is stopping')
        with self.lock:
            self.state = LinkState.CLOSED
            self.changed.notify_all()
        self.buffer.connection_down(None, error)
        self._fail_waiters(error, everyone=True)
