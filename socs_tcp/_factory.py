"""DeviceClientFactory: keeps one device connected, in the reactor."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer
from twisted.internet.abstract import isIPAddress
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.protocol import ReconnectingClientFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from socs_tcp import _tap as tap
from socs_tcp._backoff import FIRST_SPREAD, Backoff
from socs_tcp._bridge import Bridge, Generation
from socs_tcp._errors import DeviceTimeout, NotConnected
from socs_tcp._framing import DEFAULT_MAX_LENGTH, Frame, reply_frame
from socs_tcp._owned_transport import connect_tcp
from socs_tcp._protocol import DeviceProtocol
from socs_tcp._retry import Retry, RetryTimer, retry_timer
from socs_tcp._state import TRANSITIONS, CloseRequest, Connected, Idle, LinkEvent, LinkState, State

#: Default for ``input_limit``: far above any reply of a lab device, small
#: enough that a thousand links that nobody reads stay within a few hundred MB.
DEFAULT_INPUT_LIMIT = 256 * 1024
#: Seconds a stopping reactor waits for a link's aborted connection to be lost.
SHUTDOWN_WAIT = 1.0


class DeviceClientFactory(ReconnectingClientFactory):
    """Keeps a connection to one device, reconnecting in the background.

    The link's state changes only in the reactor thread and only in
    ``handle``, by the transition table of `socs_tcp._state`, whose actions
    hold every effect of a transition; the Twisted callbacks below only turn
    what happened into an event. Retries follow a ``Backoff`` (capped, with
    jitter, reset on every success), set as this factory's own
    ``initialDelay``/``factor``/``maxDelay``/``jitter``; ``retry`` schedules
    them on the reactor's one `socs_tcp._retry.RetryTimer`. A caller that
    needs the device now sends ``CONNECT`` (``connect_now``), which skips the
    pending wait, so recovery takes one connect, not the rest of a backoff.
    What worker threads may see of the link is in ``bridge``.

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
    connector: Any = None  # the IConnector of every attempt, from the first one on

    def __init__(self, host: str, port: int, *, connect_timeout: float = 10.0,
                 backoff: Backoff | None = None, input_limit: int = DEFAULT_INPUT_LIMIT,
                 max_frame_length: int = DEFAULT_MAX_LENGTH, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.reactor = reactor
        self.backoff = backoff or Backoff()
        self.backoff.apply_to(self)
        self.trace = False
        self.max_frame_length = max_frame_length
        self.bridge = Bridge(reactor, self, input_limit)
        self.stats = self.bridge.stats  # the counters both threads write are under its lock
        self._state: State = Idle()
        self._queue: list[tuple[LinkEvent, object]] | None = None  # while an action runs: events to apply next
        self.generation: Generation = 0   # connections made so far; the current one's number
        self._outage_logged = False
        self._waiters: list[tuple[Deferred, int | None]] = []  # whenConnected: (Deferred, fail at failures)
        self._query_lock = DeferredLock()
        self._shutdown_trigger: Any = None

    @property
    def address(self) -> str:
        return f'{self.host}:{self.port}'

    @property
    def retry_timer(self) -> RetryTimer:
        """The reactor's one timer for the retries of all its links."""
        return retry_timer(self.reactor)

    @property
    def state(self) -> LinkState:
        """The name of the link's state."""
        return self._state.name

    @property
    def current(self) -> DeviceProtocol | None:
        """The connection's protocol while connected, else None."""
        return self._state.protocol if isinstance(self._state, Connected) else None

    # -- the state machine ---------------------------------------------------

    def handle(self, event: LinkEvent, detail: object = None) -> None:
        """Apply ``event``: run the action the table names for it in this state, with ``detail``.

        ``detail`` is what the action needs (see ``LinkEvent``). An event
        that arrives while an action runs (a callback it fires, say, calls
        back) is applied once that action is done, so every action starts
        from the state the table names.
        """
        if self._queue is not None:
            self._queue.append((event, detail))
            return
        self._queue = queue = [(event, detail)]
        try:
            while queue:
                event, detail = queue.pop(0)
                change = TRANSITIONS.get((self._state.name, event))
                if change is None:
                    continue  # nothing to do in this state
                name, action = change
                self._enter(action(self, self._state, detail))
                assert self._state.name is name, (event, name, self._state)
        finally:
            self._queue = None

    def _enter(self, state: State) -> State:
        """Make ``state`` the link's state (actions call this before their other effects)."""
        if state is not self._state:
            self._state = state
            self.bridge.publish_state(state.name.value, self.delay)
        return state

    def start(self) -> None:
        """Make the first connection attempt (nothing if already started or closed)."""
        if self.state is LinkState.IDLE and self.connector is None:
            self.handle(LinkEvent.CONNECT)

    def connect_now(self) -> None:
        """Get a connection as soon as possible, skipping any backoff wait.

        A connection being aborted is replaced once it is lost, so the old
        and new connections never overlap (single-client devices would
        refuse the new one).
        """
        self.handle(LinkEvent.CONNECT)

    def reconnect(self, generation: Generation, why: str) -> None:
        """Abort connection ``generation`` (if still current) and make a new one once it is lost."""
        protocol = self.current
        if protocol is not None and protocol.generation == generation:
            self.handle(LinkEvent.RECONNECT, why)

    def release(self, why: str) -> None:
        """Abort the connection and stay idle until someone needs the device (``comm.close()``)."""
        self.handle(LinkEvent.RELEASE, why)

    def resume_reading(self, generation: Generation) -> None:
        """Read connection ``generation`` again: callers drained its input (see ``input_limit``)."""
        protocol = self.current
        if protocol is not None and protocol.generation == generation:
            protocol.resume_reading()

    def close(self) -> Deferred:
        """Close for good: no more attempts, the connection aborted, every waiter failed.

        Returns
        -------
        Deferred
            Fires once the connection is lost.
        """
        done: Deferred = Deferred()
        self.handle(LinkEvent.CLOSE, CloseRequest('closed', done))
        return done

    # -- what the actions use --------------------------------------------------

    def _dial(self) -> None:
        """Start one connection attempt."""
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

    def retry(self, connector: object = None, *, after_loss: bool = False) -> Retry:
        """Schedule the next attempt (``RETRY``) after the backoff's delay; grow the delay.

        Overrides ``ReconnectingClientFactory.retry``, with the same fields
        (``delay``, ``factor``, ``maxDelay``, ``jitter``, ``retries``): the
        wait is spread uniformly (``Backoff.wait``) and scheduled on the
        shared ``RetryTimer``, not on a reactor timer of this link's own.
        ``after_loss``: the first retry after a lost connection, spread wider.
        """
        jitter = max(self.jitter, FIRST_SPREAD) if after_loss else self.jitter
        wait = Backoff.wait(self.delay, jitter)
        self.retries += 1
        self.delay = min(self.delay * self.factor, self.maxDelay)
        return self.retry_timer.schedule(wait, self._retry_due)

    def _retry_due(self) -> None:
        self.handle(LinkEvent.RETRY)

    def _fail_waiters(self, error: ConnectionError, everyone: bool = False) -> None:
        """Fail the ``whenConnected`` callers that wait for no more failures (or ``everyone``)."""
        keep = []
        fail = []
        for d, fail_at in self._waiters:
            if everyone or (fail_at is not None and self.stats.connect_failures >= fail_at):
                fail.append(d)
            else:
                keep.append((d, fail_at))
        self._waiters = keep
        for d in fail:
            if not d.called:  # cancelled by the callback of one failed before it
                d.errback(error)

    def _release_everyone(self, error: NotConnected) -> None:
        """The link is closed: every wait, in any thread, ends with ``error``."""
        self.bridge.close(error)
        self._fail_waiters(error, everyone=True)

    def _unwatch_shutdown(self) -> None:
        """Closed, no connection left: the reactor's shutdown has nothing to wait for here."""
        if self._shutdown_trigger is not None:
            self.reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None

    # -- from DeviceProtocol and the connector: each an event, nothing else --------

    def connection_made(self, protocol: DeviceProtocol) -> None:
        self.handle(LinkEvent.MADE, protocol)

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        self.handle(LinkEvent.FAILED, reason)

    def clientConnectionLost(self, connector: object, reason: Failure) -> None:
        self.handle(LinkEvent.LOST, reason)

    def input_received(self, protocol: DeviceProtocol, data: bytes) -> None:
        full = self.bridge.feed(protocol.generation, data)  # counts it (or its drop)
        if self.trace:
            self.log.debug('{address} < {data!r}', address=self.address, data=data)
        if full:
            self.stats.input_pauses += 1
            protocol.pause_reading()

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
        if isinstance(self._state, Connected):
            return defer.succeed(self._state.protocol)
        if self.state in (LinkState.CLOSING, LinkState.CLOSED):
            return defer.fail(NotConnected(f'connection to {self.address} closed'))
        if self.state in (LinkState.IDLE, LinkState.RELEASING):  # nothing would connect otherwise
            self.connect_now()

        def cancel(d: Deferred) -> None:
            self._waiters[:] = [(w, n) for w, n in self._waiters if w is not d]
        d: Deferred = Deferred(cancel)
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
        missing connection is made at once. On a timeout the link
        reconnects, so the late reply is never mistaken for another one.
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
        tap.notify_sent(self.address, data)
        proto.write(data)
        self.stats.record_out(len(data))
        d = self.bridge.when_frame(frame)

        def on_cancel(f: Failure) -> Failure:
            f.trap(defer.CancelledError)
            self.stats.count_timeout()
            self.reconnect(proto.generation, 'no reply within the timeout')
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

    def _reactor_stopping(self) -> Deferred:
        """Close, releasing every caller: nothing will be answered once the reactor stops.

        The shutdown waits for the returned Deferred (a ``before`` trigger
        may return one), at most ``SHUTDOWN_WAIT`` seconds: an aborted
        connection is lost, and its socket closed, only on the reactor's next
        iteration, which would never come.
        """
        self._shutdown_trigger = None
        done: Deferred = Deferred()
        self.handle(LinkEvent.CLOSE, CloseRequest('ended: the reactor is stopping', done))
        return done.addTimeout(SHUTDOWN_WAIT, self.reactor).addErrback(lambda _: None)
