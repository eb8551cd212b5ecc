"""TCPInterface: the blocking adapter that OCS worker threads call."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from twisted.logger import Logger
from twisted.python.failure import Failure

from socs_tcp import _arguments as arguments
from socs_tcp import _foreign as foreign
from socs_tcp import _reactor_owner as reactor_owner
from socs_tcp import _tap as tap
from socs_tcp._backoff import Backoff
from socs_tcp._bridge import Generation, Pump
from socs_tcp._comm import CommSocket
from socs_tcp._errors import DeviceDisconnected, DeviceTimeout, NotConnected
from socs_tcp._factory import DEFAULT_INPUT_LIMIT, DeviceClientFactory
from socs_tcp._framing import Chunk, Exactly, Frame, Terminated, reply_frame

_DEFAULT = object()

# Module-level, not a class attribute: a Logger reached through an instance
# puts that instance in every event as log_source, and Twisted keeps the
# events it logs before logging begins (a plain script never begins it): the
# interface could then never be collected, nor close its connection.
log = Logger(namespace='socs_tcp._interface')


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
        the device, drain a prompt). If it raises, the connection is dropped
        and the call fails with a ``ConnectionError``.
    backoff : Backoff, optional
        Background reconnect policy.
    connect_timeout : float, optional
        Seconds a connection attempt may take (default: ``timeout``).
    input_limit : int
        Bytes of unread input above which the reactor stops reading while
        no call waits for input, until they are read (TCP flow control then
        holds the device back, as the kernel buffer does for ``socs.tcp``).
        A reply a call waits for may be longer. Nothing is dropped.
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
        None until the interface first connected (as the seed documents for
        a device that was down at construction); from then on a socket-like
        object (``sendall``, ``recv``, ``close``, ``settimeout``, usable with
        ``select``), also while the device is down.
    """

    def __init__(self, ip_address: str, port: int, timeout: float = 10, *,
                 read_termination: bytes | str | None = None,
                 write_termination: bytes | str = b'',
                 on_connect: Callable[[TCPInterface], None] | None = None,
                 backoff: Backoff | None = None,
                 connect_timeout: float | None = None,
                 input_limit: int = DEFAULT_INPUT_LIMIT,
                 trace: bool = False,
                 encoding: str = 'utf-8',
                 reactor=None) -> None:
        if not isinstance(ip_address, str) or not ip_address:
            raise TypeError(f'ip_address must be a non-empty str, got {ip_address!r}')
        self.ip_address = ip_address
        self.port = arguments.port(port)
        self.timeout = timeout
        self.encoding = encoding
        self.read_termination = self._optional_bytes(read_termination, 'read_termination')
        self.write_termination = self._optional_bytes(write_termination, 'write_termination') or b''
        if on_connect is not None and not callable(on_connect):
            raise TypeError(f'on_connect must be callable, got {on_connect!r}')
        if backoff is not None and not isinstance(backoff, Backoff):
            raise TypeError(f'backoff must be a socs_tcp.Backoff, got {backoff!r}')
        connect_timeout = (self.timeout if connect_timeout is None
                           else arguments.seconds(connect_timeout, 'connect_timeout'))
        input_limit = arguments.count(input_limit, 'input_limit')
        self._on_connect = on_connect
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._factory = DeviceClientFactory(ip_address, self.port, connect_timeout=connect_timeout,
                                            backoff=backoff, input_limit=input_limit, reactor=reactor)
        self._factory.trace = bool(trace)
        self._bridge = self._factory.bridge
        self._io_lock = threading.RLock()   # one operation at a time; re-entered by on_connect
        self._hooked: Generation = 0        # the connection whose on_connect has run
        self._hook_deadline: tuple[int, float] | None = None  # (thread, deadline) while it runs
        # The connection on which the last read timed out: its reply may still
        # come, so the next request starts on a fresh connection instead.
        self._overdue_on: Generation = 0
        self._closed = False
        self._comm = CommSocket(self)
        # Set once _connect returned something else than our comm (a test's
        # fake socket): from then on comm is that, used the socs.tcp way.
        self._foreign_mode = False
        self._foreign: object | None = None
        # As socs.tcp does: the seam that tests patch decides what comm is.
        self.comm = self._connect((self.ip_address, self.port))

    # -- attributes ----------------------------------------------------------

    @property
    def timeout(self) -> float:
        return self._timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._timeout = arguments.seconds(value, 'timeout')

    @property
    def comm(self) -> CommSocket | object | None:
        if self._foreign_mode:
            return self._foreign
        return self._comm if self._bridge.ever_connected else None

    @comm.setter
    def comm(self, value: object) -> None:
        if value is self._comm:
            self._foreign_mode = False
        elif value is not None or self._foreign_mode:
            self._foreign_mode, self._foreign = True, value
        # else: our own _connect could not connect (yet): comm stays None until it does

    @property
    def connected(self) -> bool:
        if self._foreign_mode:
            return self._foreign is not None
        return self._bridge.connected

    @property
    def trace(self) -> bool:
        return self._factory.trace

    @trace.setter
    def trace(self, value: bool) -> None:
        self._factory.trace = bool(value)

    @property
    def stats(self) -> dict:
        """Counters: connects, disconnects, connect_failures, bytes_in/out, stale bytes dropped,
        queries, timeouts, input_pauses, last_error (and its time), plus state, connected,
        buffered bytes, reading_paused, input_limit and the current reconnect delay."""
        stats = self._factory.stats.as_dict()
        stats.update(self._bridge.snapshot(), reconnect_delay=self._factory.delay)
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
        deadline, pump = self._begin('send', None)
        if self._foreign_mode:
            return foreign.send(self, data)
        self._acquire(deadline)
        try:
            self._write(data, deadline, pump, clear_stale=False)
        finally:
            self._io_lock.release()
        if self._factory.trace:
            log.debug('{address} > {data!r}', address=self._factory.address, data=data)

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
        bufsize = arguments.count(bufsize, 'bufsize')
        deadline, pump = self._begin('recv', None)
        if self._foreign_mode:
            return foreign.recv(self, bufsize, reset_on_error)
        self._acquire(deadline)
        try:
            generation = self._bridge.generation
            try:
                self._run_hook(generation, deadline)
                return self._take(Chunk(bufsize), deadline, pump)
            except ConnectionError as exc:
                if reset_on_error:  # this connection, while no other call can have made a new one
                    self._reset(generation, f'recv failed: {exc}')
                raise
        finally:
            self._io_lock.release()

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
        size = None if size is None else arguments.count(size, 'size')
        frame = reply_frame(terminator, size)
        deadline, pump = self._begin('query', timeout)
        if self._foreign_mode:
            foreign.send(self, data)
            return foreign.read(self, frame)
        self._acquire(deadline)
        try:
            generation = self._write(data, deadline, pump, clear_stale=True)
            try:
                reply = self._bridge.take(frame, deadline, pump)
            except DeviceTimeout as exc:
                self._factory.stats.timeouts += 1
                self._drop(generation, 'no reply within the timeout')
                raise DeviceTimeout(f'no reply from {self._factory.address} to {data!r}: {exc}') from None
            except KeyboardInterrupt:
                # Ctrl-C while waiting: the reply may still come, as after a timeout.
                self._drop(generation, 'interrupted while waiting for the reply')
                raise
        finally:
            self._io_lock.release()
        self._factory.stats.queries += 1
        if self._factory.trace:
            log.debug('{address} > {data!r} < {reply!r}', address=self._factory.address,
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
        return self._read(Exactly(arguments.count(n, 'n')), 'read_exactly', timeout)

    def clear(self) -> int:
        """Drop all buffered input (not a device clear); return the number of bytes dropped."""
        deadline, _ = self._begin('clear', None)
        self._acquire(deadline)
        try:
            dropped = self._bridge.clear()
        finally:
            self._io_lock.release()
        self._factory.stats.record_dropped(dropped)
        return dropped

    def close(self) -> None:
        """Close the connection and stop reconnecting. Idempotent.

        Further calls raise ``NotConnected``.
        """
        if self._closed:
            return
        self._closed = True
        reactor = self._reactor
        if reactor_owner.in_reactor_thread(reactor) or (
                not reactor.running and threading.current_thread() is threading.main_thread()):
            self._factory.close()
        else:
            reactor.callFromThread(self._factory.close)
            if reactor.running:
                self._bridge.wait_closed(time.monotonic() + 1.0)  # bounded: the reactor aborts at once

    def __enter__(self) -> TCPInterface:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        # SOCS closes its socket here; a forgotten interface must not keep a
        # connection (many devices take one client only), nor reconnect forever.
        if not getattr(self, '_closed', True) and not sys.is_finalizing():
            self._closed = True
            self._reactor.callFromThread(self._factory.close)

    def __repr__(self) -> str:
        return f'<{type(self).__name__} {self.ip_address}:{self.port} {self._factory.state.value}>'

    # -- the seam socs.tcp's tests patch ------------------------------------------

    def _connect(self, address: tuple[str, int]) -> CommSocket | None:
        """Connect now, as ``socs.tcp`` does on construction; return ``comm``, or None.

        Waits at most ``timeout``. A device that cannot be reached is logged,
        not raised: the link keeps trying in the background. Called in the
        running reactor's thread (reactor code building an interface), it
        cannot wait: the link starts connecting and None is returned.
        """
        if reactor_owner.in_reactor_thread(self._reactor):
            self._factory.start()
            return None
        try:
            deadline, pump = self._begin('connect', None)
            self._acquire(deadline)
            try:
                self._connection(deadline, pump)
            finally:
                self._io_lock.release()
        except ConnectionError as exc:
            log.warn('Unable to connect to {address}: {error}', address=self._factory.address,
                          error=str(exc))
            return None
        return self._comm

    # -- internals ---------------------------------------------------------------

    def _begin(self, method: str, timeout: float | None) -> tuple[float, Pump | None]:
        """Check that the caller may block here; return the call's deadline and how it waits."""
        timeout = self._timeout if timeout is None else arguments.seconds(timeout, 'timeout')
        if self._closed:
            raise NotConnected(f'{method}() on a closed interface to {self._factory.address}')
        deadline = time.monotonic() + timeout
        hook = self._hook_deadline
        if hook is not None and hook[0] == threading.get_ident():
            deadline = min(deadline, hook[1])  # a call made by on_connect: within its caller's time
        # A fake socket from a patched _connect needs no reactor: it may be used in any thread.
        pump = None if self._foreign_mode else reactor_owner.prepare_to_block(self._reactor, method, deadline)
        return deadline, pump

    def _acquire(self, deadline: float) -> None:
        """Take the interface for one whole operation (release ``_io_lock`` after), waiting until ``deadline``.

        Raises
        ------
        DeviceTimeout
            Another call held it for the whole timeout.
        """
        if not self._io_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise DeviceTimeout(f'{self._factory.address} was busy with another call for the whole timeout')

    def _read(self, frame: Frame, method: str, timeout: float | None) -> bytes:
        deadline, pump = self._begin(method, timeout)
        if self._foreign_mode:
            return foreign.read(self, frame)
        self._acquire(deadline)
        try:
            self._run_hook(self._bridge.generation, deadline)
            return self._take(frame, deadline, pump)
        finally:
            self._io_lock.release()

    def _take(self, frame: Frame, deadline: float, pump: Pump | None) -> bytes:
        """Read one frame, remembering a timeout: see ``_connection``."""
        generation = self._bridge.generation
        try:
            data = self._bridge.take(frame, deadline, pump)
        except (DeviceTimeout, KeyboardInterrupt):  # Ctrl-C too: what it waited for may still come
            self._overdue_on = generation
            raise
        self._overdue_on = 0
        return data

    def _write(self, data: bytes, deadline: float, pump: Pump | None, clear_stale: bool) -> Generation:
        """Write ``data`` on a connection (made if needed), retrying once on a new one."""
        for attempt in (1, 2):
            generation = self._connection(deadline, pump)
            if clear_stale:
                self._factory.stats.record_dropped(self._bridge.clear())
            # Told before the write: the reply may be read (and told) before write() returns.
            tap.notify_sent(self._factory.address, data)
            try:
                self._factory.stats.record_out(self._bridge.write(generation, data, deadline, pump))
                return generation
            except DeviceTimeout:
                self._drop(generation, 'the device stopped reading')
                raise
            except DeviceDisconnected as exc:
                self._drop(generation, f'write failed: {exc}')
                if attempt == 2:
                    raise
                log.info('{address}: write failed ({error}); reconnecting to write once more',
                              address=self._factory.address, error=str(exc))
        raise AssertionError('unreachable')

    def _connection(self, deadline: float, pump: Pump | None) -> Generation:
        """Return a usable connection, making one now if needed, with ``on_connect`` run on it.

        Raises
        ------
        NotConnected
            The attempt failed (refused, unreachable) or the link is closed.
        DeviceTimeout
            No connection by ``deadline``.
        """
        bridge = self._bridge
        generation = bridge.generation
        if generation and generation == self._overdue_on:
            # The last read on this connection timed out: the reply it
            # waited for may still come and would answer this request.
            self._drop(generation, 'the last read timed out; its reply may still come')
            generation = 0
        self._overdue_on = 0
        if not generation:
            failures = bridge.failures()  # before asking: a failure after this ends the wait
            bridge.post(self._factory.connect_now)
            generation = bridge.wait_connected(failures, deadline, pump)
        self._run_hook(generation, deadline)
        return generation

    def _run_hook(self, generation: Generation, deadline: float) -> None:
        """Run ``on_connect`` once on connection ``generation`` (0: none yet, nothing to do).

        The hook's own calls end by ``deadline`` too (the call that made the
        connection must not outlast its timeout), and a read in it that times
        out (an optional prompt that did not come) does not mark the new
        connection as overdue.
        """
        if self._on_connect is None or not generation or self._hooked == generation:
            return
        self._hooked = generation  # before: the hook does I/O through us
        overdue, self._hook_deadline = self._overdue_on, (threading.get_ident(), deadline)
        try:
            self._on_connect(self)
        except Exception as exc:
            self._drop(generation, f'on_connect failed: {exc!r}')
            failure = Failure()
            failure.cleanFailure()  # a traceback in a buffered log event would keep us alive
            log.failure('{address}: on_connect hook failed', failure, address=self._factory.address)
            if isinstance(exc, ConnectionError):
                raise
            raise DeviceDisconnected(f'on_connect failed on {self._factory.address}: {exc!r}') from exc
        finally:
            self._overdue_on, self._hook_deadline = overdue, None

    def _drop(self, generation: Generation, why: str) -> None:
        """Stop using connection ``generation`` now (its late input is dropped); abort it in the reactor."""
        factory = self._factory
        factory.stats.record_error(why)
        error = DeviceDisconnected(f'connection to {factory.address} dropped: {why}')
        factory.stats.record_dropped(self._bridge.discard(generation, error))
        self._bridge.post(factory.reconnect, generation, why)

    def _reset(self, generation: Generation, why: str) -> None:
        """Drop connection ``generation`` (0: none) and reconnect in the background."""
        if generation:
            self._drop(generation, why)
        self._bridge.post(self._factory.connect_now)

    def _rest(self, why: str) -> None:
        """Close the connection; nothing reconnects until the next call needs the device."""
        if self._closed:
            return
        generation = self._bridge.generation
        if generation:
            self._bridge.discard(generation, DeviceDisconnected(
                f'connection to {self._factory.address} closed: {why}'))
        self._bridge.post(self._factory.release, why)

    def _encode(self, msg: bytes | str, name: str) -> bytes:
        return arguments.as_bytes(msg, name, encoding=self.encoding)

    def _optional_bytes(self, value: bytes | str | None, name: str) -> bytes | None:
        return arguments.as_bytes(value, name, encoding=self.encoding, allow_none=True)
