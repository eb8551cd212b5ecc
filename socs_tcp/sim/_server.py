"""A simulated TCP device for tests, sample agents, the demo and benchmarks.

`DeviceServer` listens on 127.0.0.1, answers each request through a handler
(a callable or a dict), and injects the faults real lab devices show: going
away and coming back on the same port, dropping connections, slow, silent or
fragmented replies, unsolicited output, line noise, one-client limits, and
vanishing from the network (new connections hang).

All of it runs in the Twisted reactor, and its methods are the reactor API:
call them in the reactor thread (or before the reactor runs). What finishes
later returns a Deferred (`start`, `stop`, `stop_listening`,
`drop_connections`, `set_blackhole`, `when_connections`, `when_requests`);
the rest takes effect at once and returns None. The state properties are
plain reads, safe from any thread. Other threads use `DeviceServer.blocking`,
the same methods that wait for the outcome (see `socs_tcp.sim._blocking`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, ClassVar

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from socs_tcp import _arguments as arguments
from socs_tcp.sim._blackhole import Blackhole
from socs_tcp.sim._connection import DeviceConnection, DeviceServerFactory
from socs_tcp.sim._faults import Faults
from socs_tcp.sim._framing import Framer, TerminatorFramer

if TYPE_CHECKING:
    from socs_tcp.sim._blocking import BlockingDeviceServer

__all__ = ['DeviceConnection', 'DeviceServer', 'DeviceServerFactory', 'Handler', 'Reply']

Reply = bytes | str | None
Handler = Callable[[bytes], Reply] | Mapping

# Marks "argument not given" where None is a meaningful value.
_DEFAULT = object()

log = Logger(namespace='socs_tcp.sim')


def _count_or_none(value: object, name: str) -> int | None:
    return None if value is None else arguments.count(value, name)


def _table_handler(table: Mapping) -> Callable[[bytes], Reply]:
    """Turn ``{request: reply}`` into a handler; unknown requests get no reply."""
    normalized = {}
    for key, value in table.items():
        normalized[arguments.as_bytes(key, 'handler key')] = arguments.as_bytes(
            value, f'handler[{key!r}]', allow_none=True)
    return normalized.get


class DeviceServer:
    """A simulated request/response device on a TCP port, with faults.

    Parameters
    ----------
    handler : callable or dict
        ``handler(request: bytes) -> bytes | str | None`` or a dict
        ``{request: reply}`` (bytes or str keys and values). A None reply (or
        a request missing from the dict) sends nothing. A handler that raises
        is logged and sends nothing; the connection stays up.
    terminator : bytes or str
        Ends each request; removed before the handler sees it. Ignored when
        ``framer`` is given.
    reply_terminator : bytes, str or None
        Appended to every reply. Defaults to ``terminator``, or to None
        (append nothing) when ``framer`` is given.
    framer : callable, optional
        ``framer(buf: bytearray) -> bytes | None`` removing one complete
        request from ``buf`` (see `socs_tcp.sim._framing`, e.g. `mbap_framer`).
        A framer that raises drops that connection.
    host : str
        Interface to listen on (loopback by default).
    port : int
        Port to listen on; 0 picks a free one at the first start, which every
        later start reuses.
    max_connections : int, optional
        Connections beyond this many open ones are refused.
    greeting : bytes or str, optional
        Sent to each client as soon as it connects (a prompt or banner).
    max_recorded : int, optional
        Keep only the last this many requests in `requests` (0: none), so a
        long-running server doesn't grow; `request_count` still counts all.
        None (default) keeps every request.
    reactor : IReactorTCP and IReactorTime, optional
        Reactor to use; the global one by default. Tests may pass
        ``twisted.internet.testing.MemoryReactorClock``.

    Raises
    ------
    TypeError, ValueError
        For a bad argument, naming it.

    Attributes
    ----------
    command_set : tuple of (str, str)
        What the simulated device understands, for people: pairs of an
        example request and what it does, one line each. A subclass that
        simulates a device lists its commands here; ``socs-tcp simulate
        --help`` shows them.
    """

    command_set: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, handler: Handler, *, terminator: bytes | str = b'\n',
                 reply_terminator=_DEFAULT, framer: Framer | None = None,
                 host: str = '127.0.0.1', port: int = 0,
                 max_connections: int | None = None,
                 greeting: bytes | str | None = None,
                 max_recorded: int | None = None, reactor=None):
        if isinstance(handler, Mapping):
            self._handler = _table_handler(handler)
        elif callable(handler):
            self._handler = handler
        else:
            raise TypeError(f'handler must be callable or a dict, got {type(handler).__name__}')
        if framer is not None:
            if not callable(framer):
                raise TypeError(f'framer must be callable, got {type(framer).__name__}')
            self._framer = framer
            self.terminator = None
        else:
            self.terminator = arguments.as_bytes(terminator, 'terminator')
            if not self.terminator:
                raise ValueError('terminator must not be empty (use framer for binary protocols)')
            self._framer = TerminatorFramer(self.terminator)
        if reply_terminator is _DEFAULT:
            reply_terminator = None if framer is not None else self.terminator
        self.reply_terminator = arguments.as_bytes(reply_terminator, 'reply_terminator',
                                                   allow_none=True)
        if not isinstance(host, str):
            raise TypeError(f'host must be str, got {type(host).__name__}')
        self.host = host
        self._port_number = arguments.port(port, allow_zero=True) or None
        self.max_connections = _count_or_none(max_connections, 'max_connections')
        self.greeting = arguments.as_bytes(greeting, 'greeting', allow_none=True)
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor

        self._factory = DeviceServerFactory(self)
        self._listening_port: IListeningPort | None = None   # while listening
        self._stopping: defer.Deferred | None = None   # old port still closing
        self._listen_after_stop = False
        self._blackhole: Blackhole | None = None
        self._connections: list[DeviceConnection] = []
        self.max_recorded = (None if max_recorded is None
                             else arguments.count(max_recorded, 'max_recorded', allow_zero=True))
        self._requests: deque = deque(maxlen=self.max_recorded)
        self._request_count = 0
        self._faults = Faults()
        self._connection_waiters: list = []  # (n, Deferred)
        self._request_waiters: list = []     # (n, Deferred)
        self._blocking: BlockingDeviceServer | None = None
        #: Connections refused because of ``max_connections``.
        self.rejected_count = 0

    def __repr__(self) -> str:
        return (f'<DeviceServer {self.host}:{self._port_number} listening={self.listening} '
                f'connections={self.connection_count}>')

    # -- state (plain reads, safe from any thread) ----------------------------
    @property
    def blocking(self) -> BlockingDeviceServer:
        """This server for other threads: a `~socs_tcp.sim._blocking.BlockingDeviceServer`."""
        if self._blocking is None:
            from socs_tcp.sim._blocking import BlockingDeviceServer
            self._blocking = BlockingDeviceServer(self)
        return self._blocking

    @property
    def reactor(self):
        """The reactor this server runs in."""
        return self._reactor

    @property
    def port(self) -> int | None:
        """The port number (None before the first start with ``port=0``)."""
        return self._port_number

    @property
    def factory(self) -> DeviceServerFactory:
        """The server's protocol factory, for in-memory connections in tests.

        E.g. ``conn = srv.factory.buildProtocol(None)`` then
        ``conn.makeConnection(StringTransport())``, or
        `twisted.test.iosim` to join it to a client protocol without sockets.
        Reactor thread only.
        """
        return self._factory

    @property
    def listening(self) -> bool:
        """True while new connections are accepted."""
        return self._listening_port is not None

    @property
    def blackholed(self) -> bool:
        """True while new connections hang (see `set_blackhole`)."""
        return self._blackhole is not None

    @property
    def connection_count(self) -> int:
        """Connections currently open (a dropped one counts until it's gone)."""
        return len(self._connections)

    @property
    def requests(self) -> list[bytes]:
        """A copy of the requests read so far, oldest first (framed, no terminator).

        Holds the last ``max_recorded`` only, if that was given.
        """
        return list(self._requests)

    @property
    def request_count(self) -> int:
        """How many requests were read (since start or `clear_requests`)."""
        return self._request_count

    @property
    def faults(self) -> Faults:
        """A copy of the current fault settings."""
        f = self._faults
        return Faults(f.delay, f.silent, f.fragment_size, f.fragment_interval,
                      f.garbage, f.drop_countdown)

    # -- listening ------------------------------------------------------------
    def start(self) -> defer.Deferred:
        """Start listening (again); the device is back (a blackhole is let go).

        The first start with ``port=0`` picks a free port; every later start
        uses that same port. Starting while listening does nothing.

        Returns
        -------
        Deferred
            Fires with the port once listening: at once, unless the port of
            a `stop_listening` whose Deferred hasn't fired is still closing
            (then later in this reactor turn). Fails with
            ``twisted.internet.error.CannotListenError`` if the port can't be
            bound (e.g. someone else took it meanwhile).
        """
        self._release_blackhole()
        return defer.maybeDeferred(self._start)

    def _start(self) -> defer.Deferred:
        if self._listening_port is not None:
            return defer.succeed(self._port_number)
        if self._stopping is not None:
            # Binding before the old socket is closed would fail (EADDRINUSE):
            # listen once it is, unless stop_listening() came again meanwhile.
            self._listen_after_stop = True

            def resume(_):
                if not self._listen_after_stop:
                    return self._port_number
                return self._start()

            return self._stopping_or_done().addCallback(resume)
        self._listen_after_stop = False
        listening = self._reactor.listenTCP(self._port_number or 0, self._factory,
                                            interface=self.host)
        self._listening_port = listening
        if self._port_number is None:
            self._port_number = listening.getHost().port
        log.debug('Device server listening on {host}:{port}', host=self.host,
                  port=self._port_number)
        return defer.succeed(self._port_number)

    def stop_listening(self) -> defer.Deferred:
        """Stop accepting connections (refused, also after a blackhole); open ones stay up.

        Clients connecting meanwhile are refused, like a device that is off
        or rebooting. Does nothing more if not listening.

        Returns
        -------
        Deferred
            Fires (with None) once the port is closed.
        """
        self._release_blackhole()
        return self._stop_listening()

    def _stop_listening(self) -> defer.Deferred:
        self._listen_after_stop = False
        if self._listening_port is None:
            return self._stopping_or_done()
        port, self._listening_port = self._listening_port, None
        d = defer.maybeDeferred(port.stopListening)
        self._stopping = d

        def done(result):
            if self._stopping is d:
                self._stopping = None
            return result

        d.addBoth(done)
        return self._stopping_or_done()

    def _stopping_or_done(self) -> defer.Deferred:
        if self._stopping is None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()

        def fire(result: object) -> object:
            d.callback(None)
            return result

        self._stopping.addBoth(fire)
        return d

    def stop(self) -> defer.Deferred:
        """Stop listening and drop every connection: the device is off.

        Returns
        -------
        Deferred
            Fires (with None) once the port is closed and every connection
            is gone. `start` may be called again afterwards.
        """
        self._release_blackhole()
        d = defer.gatherResults([self._stop_listening(), self._drop_connections()],
                                consumeErrors=True)
        return d.addCallback(lambda _: None)

    def set_blackhole(self, on: bool = True) -> defer.Deferred:
        """Vanish from the network (``on``), or come back (``on=False``).

        While on, the open connections are silent (requests read, never
        answered) and new connections hang until the client's own timeout
        (see `socs_tcp.sim._blackhole`). Off lets the port go, ends the
        silence and listens again. `start`, `stop` and `stop_listening` end
        a blackhole too.

        Returns
        -------
        Deferred
            Fires (with None) once in effect; fails with ``OSError`` if the
            port can't be held (or ``CannotListenError`` if it can't be
            listened on again).

        Raises
        ------
        ValueError
            If the server never listened (it has no port to hold yet).
        """
        if not on:
            self._faults.silent = False
            return self.start().addCallback(lambda _: None)
        port = self._port_number
        if port is None:
            raise ValueError('set_blackhole needs a port: start() the server first')
        self._faults.silent = True
        if self._blackhole is not None:
            return defer.succeed(None)

        def hold(_):
            # Unless start() or stop() came meanwhile, take the port ourselves.
            if self._listening_port is None and self._blackhole is None:
                self._blackhole = Blackhole(self.host, port)
                log.debug('Device server {port}: blackholed', port=port)

        return self._stop_listening().addCallback(hold)

    def _release_blackhole(self) -> None:
        if self._blackhole is not None:
            self._blackhole.close()
            self._blackhole = None

    # -- connections ----------------------------------------------------------
    def drop_connections(self) -> defer.Deferred:
        """Drop every open connection now (RST: the peer sees a reset).

        Queued replies are discarded. The server keeps listening.

        Returns
        -------
        Deferred
            Fires (with None) once those connections are gone.
        """
        return self._drop_connections()

    def _drop_connections(self) -> defer.Deferred:
        conns = list(self._connections)
        for conn in conns:
            conn.drop()
        d = defer.gatherResults([c.when_gone() for c in conns], consumeErrors=True)
        return d.addCallback(lambda _: None)

    def hangup(self) -> defer.Deferred:
        """Hang up every open connection now (FIN: the peer reads the end of the stream).

        Unlike `drop_connections` (a reset), this is how a device ends a
        connection on purpose. Queued replies are discarded. The server keeps
        listening.

        Returns
        -------
        Deferred
            Fires (with None) once those connections are gone.
        """
        conns = list(self._connections)
        for conn in conns:
            conn.hangup()
        d = defer.gatherResults([c.when_gone() for c in conns], consumeErrors=True)
        return d.addCallback(lambda _: None)

    def send_unsolicited(self, data: bytes | str) -> None:
        """Write ``data`` to every open connection now, outside any reply.

        Raises
        ------
        TypeError
            If ``data`` is not bytes or str.
        """
        payload = arguments.as_bytes(data, 'data')
        for conn in self._connections:
            conn.write_now(payload)

    def _has_free_slot(self) -> bool:
        # A connection being dropped or hung up has freed its slot already,
        # as a device that closed its socket has.
        if self.max_connections is None:
            return True
        return sum(not c.closing for c in self._connections) < self.max_connections

    def _connection_made(self, conn: DeviceConnection) -> None:
        self._connections.append(conn)
        log.debug('Device server: client connected ({n} open)', n=len(self._connections))
        if self.greeting:
            conn.write_now(self.greeting)
        self._notify_connections()

    def _connection_gone(self, conn: DeviceConnection) -> None:
        if conn in self._connections:
            self._connections.remove(conn)
        log.debug('Device server: client gone ({n} open)', n=len(self._connections))
        self._notify_connections()

    # -- requests -------------------------------------------------------------
    def clear_requests(self) -> None:
        """Forget the recorded requests (`when_requests` counts from zero again)."""
        self._requests.clear()
        self._request_count = 0

    def _request_received(self, conn: DeviceConnection, request: bytes) -> None:
        self._requests.append(request)
        self._request_count += 1
        try:
            self._handle(conn, request)
        finally:
            # Waiters run only now, so a test that changes faults as soon as
            # the request is seen never changes how this request is treated.
            self._notify_requests()

    def _handle(self, conn: DeviceConnection, request: bytes) -> None:
        faults = self._faults
        if faults.drop_countdown is not None:
            faults.drop_countdown -= 1
            if faults.drop_countdown <= 0:
                faults.drop_countdown = None
                log.debug('Device server: dropping the connection at request {r!r}', r=request)
                conn.drop()
                return
        if faults.silent:
            return
        try:
            answer = self._handler(request)
            if answer is None:
                return
            reply = arguments.as_bytes(answer, 'handler reply')
        except Exception:
            log.failure('Device server handler failed for request {request!r}', request=request)
            return
        if self.reply_terminator:
            reply += self.reply_terminator
        if faults.garbage:
            reply = faults.garbage + reply
            faults.garbage = b''
        conn.queue_reply(reply, faults)

    # -- faults ---------------------------------------------------------------
    def drop_after(self, n: int | None) -> None:
        """Drop a connection at the ``n``-th request read from now on.

        That request (on whichever connection) is read and recorded but not
        answered, then its connection is dropped. The fault then clears
        itself (one drop). ``None`` cancels a pending drop.

        Raises
        ------
        TypeError, ValueError
            If ``n`` is not None or an int >= 1.
        """
        self._faults.drop_countdown = _count_or_none(n, 'n')

    def set_delay(self, seconds: float) -> None:
        """Start each reply ``seconds`` after its request is read (0: at once).

        Replies still leave in request order. The reactor is never blocked.

        Raises
        ------
        TypeError, ValueError
            If ``seconds`` is not a finite number >= 0.
        """
        self._faults.delay = arguments.seconds(seconds, 'seconds', allow_zero=True)

    def set_silent(self, silent: bool = True) -> None:
        """While ``silent``, read and record requests but never answer them."""
        self._faults.silent = bool(silent)

    def set_fragments(self, size: int | None, interval: float = 0.0) -> None:
        """Write replies in chunks of ``size`` bytes, ``interval`` s apart.

        ``size=None`` writes replies whole again. Each chunk is a separate
        write (TCP_NODELAY is on) even with ``interval=0``.

        Raises
        ------
        TypeError, ValueError
            If ``size`` is not None or an int >= 1, or ``interval`` < 0.
        """
        size = _count_or_none(size, 'size')
        interval = arguments.seconds(interval, 'interval', allow_zero=True)
        self._faults.fragment_size = size
        self._faults.fragment_interval = interval

    def set_garbage(self, data: bytes | str) -> None:
        """Put ``data`` in front of the next reply sent (once; b'' cancels).

        Raises
        ------
        TypeError
            If ``data`` is not bytes or str.
        """
        self._faults.garbage = arguments.as_bytes(data, 'data')

    def reset_faults(self) -> None:
        """Turn every reply fault off (delay, silent, fragments, garbage, drop_after).

        Listening state (and a blackhole) and open connections are left as
        they are; replies already queued keep their timing.
        """
        self._faults = Faults()

    # -- waiting --------------------------------------------------------------
    def when_connections(self, n: int, timeout: float | None = None) -> defer.Deferred:
        """Wait until exactly ``n`` connections are open.

        Parameters
        ----------
        n : int
            Connection count to wait for (0 waits for every client to be gone).
        timeout : float, optional
            Give up after this many seconds.

        Returns
        -------
        Deferred
            Fires with ``n`` (at once if already so); fails with
            ``TimeoutError`` if ``timeout`` passes first.

        Raises
        ------
        TypeError, ValueError
            If ``n`` is not an int >= 0 or ``timeout`` not a number >= 0.
        """
        return self._when('connections', n, timeout)

    def when_requests(self, n: int, timeout: float | None = None) -> defer.Deferred:
        """Wait until at least ``n`` requests have been read (`request_count`).

        Returns
        -------
        Deferred
            Fires with a copy of `requests` (at once if already so); fails
            with ``TimeoutError`` if ``timeout`` passes first.

        Raises
        ------
        TypeError, ValueError
            If ``n`` is not an int >= 0 or ``timeout`` not a number >= 0.
        """
        return self._when('requests', n, timeout)

    def _when(self, what: str, n: int, timeout: float | None) -> defer.Deferred:
        n = arguments.count(n, 'n', allow_zero=True)
        if timeout is not None:
            timeout = arguments.seconds(timeout, 'timeout', allow_zero=True)
        d: defer.Deferred = defer.Deferred()
        if what == 'connections':
            self._connection_waiters.append((n, d))
            self._notify_connections()
        else:
            self._request_waiters.append((n, d))
            self._notify_requests()
        if timeout is not None and not d.called:
            def on_timeout(result, _timeout):
                if isinstance(result, Failure) and result.check(defer.TimeoutError):
                    return Failure(TimeoutError(
                        f'DeviceServer: no {n} {what} within {_timeout} s '
                        f'(connections={self.connection_count}, '
                        f'requests={self._request_count})'))
                return result

            d.addTimeout(timeout, self._reactor)
            d.addErrback(on_timeout, timeout)
        return d

    def _notify_connections(self) -> None:
        count = len(self._connections)
        self._fire(self._connection_waiters, lambda n: count == n, count)

    def _notify_requests(self) -> None:
        count = self._request_count
        self._fire(self._request_waiters, lambda n: count >= n, None)

    def _fire(self, waiters: list, ready, value) -> None:
        """Fire the waiters that are ``ready``; keep the rest in ``waiters``."""
        keep = []
        due = []
        for n, d in waiters:
            if d.called:         # timed out or cancelled meanwhile
                continue
            if ready(n):
                due.append(d)
            else:
                keep.append((n, d))
        waiters[:] = keep
        for d in due:
            d.callback(value if value is not None else list(self._requests))
