"""DeviceClientFactory: keeps one device connected, in the reactor."""

from __future__ import annotations

import socket

from twisted.internet import defer
from twisted.internet.abstract import isIPAddress
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.protocol import ReconnectingClientFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from socs_tcp import _tap as tap
from socs_tcp._backoff import Backoff
from socs_tcp._bridge import Bridge, Generation
from socs_tcp._errors import DeviceDisconnected, DeviceTimeout, NotConnected
from socs_tcp._framing import DEFAULT_MAX_LENGTH, Frame, reply_frame
from socs_tcp._owned_transport import connect_tcp
from socs_tcp._protocol import DeviceProtocol
from socs_tcp._state import TRANSITIONS, LinkEvent, LinkState

#: Default for ``input_limit``: far above any reply of a lab device, small
#: enough that a thousand links that nobody reads stay within a few hundred MB.
DEFAULT_INPUT_LIMIT = 256 * 1024


class DeviceClientFactory(ReconnectingClientFactory):
    """Keeps a connection to one device, reconnecting in the background.

    The link's state (``state``; see `socs_tcp._state`) changes only in the
    reactor thread and only in ``handle``, by the transition table. Retries
    follow a ``Backoff`` (capped, with jitter, reset on every success); a
    caller that needs the device now sends ``CONNECT`` (``connect_now``),
    which skips the pending wait, so recovery takes one connect, not the rest
    of a backoff. What worker threads may see of the link is in ``bridge``.

    All methods run in the reactor thread; ``TCPInterface`` is the blocking
    adapter for worker threads.

    Parameters
    ----------
    host : str
    port : int
        The device's address.
    connect_timeout : float
        Seconds a connection attempt may take.
    backoff : Backoff, optional
        Retry policy; ``Backoff()`` by default.
    input_limit : int
        Buffered input above which reading pauses (see ``Bridge``).
    max_frame_length : int
        Longest reply ``query`` accepts: a longer one drops the connection
        and fails the query with a ``ConnectionError`` naming the limit.
    reactor : optional
        The reactor to use (default: the global one).
    """

    protocol = DeviceProtocol
    log = Logger()
    noisy = False

    def __init__(self, host: str, port: int, *, connect_timeout: float = 10.0,
                 backoff: Backoff | None = None, input_limit: int = DEFAULT_INPUT_LIMIT,
                 max_frame_length: int = DEFAULT_MAX_LENGTH, reactor=None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.reactor = reactor
        self.clock = reactor  # ReconnectingClientFactory schedules retries on it
        self.backoff = backoff or Backoff()
        self.backoff.apply_to(self)
        self.trace = False
        self.max_frame_length = max_frame_length
        self.bridge = Bridge(reactor, self, input_limit)
        self.stats = self.bridge.stats
        self.state = LinkState.IDLE
        self.current: DeviceProtocol | None = None
        self.generation: Generation = 0   # connections made so far; the current one's number
        self._outage_logged = False
        self._waiters: list[tuple[Deferred, int | None]] = []
        self._query_lock = DeferredLock()
        self._gone: list[Deferred] = []  # fire when the current connection has ended
        self._shutdown_trigger = None

    @property
    def address(self) -> str:
        return f'{self.host}:{self.port}'

    # -- the state machine ---------------------------------------------------

    def handle(self, event: LinkEvent, detail: object = None) -> None:
        """Apply ``event``: move to the state the table says and run its action with ``detail``.

        ``detail`` is what the action needs: the new protocol for ``MADE``,
        the failure for ``FAILED`` and ``LOST``, the reason for ``DROP``,
        ``REST`` and ``CLOSE``.
        """
        change = TRANSITIONS.get((self.state, event))
        if change is None:
            return  # nothing to do in this state
        self.state, action = change
        if action is not None:
            getattr(self, action)(detail)
        self.bridge.publish_state(self.state.value, self.delay)

    def start(self) -> None:
        """Make the first connection attempt (nothing if already started or closed)."""
        if self.state is LinkState.IDLE and self.connector is None:
            self.handle(LinkEvent.CONNECT)

    def connect_now(self) -> None:
        """Get a connection as soon as possible, skipping any backoff wait.

        A connection that was dropped is replaced once it is gone, so the old
        and new connections never overlap (single-client devices would
        refuse the new one).
        """
        self.handle(LinkEvent.CONNECT)

    def drop(self, generation: Generation, why: str) -> None:
        """Abort connection ``generation`` (if still current) and make a new one once it is gone."""
        if generation == self.generation and self.current is not None:
            self.handle(LinkEvent.DROP, why)

    def rest(self, why: str) -> None:
        """Abort the connection and stay idle until someone needs the device (``comm.close()``)."""
        self.handle(LinkEvent.REST, why)

    def resume_reading(self, generation: Generation) -> None:
        """Read connection ``generation`` again: callers drained its input (see ``input_limit``)."""
        if generation == self.generation and self.state is LinkState.CONNECTED:
            self.current.resume_reading()

    def close(self) -> Deferred:
        """Stop for good: no more attempts, the connection aborted, every waiter failed.

        Returns
        -------
        Deferred
            Fires once the connection is gone.
        """
        if self.state is not LinkState.CLOSED:
            self.handle(LinkEvent.CLOSE, 'closed')
            self._release_everyone(NotConnected(f'connection to {self.address} closed'))
        return self._when_gone()

    # -- actions (named in the transition table) -------------------------------

    def _attempt(self, _: object) -> None:
        if self._shutdown_trigger is None:
            self._shutdown_trigger = self.reactor.addSystemEventTrigger(
                'before', 'shutdown', self._reactor_stopping)
        host = self._host_to_connect()
        if self.connector is None:
            self.connector = connect_tcp(self.reactor, host, self.port, self, self.connect_timeout)
        else:
            self.connector.host = host
            self.connector.connect()
        self.connector.host = self.host  # later attempts look the name up again (a device may move)

    def _attempt_now(self, _: object) -> None:
        self._cancel_retry(None)
        self._attempt(None)

    def _retry_later(self, reason: Failure) -> None:
        # ReconnectingClientFactory waits self.delay, then grows it by factor
        # (capped). Its own jitter is off (Backoff.apply_to): it can draw a
        # negative delay, which callLater refuses, leaving no retry at all.
        # This one spreads the wait but never the growth, and stays > 0.
        delay = self.delay
        self.delay = self.backoff.spread(delay)
        self.retry(self.connector)
        self.delay = min(delay * self.factor, self.maxDelay)

    def _cancel_retry(self, _: object) -> None:
        # stopTrying cancels the scheduled retry (and stops an attempt under
        # way, whose failure then changes nothing); trying goes on later.
        self.stopTrying()
        self.continueTrying = True

    def _adopt(self, proto: DeviceProtocol) -> None:
        self.resetDelay()
        self.generation += 1
        proto.generation = self.generation
        self.current = proto
        self.stats.connects += 1
        self.stats.last_connect_time = self.reactor.seconds()
        self.bridge.connection_up(self.generation, proto.transport.getHandle(), proto.transport)
        self.log.info('{address}: connected', address=self.address)
        self._outage_logged = False
        waiters, self._waiters = self._waiters, []
        for d, _ in waiters:
            d.callback(proto)

    def _abort(self, why: str) -> None:
        error = DeviceDisconnected(f'connection to {self.address} dropped: {why}')
        self.bridge.connection_down(self.generation, error)
        self.log.info('{address}: dropping the connection ({reason})', address=self.address, reason=why)
        self.current.transport.abortConnection()

    def _refuse(self, proto: DeviceProtocol) -> None:
        proto.transport.abortConnection()

    # -- from DeviceProtocol and the connector ----------------------------------

    def connection_made(self, proto: DeviceProtocol) -> None:
        self.handle(LinkEvent.MADE, proto)

    def input_received(self, proto: DeviceProtocol, data: bytes) -> None:
        full = self.bridge.feed(proto.generation, data)
        if self.trace:
            self.log.debug('{address} < {data!r}', address=self.address, data=data)
        if full:
            self.stats.input_pauses += 1
            proto.pause_reading()

    def startedConnecting(self, connector) -> None:
        self.handle(LinkEvent.STARTED)

    def clientConnectionFailed(self, connector, reason: Failure) -> None:
        if self.state is not LinkState.CONNECTING:
            return  # an attempt we stopped ourselves (comm.close(), close()): not a failure
        cause = reason.getErrorMessage()
        self.stats.connect_failures += 1
        self.stats.record_error(f'cannot connect: {cause}')
        error = NotConnected(f'cannot connect to {self.address}: {cause}')
        self.bridge.attempt_failed(error)
        if not self._outage_logged:
            self._outage_logged = True  # once per outage: dead devices must not flood the log
            self.log.warn('{address}: cannot connect ({reason}); retrying in the background',
                          address=self.address, reason=cause)
        self._fail_waiters(error)
        self.handle(LinkEvent.FAILED, reason)

    def clientConnectionLost(self, connector, reason: Failure) -> None:
        proto, self.current = self.current, None
        if proto is not None:
            cause = reason.getErrorMessage()
            self.stats.disconnects += 1
            self.stats.record_error(f'connection lost: {cause}')
            self.bridge.connection_down(proto.generation, DeviceDisconnected(
                f'connection to {self.address} lost: {cause}'))
            if self.state is LinkState.CONNECTED:  # not one we dropped: say why it ended
                self.log.info('{address}: connection lost ({reason})', address=self.address, reason=cause)
        gone, self._gone = self._gone, []
        self.handle(LinkEvent.LOST, reason)
        for d in gone:
            d.callback(None)

    # -- Deferred API for reactor-side code ---------------------------------

    def whenConnected(self, timeout: float | None = None,
                      failAfterFailures: int | None = None) -> Deferred:
        """Return a Deferred that fires with a connected ``DeviceProtocol``.

        Parameters
        ----------
        timeout : float, optional
            Give up after this many seconds (``DeviceTimeout``).
        failAfterFailures : int, optional
            Give up after this many failed attempts (``NotConnected``); None
            waits through failures, retrying.
        """
        if self.state is LinkState.CONNECTED:
            return defer.succeed(self.current)
        if self.state is LinkState.CLOSED:
            return defer.fail(NotConnected(f'connection to {self.address} closed'))
        if self.state is LinkState.IDLE:
            self.connect_now()

        def cancel(d: Deferred) -> None:
            self._waiters[:] = [(w, n) for w, n in self._waiters if w is not d]
        d = Deferred(cancel)
        fail_at = None if failAfterFailures is None else self.stats.connect_failures + failAfterFailures
        self._waiters.append((d, fail_at))
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
        frame = reply_frame(terminator, size, self.max_frame_length)
        d = self._query_lock.run(self._query, bytes(data), frame)
        d.addTimeout(timeout, self.reactor)
        return d.addErrback(self._timeout_as, f'no reply from {self.address} within {timeout} s')

    def _query(self, data: bytes, frame: Frame) -> Deferred:
        self.connect_now()
        d = self.whenConnected(failAfterFailures=1)
        return d.addCallback(self._query_on, data, frame)

    def _query_on(self, proto: DeviceProtocol, data: bytes, frame: Frame) -> Deferred:
        self.bridge.clear()
        # In the reactor thread the transport buffers what the kernel does not
        # take yet: the message goes out whole (or the connection goes).
        proto.transport.write(data)
        self.stats.record_out(len(data))
        tap.notify_sent(self.address, data)
        d = self.bridge.when_frame(frame)

        def on_cancel(f: Failure) -> Failure:
            f.trap(defer.CancelledError)
            self.stats.count_timeout()
            self.drop(proto.generation, 'no reply within the timeout')
            return f
        d.addErrback(on_cancel)
        d.addCallback(self._count_query)
        return d

    def _count_query(self, reply: bytes) -> bytes:
        self.stats.count_query()
        return reply

    @staticmethod
    def _timeout_as(f: Failure, message: str):
        f.trap(defer.TimeoutError)
        raise DeviceTimeout(message)

    # -- internals -------------------------------------------------------------

    def _host_to_connect(self) -> str:
        """The host for this attempt: a name looked up now if the reactor does not run yet.

        Twisted resolves names in the reactor's thread pool, which starts only
        when the reactor runs: a caller turning the reactor before that (a
        driver talking to its device in an agent's ``__init__``) would wait
        for a lookup that never ends. That caller blocks anyway, so the name
        is looked up here; one that does not resolve is left to Twisted.
        """
        if self.reactor.running or isIPAddress(self.host):
            return self.host
        try:
            return socket.gethostbyname(self.host)
        except OSError:
            return self.host

    def _when_gone(self) -> Deferred:
        """A Deferred that fires once there is no connection (at once if there is none)."""
        if self.current is None:
            return defer.succeed(None)
        d = Deferred()
        self._gone.append(d)
        return d

    def _release_everyone(self, error: NotConnected) -> None:
        """The link is closed: every wait, in any thread, ends with ``error``."""
        self.bridge.close(error)
        self._fail_waiters(error, everyone=True)
        if self._shutdown_trigger is not None:
            self.reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None

    def _fail_waiters(self, error: ConnectionError, everyone: bool = False) -> None:
        keep = []
        for d, fail_at in self._waiters:
            if everyone or (fail_at is not None and self.stats.connect_failures >= fail_at):
                d.errback(error)
            else:
                keep.append((d, fail_at))
        self._waiters = keep

    def _reactor_stopping(self) -> None:
        """Release every caller: nothing will be answered once the reactor stops."""
        self._shutdown_trigger = None
        self.handle(LinkEvent.CLOSE, 'the reactor is stopping')
        self._release_everyone(NotConnected(f'connection to {self.address} ended: the reactor is stopping'))
