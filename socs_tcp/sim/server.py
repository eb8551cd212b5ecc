"""A simulated TCP device for tests, sample agents, the demo and benchmarks.

`DeviceServer` listens on 127.0.0.1, answers each request through a handler
(a callable or a dict), and injects the faults real lab devices show: going
away and coming back on the same port, dropping connections, slow, silent or
fragmented replies, unsolicited output, line noise, one-client limits.

All of it runs in the Twisted reactor. Every public method may be called from
any thread: in the reactor thread it acts at once; from another thread it hops
into the reactor with `blockingCallFromThread` and waits for the outcome
(methods that return a Deferred in the reactor thread return its result there).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Callable, Optional, Union

from twisted.internet import defer
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger
from twisted.python import threadable
from twisted.python.failure import Failure

from socs_tcp.sim.arguments import (as_bytes, non_negative_int, non_negative_seconds,
                                    positive_int_or_none)
from socs_tcp.sim.connection import DeviceConnection, DeviceServerFactory
from socs_tcp.sim.faults import Faults
from socs_tcp.sim.framing import Framer, TerminatorFramer

__all__ = ['DeviceConnection', 'DeviceServer', 'DeviceServerFactory', 'Handler', 'Reply']

Reply = Union[bytes, str, None]
Handler = Union[Callable[[bytes], Reply], Mapping]

# Marks "argument not given" where None is a meaningful value.
_DEFAULT = object()

log = Logger(namespace='socs_tcp.sim')


def _table_handler(table: Mapping) -> Callable[[bytes], Reply]:
    """Turn ``{request: reply}`` into a handler; unknown requests get no reply."""
    normalized = {}
    for key, value in table.items():
        normalized[as_bytes(key, 'handler key')] = as_bytes(value, f'handler[{key!r}]',
                                                             allow_none=True)
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
        request from ``buf`` (see `socs_tcp.sim.framing`, e.g. `mbap_framer`).
        A framer that raises drops that connection.
    host : str
        Interface to listen on (loopback by default).
    port : int
        Port to listen on; 0 picks a free one at the first start, which every
        later start reuses.
    max_connections : int, optional
        Connections beyond this many open ones are closed at once.
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
    """

    def __init__(self, handler: Handler, *, terminator: Union[bytes, str] = b'\n',
                 reply_terminator=_DEFAULT, framer: Optional[Framer] = None,
                 host: str = '127.0.0.1', port: int = 0,
                 max_connections: Optional[int] = None,
                 greeting: Union[bytes, str, None] = None,
                 max_recorded: Optional[int] = None, reactor=None):
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
            self.terminator = as_bytes(terminator, 'terminator')
            if not self.terminator:
                raise ValueError('terminator must not be empty (use framer for binary protocols)')
            self._framer = TerminatorFramer(self.terminator)
        if reply_terminator is _DEFAULT:
            reply_terminator = None if framer is not None else self.terminator
        self.reply_terminator = as_bytes(reply_terminator, 'reply_terminator', allow_none=True)
        if not isinstance(host, str):
            raise TypeError(f'host must be str, got {type(host).__name__}')
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f'port must be int, got {type(port).__name__}')
        if not 0 <= port <= 65535:
            raise ValueError(f'port must be in 0..65535, got {port}')
        self.host = host
        self._port_number = port or None
        self.max_connections = positive_int_or_none(max_connections, 'max_connections')
        self.greeting = as_bytes(greeting, 'greeting', allow_none=True)
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor

        self._factory = DeviceServerFactory(self)
        self._listening_port = None          # IListeningPort while listening
        self._stopping: Optional[defer.Deferred] = None   # old port still closing
        self._listen_after_stop = False
        self._connections: list[DeviceConnection] = []
        self.max_recorded = (None if max_recorded is None
                             else non_negative_int(max_recorded, 'max_recorded'))
        self._requests: deque = deque(maxlen=self.max_recorded)
        self._request_count = 0
        self._faults = Faults()
        self._connection_waiters: list = []  # (n, Deferred)
        self._request_waiters: list = []     # (n, Deferred)
        #: Connections refused because of ``max_connections``.
        self.rejected_count = 0

    def __repr__(self) -> str:
        return (f'<DeviceServer {self.host}:{self._port_number} listening={self.listening} '
                f'connections={self.connection_count}>')

    # -- thread hopping -------------------------------------------------------
    def _in_reactor(self) -> bool:
        # A reactor that isn't running (not yet started, or a MemoryReactor)
        # has no thread to hop into: act directly.
        return not getattr(self._reactor, 'running', False) or threadable.isInIOThread()

    def _call(self, f, *args):
        if self._in_reactor():
            return f(*args)
        return blockingCallFromThread(self._reactor, f, *args)

    # -- state (plain reads, safe from any thread) ----------------------------
    @property
    def port(self) -> Optional[int]:
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
    def connection_count(self) -> int:
        """Connections currently open (an aborted one counts until it's gone)."""
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
    def start(self) -> int:
        """Start listening (again) and return the port.

        The first start with ``port=0`` picks a free port; every later start
        uses that same port. Starting while listening does nothing.

        Returns
        -------
        int
            The port. From another thread, the server listens when this
            returns. In the reactor thread right after `stop_listening`
            (whose Deferred hasn't fired yet), listening resumes once the old
            port has closed, later in this reactor turn.

        Raises
        ------
        twisted.internet.error.CannotListenError
            If the port can't be bound (e.g. someone else took it meanwhile).
        """
        if not self._in_reactor():
            return blockingCallFromThread(self._reactor, self._start)
        d = self._start()
        result = []
        d.addBoth(result.append)
        if not result:
            return self._port_number
        if isinstance(result[0], Failure):
            result[0].raiseException()
        return result[0]

    def start_listening(self) -> int:
        """Same as `start` (resume accepting connections after `stop_listening`)."""
        return self.start()

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
        self._listening_port = self._reactor.listenTCP(
            self._port_number or 0, self._factory, interface=self.host)
        if self._port_number is None:
            self._port_number = self._listening_port.getHost().port
        log.debug('Device server listening on {host}:{port}', host=self.host,
                  port=self._port_number)
        return defer.succeed(self._port_number)

    def stop_listening(self) -> Optional[defer.Deferred]:
        """Stop accepting connections; open connections stay up.

        Clients connecting meanwhile are refused, like a device that is off
        or rebooting. Does nothing if not listening.

        Returns
        -------
        Deferred or None
            In the reactor thread, a Deferred that fires once the port is
            closed; from another thread, returns once it is.
        """
        return self._call(self._stop_listening)

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
        d = defer.Deferred()
        self._stopping.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    def stop(self) -> Optional[defer.Deferred]:
        """Stop listening and abort every connection.

        Returns
        -------
        Deferred or None
            In the reactor thread, a Deferred that fires once the port is
            closed and every connection is gone; from another thread, returns
            once that is so. `start` may be called again afterwards.
        """
        return self._call(self._stop)

    def _stop(self) -> defer.Deferred:
        d = defer.gatherResults([self._stop_listening(), self._drop_connections()],
                                consumeErrors=True)
        return d.addCallback(lambda _: None)

    # -- connections ----------------------------------------------------------
    def drop_connections(self) -> Optional[defer.Deferred]:
        """Abort every open connection now (the peer sees a reset).

        Queued replies are discarded. The server keeps listening.

        Returns
        -------
        Deferred or None
            In the reactor thread, a Deferred that fires once those
            connections are gone; from another thread, returns once they are.
        """
        return self._call(self._drop_connections)

    def _drop_connections(self) -> defer.Deferred:
        conns = list(self._connections)
        for conn in conns:
            conn.abort()
        d = defer.gatherResults([c.when_lost() for c in conns], consumeErrors=True)
        return d.addCallback(lambda _: None)

    def hang_up(self) -> Optional[defer.Deferred]:
        """Close every open connection cleanly (FIN) now, as a device that hangs up.

        Unlike `drop_connections` (a reset), the peer reads the end of the
        stream. Queued replies are discarded. The server keeps listening.

        Returns
        -------
        Deferred or None
            In the reactor thread, a Deferred that fires once those
            connections are gone; from another thread, returns once they are.
        """
        return self._call(self._hang_up)

    def _hang_up(self) -> defer.Deferred:
        conns = list(self._connections)
        for conn in conns:
            conn.hang_up()
        d = defer.gatherResults([c.when_lost() for c in conns], consumeErrors=True)
        return d.addCallback(lambda _: None)

    def send_unsolicited(self, data: Union[bytes, str]) -> None:
        """Write ``data`` to every open connection now, outside any reply.

        Raises
        ------
        TypeError
            If ``data`` is not bytes or str.
        """
        data = as_bytes(data, 'data')
        self._call(self._send_unsolicited, data)

    def _send_unsolicited(self, data: bytes) -> None:
        for conn in self._connections:
            conn.write_now(data)

    def _has_free_slot(self) -> bool:
        # A connection being aborted has freed its slot already, as a device
        # that closed its socket has.
        if self.max_connections is None:
            return True
        return sum(not c.closing for c in self._connections) < self.max_connections

    def _connection_made(self, conn: DeviceConnection) -> None:
        self._connections.append(conn)
        log.debug('Device server: client connected ({n} open)', n=len(self._connections))
        if self.greeting:
            conn.write_now(self.greeting)
        self._notify_connections()

    def _connection_lost(self, conn: DeviceConnection) -> None:
        if conn in self._connections:
            self._connections.remove(conn)
        log.debug('Device server: client gone ({n} open)', n=len(self._connections))
        self._notify_connections()

    # -- requests -------------------------------------------------------------
    def clear_requests(self) -> None:
        """Forget the recorded requests (`when_requests` counts from zero again)."""
        self._call(self._clear_requests)

    def _clear_requests(self) -> None:
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
                conn.abort()
                return
        if faults.silent:
            return
        try:
            reply = self._handler(request)
            if reply is None:
                return
            reply = as_bytes(reply, 'handler reply')
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
    def drop_after(self, n: Optional[int]) -> None:
        """Abort a connection at the ``n``-th request read from now on.

        That request (on whichever connection) is read and recorded but not
        answered, then its connection is aborted. The fault then clears
        itself (one drop). ``None`` cancels a pending drop.

        Raises
        ------
        TypeError, ValueError
            If ``n`` is not None or an int >= 1.
        """
        n = positive_int_or_none(n, 'n')
        self._call(setattr, self._faults, 'drop_countdown', n)

    def set_delay(self, seconds: float) -> None:
        """Start each reply ``seconds`` after its request is read (0: at once).

        Replies still leave in request order. The reactor is never blocked.

        Raises
        ------
        TypeError, ValueError
            If ``seconds`` is not a finite number >= 0.
        """
        seconds = non_negative_seconds(seconds, 'seconds')
        self._call(setattr, self._faults, 'delay', seconds)

    def set_silent(self, silent: bool = True) -> None:
        """While ``silent``, read and record requests but never answer them."""
        self._call(setattr, self._faults, 'silent', bool(silent))

    def set_fragments(self, size: Optional[int], interval: float = 0.0) -> None:
        """Write replies in chunks of ``size`` bytes, ``interval`` s apart.

        ``size=None`` writes replies whole again. Each chunk is a separate
        write (TCP_NODELAY is on) even with ``interval=0``.

        Raises
        ------
        TypeError, ValueError
            If ``size`` is not None or an int >= 1, or ``interval`` < 0.
        """
        size = positive_int_or_none(size, 'size')
        interval = non_negative_seconds(interval, 'interval')

        def apply():
            self._faults.fragment_size = size
            self._faults.fragment_interval = interval

        self._call(apply)

    def set_garbage(self, data: Union[bytes, str]) -> None:
        """Put ``data`` in front of the next reply sent (once; b'' cancels).

        Raises
        ------
        TypeError
            If ``data`` is not bytes or str.
        """
        data = as_bytes(data, 'data')
        self._call(setattr, self._faults, 'garbage', data)

    def reset_faults(self) -> None:
        """Turn every reply fault off (delay, silent, fragments, garbage, drop_after).

        Listening state and open connections are left as they are; replies
        already queued keep their timing.
        """
        self._call(setattr, self, '_faults', Faults())

    # -- waiting --------------------------------------------------------------
    def when_connections(self, n: int, timeout: Optional[float] = None):
        """Wait until exactly ``n`` connections are open.

        Parameters
        ----------
        n : int
            Connection count to wait for (0 waits for every client to be gone).
        timeout : float, optional
            Give up after this many seconds.

        Returns
        -------
        Deferred or int
            In the reactor thread, a Deferred firing with ``n`` (at once if
            already so); from another thread, returns ``n`` once so.

        Raises
        ------
        TimeoutError
            (or the Deferred fails with it) if ``timeout`` passes first.
        """
        n = non_negative_int(n, 'n')
        timeout = None if timeout is None else non_negative_seconds(timeout, 'timeout')
        return self._call(self._when, 'connections', n, timeout)

    def when_requests(self, n: int, timeout: Optional[float] = None):
        """Wait until at least ``n`` requests have been read (`request_count`).

        Returns
        -------
        Deferred or list of bytes
            In the reactor thread, a Deferred firing with a copy of
            `requests` (at once if already so); from another thread, returns
            that list once so.

        Raises
        ------
        TimeoutError
            (or the Deferred fails with it) if ``timeout`` passes first.
        """
        n = non_negative_int(n, 'n')
        timeout = None if timeout is None else non_negative_seconds(timeout, 'timeout')
        return self._call(self._when, 'requests', n, timeout)

    def _when(self, what: str, n: int, timeout: Optional[float]):
        d = defer.Deferred()
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
