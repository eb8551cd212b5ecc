"""TCPInterface: the blocking adapter that OCS worker threads call."""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from twisted.logger import Logger

from socs_tcp import reactor_thread
from socs_tcp.backoff import Backoff
from socs_tcp.comm import CommSocket
from socs_tcp.errors import DeviceDisconnected, DeviceTimeout, NotConnected
from socs_tcp.factory import DeviceClientFactory, LinkState, reply_frame
from socs_tcp.framing import Chunk, Exactly, Terminated
from socs_tcp.protocol import DeviceProtocol

_DEFAULT = object()


class TCPInterface:
    """Interface class for connecting to devices using TCP.

    A drop-in for ``socs.tcp.TCPInterface``: drivers that subclass it and call
    ``super().__init__(ip_address, port, timeout)`` work unchanged. The
    connection itself is owned by the Twisted reactor (``DeviceClientFactory``),
    which reconnects in the background; this class lets worker threads use it
    with blocking calls, each bounded by its timeout.

    Every failure to talk to the device raises a ``ConnectionError``
    (``DeviceTimeout``, also a ``TimeoutError``; ``DeviceDisconnected``;
    ``NotConnected``). Bad arguments raise ``TypeError``/``ValueError`` at once.

    Parameters
    ----------
    ip_address : str
        IP address (or host name) of the device.
    port : int
        Associated port for TCP communication.
    timeout : float
        Duration in seconds that operations wait before giving up.
    read_termination : bytes or str, optional
        What ends a reply, for ``query`` (pyvisa's word). None: a reply is
        whatever arrives first.
    write_termination : bytes or str, optional
        Appended to the message by ``query``. ``send`` sends exactly what it is given.
    on_connect : callable, optional
        ``on_connect(interface)``, run in the calling thread after every
        (re)connect, before any other I/O on the new connection (re-initialise
        the device, drain a prompt). If it raises, the connection is dropped.
    backoff : Backoff, optional
        Background reconnect policy.
    connect_timeout : float, optional
        Seconds a connection attempt may take (default: ``timeout``).
    trace : bool
        Log every byte in and out at debug level.
    encoding : str
        How ``str`` messages are encoded.
    reactor : optional
        The reactor to use (default: the global one).

    Attributes
    ----------
    ip_address : str
    port : int
    timeout : float
    comm : CommSocket or None
        None while not connected; while connected a socket-like object
        (``sendall``, ``recv``, usable with ``select.select``).
    """

    log = Logger()

    def __init__(self, ip_address: str, port: int, timeout: float = 10, *,
                 read_termination: bytes | str | None = None,
                 write_termination: bytes | str = b'',
                 on_connect: Callable[['TCPInterface'], None] | None = None,
                 backoff: Backoff | None = None,
                 connect_timeout: float | None = None,
                 trace: bool = False,
                 encoding: str = 'utf-8',
                 reactor=None) -> None:
        if not isinstance(ip_address, str) or not ip_address:
            raise TypeError(f'ip_address must be a non-empty str, got {ip_address!r}')
        self.ip_address = ip_address
        self.port = _port(port)
        self.timeout = timeout
        self.encoding = encoding
        self.read_termination = self._optional_bytes(read_termination, 'read_termination')
        self.write_termination = self._optional_bytes(write_termination, 'write_termination') or b''
        if on_connect is not None and not callable(on_connect):
            raise TypeError(f'on_connect must be callable, got {on_connect!r}')
        if backoff is not None and not isinstance(backoff, Backoff):
            raise TypeError(f'backoff must be a socs_tcp.Backoff, got {backoff!r}')
        connect_timeout = self.timeout if connect_timeout is None else _positive(connect_timeout, 'connect_timeout')
        self._on_connect = on_connect
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._io_lock = threading.RLock()
        self._hooked_generation = 0   # the connection whose on_connect has run
        # The connection on which the last read timed out: its reply may still
        # come, so the next request starts on a fresh connection instead.
        self._overdue_on: DeviceProtocol | None = None
        self._closed = False
        self._comm = CommSocket(self)
        self._factory = DeviceClientFactory(ip_address, self.port, connect_timeout=connect_timeout,
                                            backoff=backoff, reactor=reactor)
        self._factory.trace = bool(trace)
        self._first_connect()

    # -- attributes ----------------------------------------------------------

    @property
    def timeout(self) -> float:
        return self._timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._timeout = _positive(value, 'timeout')

    @property
    def comm(self) -> CommSocket | None:
        return self._comm if self.connected else None

    @property
    def connected(self) -> bool:
        current = self._factory.current
        return current is not None and current.usable

    @property
    def trace(self) -> bool:
        return self._factory.trace

    @trace.setter
    def trace(self, value: bool) -> None:
        self._factory.trace = bool(value)

    @property
    def stats(self) -> dict:
        """Counters: connects, disconnects, connect_failures, bytes_in/out, stale bytes dropped,
        queries, timeouts, last_error (and its time), plus state, connected, buffered bytes and
        the current reconnect delay."""
        factory = self._factory
        stats = factory.stats.as_dict()
        stats.update(state=factory.state.value, connected=self.connected,
                     buffered=len(factory.buffer), reconnect_delay=factory.delay)
        return stats

    # -- the socs.tcp API ------------------------------------------------------

    def send(self, msg: bytes | str) -> None:
        """Send every byte of ``msg`` to the device.

        Connects first when not connected. If the write fails, reconnects and
        writes once more. If the last read timed out (its reply may still
        come), the message goes out on a fresh connection, so that late reply
        is never read as the answer to this one.

        Raises
        ------
        TypeError
            ``msg`` is neither bytes nor str.
        ConnectionError
            No connection could be made, or the second write failed too.
        """
        data = self._encode(msg, 'msg')
        deadline = self._begin('send', None)
        with self._locked(deadline):
            self._write(data, deadline, clear_stale=False)
            if self._factory.trace:
                self.log.debug('{address} > {data!r}', address=self._factory.address, data=data)

    def recv(self, bufsize: int = 4096, reset_on_error: bool = False) -> bytes:
        """Receive up to ``bufsize`` bytes, as soon as at least one is there.

        After the device closed the connection, returns what was still
        buffered, then raises (``socs.tcp`` returned ``b''`` forever).

        Parameters
        ----------
        bufsize : int
            The most bytes to return (> 0).
        reset_on_error : bool
            Also drop the connection on error (the next call reconnects).

        Raises
        ------
        DeviceTimeout
            Nothing arrived within ``timeout``.
        ConnectionError
            Not connected, or the connection was lost.
        """
        bufsize = _count(bufsize, 'bufsize')
        deadline = self._begin('recv', None)
        try:
            with self._locked(deadline):
                self._run_hook_if_new()
                return self._take(Chunk(bufsize), deadline)
        except ConnectionError as exc:
            if reset_on_error:
                self._reset(f'recv failed: {exc}')
            raise

    # -- framed I/O --------------------------------------------------------------

    def query(self, msg: bytes | str, *, terminator: bytes | str | None = _DEFAULT,
              size: int | None = None, timeout: float | None = None) -> bytes:
        """Send ``msg`` (plus ``write_termination``) and return the device's reply.

        Input waiting from before the request is dropped first. The reply is
        read up to ``terminator`` (default ``read_termination``; removed from
        the result), or exactly ``size`` bytes, or, with neither, whatever
        arrives first. Queries from several threads never interleave.

        If no reply comes in time the connection is dropped, so that the late
        reply can never answer a later query; the next call reconnects.

        Raises
        ------
        TypeError, ValueError
            A bad argument (named in the message).
        DeviceTimeout
            No complete reply within ``timeout`` (default: the interface's).
        ConnectionError
            No connection, or it was lost before the reply was complete.
        """
        data = self._encode(msg, 'msg') + self.write_termination
        if terminator is _DEFAULT:
            terminator = self.read_termination
        elif size is not None and terminator is not None:
            raise ValueError('query() takes terminator or size, not both')
        else:
            terminator = self._optional_bytes(terminator, 'terminator')
        size = None if size is None else _count(size, 'size')
        frame = reply_frame(terminator, size)
        deadline = self._begin('query', timeout)
        with self._locked(deadline):
            proto = self._write(data, deadline, clear_stale=True)
            try:
                reply = self._factory.buffer.take(frame, deadline)
            except DeviceTimeout as exc:
                self._factory.stats.timeouts += 1
                self._drop(proto, 'no reply within the timeout')
                raise DeviceTimeout(f'no reply from {self._factory.address} to {data!r}: {exc}') from None
        self._factory.stats.queries += 1
        if self._factory.trace:
            self.log.debug('{address} > {data!r} < {reply!r}', address=self._factory.address,
                           data=data, reply=reply)
        return reply

    def read_until(self, terminator: bytes | str, timeout: float | None = None) -> bytes:
        """Return input up to and including ``terminator``.

        On a timeout the input stays buffered for the next read.

        Raises
        ------
        DeviceTimeout
            ``terminator`` did not arrive within ``timeout``.
        ConnectionError
            Not connected, or the connection was lost first.
        """
        terminator = self._optional_bytes(terminator, 'terminator')
        if not terminator:
            raise ValueError('terminator must not be empty')
        return self._read(Terminated(terminator, strip=False), 'read_until', timeout)

    def read_exactly(self, n: int, timeout: float | None = None) -> bytes:
        """Return exactly ``n`` bytes of input.

        Raises
        ------
        DeviceTimeout
            Fewer than ``n`` bytes arrived within ``timeout`` (they stay buffered).
        ConnectionError
            Not connected, or the connection was lost first.
        """
        return self._read(Exactly(_count(n, 'n')), 'read_exactly', timeout)

    def clear(self) -> int:
        """Drop all buffered input; return the number of bytes dropped."""
        deadline = self._begin('clear', None)
        with self._locked(deadline):
            dropped = self._factory.buffer.clear()
        self._factory.stats.record_dropped(dropped)
        return dropped

    def close(self) -> None:
        """Close the connection and stop reconnecting. Idempotent.

        Further calls raise ``NotConnected``.
        """
        if self._closed:
            return
        self._closed = True
        factory = self._factory
        caller = reactor_thread.classify_caller(self._reactor, start_background=False)
        if caller is reactor_thread.Caller.WORKER and self._reactor.running:
            self._reactor.callFromThread(factory.close)
            with factory.lock:  # bounded: the reactor aborts at once
                factory.changed.wait_for(lambda: factory.state is LinkState.CLOSED
                                         and factory.current is None, timeout=1.0)
        else:
            factory.close()
        factory.buffer.close()

    def __enter__(self) -> 'TCPInterface':
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        # SOCS closes its socket here; a forgotten interface must not keep
        # reconnecting in the reactor forever.
        try:
            if not self._closed and self._reactor.running:
                self._closed = True
                self._reactor.callFromThread(self._factory.close)
        except Exception:
            pass

    def __repr__(self) -> str:
        return f'<{type(self).__name__} {self.ip_address}:{self.port} {self._factory.state.value}>'

    # -- internals ---------------------------------------------------------------

    def _first_connect(self) -> None:
        """Try to connect, as ``socs.tcp`` does on construction, without ever raising."""
        caller = reactor_thread.classify_caller(self._reactor)
        if caller is reactor_thread.Caller.REACTOR:
            self._factory.start()
            return
        if caller is reactor_thread.Caller.BEFORE_RUN:
            self._reactor.callWhenRunning(self._factory.start)
            return
        deadline = time.monotonic() + self._timeout
        try:
            with self._locked(deadline):
                self._connection(deadline)
        except ConnectionError as exc:
            self.log.warn('Unable to connect to {address}: {error}', address=self._factory.address,
                          error=exc)
        except Exception:
            pass  # on_connect failed: logged, the connection dropped; the next call retries it

    def _begin(self, method: str, timeout: float | None) -> float:
        """Check the caller may block here; return the call's deadline."""
        timeout = self._timeout if timeout is None else _positive(timeout, 'timeout')
        if self._closed:
            raise NotConnected(f'{method}() on a closed interface to {self._factory.address}')
        reactor_thread.require_worker(self._reactor, method)
        return time.monotonic() + timeout

    @contextmanager
    def _locked(self, deadline: float) -> Iterator[None]:
        """Hold the interface for one whole operation, waiting no later than ``deadline``."""
        if not self._io_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise DeviceTimeout(f'{self._factory.address} was busy with another call for the whole timeout')
        try:
            yield
        finally:
            self._io_lock.release()

    def _read(self, frame, method: str, timeout: float | None) -> bytes:
        deadline = self._begin(method, timeout)
        with self._locked(deadline):
            self._run_hook_if_new()
            return self._take(frame, deadline)

    def _take(self, frame, deadline: float) -> bytes:
        """Read one frame, remembering a timeout: see ``_write``."""
        try:
            data = self._factory.buffer.take(frame, deadline)
        except DeviceTimeout:
            self._overdue_on = self._factory.current
            raise
        self._overdue_on = None
        return data

    def _write(self, data: bytes, deadline: float, clear_stale: bool) -> DeviceProtocol:
        """Write ``data`` on a connection (made if needed), retrying once on a new one."""
        for attempt in (1, 2):
            proto = self._connection(deadline)
            if proto is self._overdue_on:
                # The last read on this connection timed out: the reply it
                # waited for may still come and would answer this request.
                self._overdue_on = None
                self._drop(proto, 'the last read timed out; its reply may still come')
                proto = self._connection(deadline)
            if clear_stale:
                self._factory.stats.record_dropped(self._factory.buffer.clear())
            try:
                proto.write_all(data, deadline)
                return proto
            except DeviceTimeout:
                self._drop(proto, 'the device stopped reading')
                raise
            except DeviceDisconnected as exc:
                self._drop(proto, f'write failed: {exc}')
                if attempt == 2:
                    raise
                self.log.info('{address}: write failed ({error}); reconnecting to write once more',
                              address=self._factory.address, error=exc)
        raise AssertionError('unreachable')

    def _connection(self, deadline: float) -> DeviceProtocol:
        """Return a usable connection, making one now if needed, with ``on_connect`` run on it.

        @raise NotConnected: the attempt failed (refused, unreachable) or the link is closed.
        @raise DeviceTimeout: no connection by ``deadline``.
        """
        factory = self._factory
        with factory.lock:
            proto = factory.current
            if proto is None or not proto.usable:
                proto = None
                failures = factory.failures
        if proto is None:
            self._reactor.callFromThread(factory.connect_now)
            with factory.lock:
                while True:
                    proto = factory.current
                    if proto is not None and proto.usable:
                        break
                    if factory.state is LinkState.CLOSED:
                        raise NotConnected(f'connection to {factory.address} is closed')
                    if factory.failures != failures:
                        raise NotConnected(f'cannot connect to {factory.address}: {factory.last_failure}')
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise DeviceTimeout(f'no connection to {factory.address} within the timeout')
                    factory.changed.wait(remaining)
        self._run_hook(proto)
        return proto

    def _run_hook_if_new(self) -> None:
        proto = self._factory.current
        if proto is not None and proto.usable:
            self._run_hook(proto)

    def _run_hook(self, proto: DeviceProtocol) -> None:
        if self._on_connect is None or self._hooked_generation == proto.generation:
            return
        self._hooked_generation = proto.generation  # before: the hook does I/O through us
        try:
            self._on_connect(self)
        except BaseException as exc:
            self._drop(proto, f'on_connect failed: {exc!r}')
            self.log.failure('{address}: on_connect hook failed', address=self._factory.address)
            raise

    def _drop(self, proto: DeviceProtocol, why: str) -> None:
        """Forget ``proto`` now (its late input is dropped) and abort it in the reactor."""
        factory = self._factory
        factory.stats.record_error(why)
        factory.discard(proto, DeviceDisconnected(f'connection to {factory.address} dropped: {why}'))
        self._reactor.callFromThread(factory.drop, proto, why)

    def _reset(self, why: str) -> None:
        """Drop the current connection and reconnect in the background."""
        proto = self._factory.current
        if proto is not None:
            self._drop(proto, why)
        self._reactor.callFromThread(self._factory.connect_now)

    def _encode(self, msg: bytes | str, name: str) -> bytes:
        if isinstance(msg, str):
            return msg.encode(self.encoding)
        if isinstance(msg, (bytes, bytearray, memoryview)):
            return bytes(msg)
        raise TypeError(f'{name} must be bytes or str, got {type(msg).__name__}')

    def _optional_bytes(self, value: bytes | str | None, name: str) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, (str, bytes, bytearray)):
            return self._encode(value, name)
        raise TypeError(f'{name} must be bytes, str or None, got {type(value).__name__}')


def _port(value) -> int:
    if isinstance(value, bool):
        raise TypeError(f'port must be an int, got {value!r}')
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise TypeError(f'port must be an int, got {value!r}') from None
    if not 1 <= port <= 65535:
        raise ValueError(f'port must be in 1..65535, got {port}')
    return port


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{name} must be a number of seconds, got {value!r}')
    if not 0 < value < math.inf:  # also refuses NaN
        raise ValueError(f'{name} must be a finite number > 0, got {value!r}')
    return float(value)


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} must be an int, got {value!r}')
    if value <= 0:
        raise ValueError(f'{name} must be > 0, got {value}')
    return value
