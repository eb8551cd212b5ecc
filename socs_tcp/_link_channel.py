"""LinkChannel: a ``TCPInterface``'s channel over the connection that the reactor owns.

The link (``DeviceClientFactory`` and its ``DeviceProtocol``) lives in the
reactor thread and reconnects in the background. Worker threads reach it
only through its ``Bridge`` (waits, input, writes, counters, state) and by
posting requests to the reactor (``Bridge.post``): this module never reads
or writes the factory from a caller's thread.

One call at a time holds the channel (a plain lock, taken with the call's
deadline). The ``on_connect`` hook runs inside the call that made the
connection, in its thread: while it runs, a context variable names the
connection it was made for and that call's deadline, and every call the
hook makes on this channel (through its handle or through the interface
itself) is bound to that connection and ends by that deadline, without
taking the lock again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextvars import ContextVar

from twisted.logger import Logger
from twisted.python import threadable
from twisted.python.failure import Failure

from socs_tcp import _reactor_owner as reactor_owner
from socs_tcp import _tap as tap
from socs_tcp._backoff import Backoff
from socs_tcp._bridge import Generation, Pump, WriteFailed
from socs_tcp._errors import DeviceDisconnected, DeviceTimeout
from socs_tcp._factory import DeviceClientFactory
from socs_tcp._framing import Chunk, Frame

# Module-level, not a class attribute: a Logger reached through an instance
# puts that instance in every event as log_source, and Twisted keeps the
# events it logs before logging begins (a plain script never begins it).
log = Logger(namespace='socs_tcp._link_channel')


class _Call:
    """One call's hold on the channel.

    Attributes
    ----------
    deadline : float
    pump : callable or None
        How the call waits (see ``Bridge``).
    bound : int
        0: any connection (made if needed); else the only connection the call may use.
    holds_lock : bool
        False for a call made inside on_connect (its caller holds the lock).
    """

    __slots__ = ('deadline', 'pump', 'bound', 'holds_lock')

    def __init__(self, deadline: float, pump: Pump | None, bound: Generation, holds_lock: bool) -> None:
        self.deadline = deadline
        self.pump = pump
        self.bound = bound
        self.holds_lock = holds_lock


#: The on_connect run under way in this thread of control: (channel, its call).
_hook_call: ContextVar[tuple[LinkChannel, _Call] | None] = ContextVar('socs_tcp_on_connect', default=None)


class LinkChannel:
    """Blocking calls on a reactor-owned link, each bounded by its deadline.

    Parameters
    ----------
    host, port :
        The device's address.
    connect_timeout : float
        Seconds a connection attempt may take.
    backoff : Backoff or None
        Background reconnect policy.
    input_limit : int
        Unread input above which the reactor stops reading (see ``Bridge``).
    max_frame_length : int
        Longest frame a call reads; a longer one drops the connection.
    on_connect : callable or None
        ``on_connect(deadline)``: run in the calling thread once per
        connection, before any other I/O on it.
    reactor :
        The reactor the link lives in.

    Attributes
    ----------
    socket_like : object
        What ``comm`` is once the link ever connected (set by the interface).
    """

    def __init__(self, host: str, port: int, *, connect_timeout: float, backoff: Backoff | None,
                 input_limit: int, max_frame_length: int,
                 on_connect: Callable[[float], None] | None, reactor) -> None:
        self.address = f'{host}:{port}'
        self.max_frame_length = max_frame_length
        self._reactor = reactor
        self._factory = DeviceClientFactory(host, port, connect_timeout=connect_timeout, backoff=backoff,
                                            input_limit=input_limit, max_frame_length=max_frame_length,
                                            reactor=reactor)
        # Before any call: _enter's shortcut relies on the reactor being watched once it runs.
        reactor_owner.watch(reactor)
        self._bridge = self._factory.bridge
        self._stats = self._bridge.stats
        self._on_connect = on_connect
        self._lock = threading.Lock()
        self._trace = False
        self._closed = False
        self._hooked: Generation = 0        # the connection on_connect has run on (if there is one)
        # The connection on which the last read timed out: its reply may still
        # come, so the next request starts on a fresh connection instead.
        self._overdue_on: Generation = 0
        # The connection a query may use at once (on_connect run on it, no read
        # overdue on it, the reactor running), 0 if none, and the reactor's thread
        # then: what the usual query checks, on this object only.
        self._ready: Generation = 0
        self._reactor_thread: int | None = None
        self.socket_like: object | None = None

    # -- state ---------------------------------------------------------------

    @property
    def comm(self) -> object | None:
        return self.socket_like if self._bridge.ever_connected else None

    @property
    def connected(self) -> bool:
        return self._bridge.connected

    @property
    def trace(self) -> bool:
        return self._trace

    @trace.setter
    def trace(self, value: bool) -> None:
        self._trace = bool(value)
        self._bridge.post(setattr, self._factory, 'trace', self._trace)  # the factory logs input

    def stats(self) -> dict:
        return self._bridge.snapshot()

    def fileno(self) -> int:
        """See ``Bridge.fileno``: readable while input waits or the connection is gone."""
        return self._bridge.fileno()

    # -- blocking calls ---------------------------------------------------------

    def connect(self, deadline: float) -> bool:
        """Connect now (running ``on_connect``); False: called in the reactor thread, only started.

        Raises
        ------
        ConnectionError
            No connection by ``deadline``, or the attempt failed.
        """
        if reactor_owner.in_reactor_thread(self._reactor):
            self._factory.start()  # this is the reactor thread: it cannot wait, but may start
            return False
        call = self._enter('connect', deadline)
        try:
            self._connection(call)
        finally:
            self._leave(call)
        return True

    def send(self, data: bytes, deadline: float) -> None:
        call = self._enter('send', deadline)
        try:
            self._write(call, data, clear_stale=False)
        finally:
            self._leave(call)
        if self._trace:
            log.debug('{address} > {data!r}', address=self.address, data=data)

    def recv(self, bufsize: int, deadline: float, reset_on_error: bool) -> bytes:
        call = self._enter('recv', deadline)
        try:
            generation = call.bound or self._bridge.generation
            try:
                self._run_hook(generation, call)
                return self._take(Chunk(bufsize), call)
            except ConnectionError as exc:
                if reset_on_error:  # this connection, while no other call can have made a new one
                    self._reset(generation, f'recv failed: {exc}')
                raise
        finally:
            self._leave(call)

    def read(self, frame: Frame, deadline: float, method: str = 'read') -> bytes:
        call = self._enter(method, deadline)
        try:
            self._run_hook(call.bound or self._bridge.generation, call)
            return self._take(frame, call)
        finally:
            self._leave(call)

    def query(self, data: bytes, frame: Frame, deadline: float) -> bytes:
        lock = self._lock
        call: _Call | None = None  # None: took the free channel, so this is no call made by on_connect
        if not lock.acquire(False):
            call = self._enter('query', deadline)  # waits for the channel, or is on_connect's
        try:
            reply = None
            attempts: tuple[int, ...] = (1, 2)  # the general way's writes
            ready = self._ready
            if (ready and (call is None or call.holds_lock and call.pump is None)
                    and threading.get_ident() != self._reactor_thread):
                # The usual query, on a connection ready for it, from a worker thread: the
                # bridge writes the request and reads the reply itself. An agent polling a
                # device every few ms runs this on cold caches, where each object or module
                # touched before the request leaves shows in the latency.
                try:
                    reply = self._bridge.query(data, frame, deadline, ready)
                except WriteFailed as exc:  # the request left in part only: as a failed write
                    self._reconnect(ready, f'write failed: {exc}')
                    log.info('{address}: write failed ({error}); reconnecting to write once more',
                             address=self.address, error=str(exc))
                    attempts = (2,)
                except DeviceTimeout as exc:
                    raise self._no_reply(ready, data, exc) from None
                except KeyboardInterrupt:
                    self._interrupted(ready)
                    raise
            if reply is None:  # anything else, or nothing could be sent: the general way
                reply = self._query(call or self._held_call('query', deadline), data, frame, attempts)
        finally:
            if call is None or call.holds_lock:
                lock.release()
        if self._trace:
            log.debug('{address} > {data!r} < {reply!r}', address=self.address, data=data, reply=reply)
        return reply

    def _query(self, call: _Call, data: bytes, frame: Frame, attempts: tuple[int, ...] = (1, 2)) -> bytes:
        """``query``'s general way: a connection made if needed, ``on_connect`` run, the write retried once.

        ``attempts``: which of the two writes are left (``(2,)``: the first failed already).
        """
        generation = self._write(call, data, clear_stale=True, attempts=attempts)
        try:
            reply = self._bridge.take(frame, call.deadline, call.pump)
        except DeviceTimeout as exc:
            raise self._no_reply(generation, data, exc) from None
        except KeyboardInterrupt:
            self._interrupted(generation)
            raise
        self._stats.count_query()  # (the bridge's query counts the queries it answers)
        if not self._ready:
            self._update_ready()  # the reactor may have started since on_connect ran (pumped before)
        return reply

    def _no_reply(self, generation: Generation, data: bytes, exc: DeviceTimeout) -> DeviceTimeout:
        """No reply to ``data`` in time: drop the connection (the late reply must never answer a later request)."""
        self._stats.count_timeout()
        self._reconnect(generation, 'no reply within the timeout')
        return DeviceTimeout(f'no reply from {self.address} to {data!r}: {exc}')

    def _interrupted(self, generation: Generation) -> None:
        """Ctrl-C while waiting for a reply (the shell): it may still come, as after a timeout."""
        self._reconnect(generation, 'interrupted while waiting for the reply')

    def clear(self, deadline: float) -> int:
        call = self._enter('clear', deadline)
        try:
            return self._bridge.clear()
        finally:
            self._leave(call)

    # -- ending ------------------------------------------------------------------

    def release(self, why: str) -> None:
        """Close the connection; nothing reconnects until the next call needs the device."""
        if self._closed:
            return
        generation = self._bridge.generation
        if generation:
            self._bridge.discard(generation, DeviceDisconnected(f'connection to {self.address} closed: {why}'))
        self._bridge.post(self._factory.release, why)

    def close(self) -> None:
        """Close the connection and stop reconnecting (idempotent); wait briefly for it to go."""
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

    def close_soon(self) -> None:
        """``close`` without waiting, from any thread (a forgotten interface's finaliser)."""
        if not self._closed:
            self._closed = True
            self._reactor.callFromThread(self._factory.close)

    # -- internals ---------------------------------------------------------------

    def _enter(self, method: str, deadline: float) -> _Call:
        """Take the channel for one call (``_leave`` after), waiting until ``deadline``.

        Raises
        ------
        ReactorThreadError
            Called in the running reactor's thread.
        DeviceTimeout
            Another call held the channel for the whole timeout.
        """
        lock = self._lock
        if lock.acquire(False):
            # Free: so no call holds it, and this is no call made by on_connect (whose caller holds it).
            try:
                return self._held_call(method, deadline)
            except BaseException:
                lock.release()
                raise
        hook = _hook_call.get()
        if hook is not None and hook[0] is self:
            outer = hook[1]  # a call made by on_connect: its connection, within its caller's time
            return _Call(min(deadline, outer.deadline), outer.pump, outer.bound, False)
        pump = reactor_owner.prepare_to_block(self._reactor, method, deadline)  # before blocking
        if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise DeviceTimeout(f'{self.address} was busy with another call for the whole timeout')
        return _Call(deadline, pump, 0, True)

    def _held_call(self, method: str, deadline: float) -> _Call:
        """The call that just took the free channel (see ``_enter``; the caller releases on an error)."""
        if self._reactor.running and threadable.ioThread != threading.get_ident():
            return _Call(deadline, None, 0, True)  # a worker thread while the reactor runs: the usual case
        return _Call(deadline, reactor_owner.prepare_to_block(self._reactor, method, deadline), 0, True)

    def _leave(self, call: _Call) -> None:
        if call.holds_lock:
            self._lock.release()

    def _take(self, frame: Frame, call: _Call) -> bytes:
        """Read one frame, remembering a timeout (see ``_connection``).

        A read in on_connect that times out (an optional prompt that did
        not come) leaves the new connection alone.
        """
        generation = self._bridge.generation
        try:
            data = self._bridge.take(frame, call.deadline, call.pump)
        except (DeviceTimeout, KeyboardInterrupt):   # Ctrl-C too: what it waited for may still come
            if not call.bound:
                self._set_overdue(generation)
            raise
        if not call.bound and self._overdue_on:
            self._set_overdue(0)
        return data

    def _write(self, call: _Call, data: bytes, clear_stale: bool,
               attempts: tuple[int, ...] = (1, 2)) -> Generation:
        """Write ``data`` on a connection (made if needed), retrying once on a new one (``attempts`` left)."""
        for attempt in attempts:
            generation = self._connection(call)
            if clear_stale:
                self._bridge.drop_stale(call.deadline)
            # Told before the write: the reply may be read (and told) before write() returns.
            tap.notify_sent(self.address, data)
            try:
                self._bridge.write(generation, data, call.deadline, call.pump)
                return generation
            except DeviceTimeout:
                self._reconnect(generation, 'the device stopped reading')
                raise
            except DeviceDisconnected as exc:
                self._reconnect(generation, f'write failed: {exc}')
                if attempt == 2 or call.bound:
                    raise
                log.info('{address}: write failed ({error}); reconnecting to write once more',
                         address=self.address, error=str(exc))
        raise AssertionError('unreachable')

    def _connection(self, call: _Call) -> Generation:
        """Return a usable connection, making one now if needed, with ``on_connect`` run on it.

        Raises
        ------
        DeviceDisconnected
            A call made by on_connect, whose connection is gone.
        NotConnected
            The attempt failed (refused, unreachable) or the link is closed.
        DeviceTimeout
            No connection by the call's deadline.
        """
        bridge = self._bridge
        generation = bridge.generation
        if call.bound:
            if generation != call.bound:
                raise DeviceDisconnected(f'the connection to {self.address} that on_connect runs on is gone')
            return generation
        if generation and generation == self._overdue_on:
            # The last read on this connection timed out: the reply it
            # waited for may still come and would answer this request.
            self._reconnect(generation, 'the last read timed out; its reply may still come')
            generation = 0
        if self._overdue_on:
            self._set_overdue(0)
        if not generation:
            failures = bridge.failures()  # before asking: a failure after this ends the wait
            bridge.post(self._factory.connect_now)
            generation = bridge.wait_connected(failures, call.deadline, call.pump)
        if self._hooked != generation:
            self._run_hook(generation, call)
        return generation

    def _run_hook(self, generation: Generation, call: _Call) -> None:
        """Run ``on_connect`` once on connection ``generation`` (0: none yet, nothing to do)."""
        if self._hooked == generation or not generation:
            return
        self._hooked = generation
        self._update_ready()
        if self._on_connect is None:
            return
        token = _hook_call.set((self, _Call(call.deadline, call.pump, generation, False)))
        try:
            self._on_connect(call.deadline)
        except Exception as exc:
            self._reconnect(generation, f'on_connect failed: {exc!r}')
            failure = Failure()
            failure.cleanFailure()  # a traceback in a buffered log event would keep us alive
            log.failure('{address}: on_connect hook failed', failure, address=self.address)
            if isinstance(exc, ConnectionError):
                raise
            raise DeviceDisconnected(f'on_connect failed on {self.address}: {exc!r}') from exc
        finally:
            _hook_call.reset(token)

    def _set_overdue(self, generation: Generation) -> None:
        """A read timed out on connection ``generation`` (0: none is overdue now)."""
        self._overdue_on = generation
        self._update_ready()

    def _update_ready(self) -> None:
        """Which connection a query may use at once, now that on_connect ran or a read timed out."""
        hooked = self._hooked
        if hooked != self._overdue_on and self._reactor.running:
            self._ready = hooked
            self._reactor_thread = threadable.ioThread  # set while the reactor runs
        else:
            self._ready = 0

    def _reconnect(self, generation: Generation, why: str) -> None:
        """Stop using connection ``generation`` now (its late input is dropped); the reactor replaces it."""
        self._stats.record_error(why)
        self._bridge.discard(generation, DeviceDisconnected(f'connection to {self.address} dropped: {why}'))
        self._bridge.post(self._factory.reconnect, generation, why)

    def _reset(self, generation: Generation, why: str) -> None:
        """Drop connection ``generation`` (0: none) and reconnect in the background."""
        if generation:
            self._reconnect(generation, why)
        self._bridge.post(self._factory.connect_now)
