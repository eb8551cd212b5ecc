"""Where worker threads and the reactor meet: the only state of a link that both touch.

A link's reactor side (``DeviceClientFactory`` and its ``DeviceProtocol``)
runs in the reactor thread and tells the link's ``Bridge`` what happened: a
connection came up, input arrived, the connection went, an attempt failed,
the link closed. Worker threads (``TCPInterface``) ask the bridge to wait for
a connection, to take one frame of input, or to write, each bounded by a
deadline, and post their requests to the reactor with ``post``.

Everything here is guarded by one lock, and every wait is a ``Condition``
wait on it inside a loop that re-checks the state it waits for: a wake-up
that comes early, late or twice is harmless, and none can be lost. Every
wait ends by its deadline, and at once when the link closes or the reactor
stops (``close``).

The link's counters (``stats``) that both threads write are guarded by the
same lock. The protocol tells the taps (`socs_tcp._tap`) what the reactor
reads; what a caller reads itself is told here, where it moves.

A frame a reader waits for that grows past its maximum length without
completing (a device streaming a line that never ends) ends the
connection: the bridge drops the input, fails the reader with an error that
names the limit, and asks the reactor to drop the connection (as
``LineReceiver.lineLengthExceeded`` does), so memory stays bounded.

Callers use the connection's own socket, with no hop through the reactor
thread. Writes go straight from the calling thread to the kernel. And while
a call waits for its reply, the caller owns the connection's input and
reads the socket itself (``take``: poll, then recv; ``query``: a request and
its reply, with as little as possible run before the request leaves and
after the reply arrives): the reactor stops
watching the socket when it finds input it does not own (see
`socs_tcp._owned_transport`), and takes it back once no call owns it: at
once when something needs the reactor to read (``select`` on ``comm``,
reactor code waiting for a frame), otherwise when the link has been idle
for a while (a few times the usual pause between calls, 10 ms to 0.5 s,
checked less often while the link stays busy), so that an agent polling its
device pays almost no reactor wake-ups per query and an idle link still
notices a peer close or unsolicited input within about a second.

Every ``send``/``recv`` of a caller runs under the lock after checking that
its connection is still the current one, and the transport closes its
socket under the lock (``socket_closing``): so a caller never reaches a
descriptor that was closed (and perhaps reused by another connection), nor a
connection that was replaced. A caller waiting in ``poll`` is woken by a
``shutdown`` when its connection goes (lost, dropped, link closed, reactor
stopping). Input the reactor read before a caller took the input over is
buffered first (the caller waits for a read under way to finish), so nothing
is reordered or lost in either direction of the hand-over.
"""

from __future__ import annotations

import select
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from socs_tcp import _tap as tap
from socs_tcp._errors import DeviceDisconnected, DeviceTimeout, NotConnected
from socs_tcp._framing import Frame, FrameTooLong
from socs_tcp._stats import LinkStats

#: Turns the reactor in the calling thread for up to the given seconds: how a
#: caller waits when it is the thread that will run the reactor, before it runs.
Pump = Callable[[float], None]

#: A connection's number: 1 for the link's first connection, then 2, ...; 0 is none.
Generation = int

#: Longest single wait of a writer for a device that stopped reading.
_WRITE_SLICE = 0.05

#: Most bytes a caller reads from its socket at once (Twisted's transports read 64 KiB).
_RECV_SIZE = 65536

#: How long an idle link waits before the reactor reads it again: a multiple of the
#: usual pause between calls, within these bounds (seconds).
_HAND_BACK_FACTOR = 3.0
_HAND_BACK_MIN = 0.01
_HAND_BACK_MAX = 0.5
#: While the link stays busy the reactor's check comes less and less often (doubling up
#: to this, seconds): a polling agent costs the reactor a wake-up every few seconds' worth
#: of queries, not one per few queries.
_RECHECK_MAX = 0.25

_POLL_IN = select.POLLIN | select.POLLPRI


class WriteFailed(DeviceDisconnected):
    """``query`` sent part of a request and could not write the rest: as any failed write.

    The connection is unusable and nothing of a reply was read: the caller
    may write the request once more on a new connection.
    """


class Link(Protocol):
    """What a bridge asks of its link's reactor side (``DeviceClientFactory``), in the reactor thread."""

    @property
    def address(self) -> str:
        """``'host:port'``, for messages and taps."""

    def resume_reading(self, generation: Generation) -> None:
        """Read connection ``generation`` again (callers drained input below half the limit)."""

    def reconnect(self, generation: Generation, why: str) -> None:
        """Abort connection ``generation`` and make a new one."""


class Bridge:
    """One link's connection snapshot, input buffer and writer, shared by the reactor and callers.

    Methods under "reactor side" are called in the reactor thread only;
    the others in any thread. One caller at a time reads (``TCPInterface``
    serialises its callers; reactor code uses ``when_frame``).

    Parameters
    ----------
    reactor :
        The reactor the link lives in (``post`` hands work to its thread).
    link : Link
        The reactor side: ``resume_reading(generation)`` is posted when a
        caller drained input below half the ``input_limit`` after the
        reactor paused reading; ``reconnect(generation, why)`` when a frame went
        over its maximum length.
    input_limit : int
        Buffered bytes above which the reactor stops reading the connection
        while nobody waits for input (TCP flow control then holds the device
        back). While a caller waits for a frame, reading goes on: the input
        is that caller's reply, up to the frame's maximum length.

    Attributes
    ----------
    generation : Generation
        The current connection's number (whose input is accepted and which
        may be written to), 0 while there is none. Written under the lock;
        read anywhere (a plain attribute: queries read it on their way in).
    stats : LinkStats
        The link's counters, guarded by this bridge's lock.
    """

    # One bridge per interface, and a process may hold a thousand: slots keep each small
    # (an instance dict with this many attributes no longer shares its keys, ~1.5 KB).
    __slots__ = ('_reactor', '_link', 'input_limit', '_lock', '_changed', 'stats', 'generation',
                 '_sock', '_transport', '_poller', '_readable', '_owned', '_reactor_reading',
                 '_reactor_stopped', '_hand_back', '_recheck', '_released_at', '_pause',
                 '_ever_connected', '_error', '_closed', '_failures', '_state', '_delay', '_data',
                 '_paused', '_waiting_frame', '_read_awaited', '_reader', '_signal')

    def __init__(self, reactor, link: Link, input_limit: int) -> None:
        self._reactor = reactor
        self._link = link
        self.input_limit = input_limit
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.stats = LinkStats(self._lock)
        self.generation: Generation = 0  # see Attributes
        self._sock: socket.socket | None = None   # the connection's socket, while callers may use it
        # Input ownership (see the module): the transport whose input callers may own,
        # and how it stands.
        self._transport: Any = None
        self._poller: Any = None                # select.poll on the socket (no descriptor of its own)
        # The connection whose socket a caller may read itself (open, and its transport
        # can give its input up), 0 if none: one attribute for a query to check.
        self._readable: Generation = 0
        self._owned = False                     # a caller reads the socket itself now
        self._reactor_reading = False           # the reactor's read under way
        self._reactor_stopped = False           # the reactor stopped watching the socket
        self._hand_back: Any = None             # the reactor's timer to take the input back
        self._recheck = _HAND_BACK_MIN           # its next interval while the link stays busy
        self._released_at = 0.0                 # when the last caller gave the input up
        self._pause = _HAND_BACK_MIN / _HAND_BACK_FACTOR  # usual pause between calls (moving average)
        self._ever_connected = False
        # Why there is no connection: readers get it once the buffered input is taken.
        self._error: ConnectionError = NotConnected('not connected')
        self._closed = False
        self._failures = 0                      # failed connection attempts so far
        self._state = 'idle'                    # the link's state, as last published
        self._delay = 0.0                       # the next background retry's delay, as last published
        self._data = bytearray()
        self._paused = False                    # the reactor stopped reading (input_limit)
        self._waiting_frame: Frame | None = None  # a caller's frame, while it waits
        self._read_awaited = False              # a caller waits for the reactor's read under way to land
        self._reader: tuple[Frame, Deferred] | None = None  # reactor code's frame and Deferred
        self._signal: _ReadySignal | None = None  # for select() on comm, made on first use

    # -- snapshot (any thread) --------------------------------------------

    @property
    def connected(self) -> bool:
        return self.generation != 0

    @property
    def ever_connected(self) -> bool:
        return self._ever_connected

    def snapshot(self) -> dict:
        """The link's state as callers see it: for ``TCPInterface.stats``."""
        values = self.stats.as_dict()
        with self._lock:
            values.update(state=self._state, connected=self.generation != 0,
                          buffered=len(self._data), reading_paused=self._paused,
                          input_limit=self.input_limit, reconnect_delay=self._delay)
        return values

    def post(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` in the reactor thread, soon (thread-safe; also before the reactor runs)."""
        self._reactor.callFromThread(fn, *args)

    # -- reactor side -----------------------------------------------------

    def publish_state(self, state: str, delay: float) -> None:
        """Record the link's state (``LinkState.value``) and retry delay, for callers to read."""
        with self._lock:
            self._state = state
            self._delay = delay

    def connection_up(self, generation: Generation, sock: socket.socket, transport: Any = None) -> None:
        """A new connection, ``generation``, carries the link; ``sock`` is its socket.

        ``transport``, an ``OwnedClient``, lets callers own its input while
        they wait for a reply (any other transport: the reactor reads all).
        Input left from a previous connection answers requests that are gone:
        it is dropped (and counted) rather than handed to the next reader.
        """
        with self._lock:
            self._sock = sock
            if transport is not None and hasattr(transport, 'gate'):
                transport.gate = self
                self._transport = transport
                self._poller = select.poll()
                self._poller.register(sock.fileno(), _POLL_IN)
                self._readable = generation
            else:
                self._readable = 0
            self.generation = generation
            self._ever_connected = True
            self.stats.stale_bytes_dropped += len(self._data)
            self._data.clear()
            self._paused = False
            self._sync_signal()
            self._changed.notify_all()

    def connection_down(self, generation: Generation, error: ConnectionError) -> None:
        """Connection ``generation`` is gone (or discarded): readers get what is buffered, then ``error``.

        News about any other connection than the current one is ignored.
        """
        with self._lock:
            if generation != self.generation or generation == 0:
                return
            self._go_down(error)
            fire = self._detach_reader()
        if fire is not None:
            fire()

    def attempt_failed(self, error: ConnectionError) -> None:
        """A connection attempt failed: callers waiting for a connection get ``error``."""
        with self._lock:
            self._failures += 1
            if self.generation == 0:
                self._error = error
            self._changed.notify_all()
            fire = self._detach_reader()
        if fire is not None:
            fire()

    def feed(self, generation: Generation, data: bytes) -> bool:
        """Append ``data`` received on connection ``generation``; wake a reader whose frame is complete.

        Input of any other connection (late input of one that was
        discarded) is refused and counted as dropped.

        Returns
        -------
        bool
            Whether buffered input is now above ``input_limit`` while nobody
            waits for it: the reactor must stop reading.
        """
        with self._lock:
            if generation != self.generation or generation == 0:
                self.stats.stale_bytes_dropped += len(data)
                return False
            self.stats.bytes_in += len(data)
            buffered = self._data
            buffered += data
            if self._signal is not None:
                self._sync_signal()
            frame = self._waiting_frame
            fire = None
            if frame is not None:
                try:
                    if frame.ready(buffered):
                        self._changed.notify_all()
                except FrameTooLong as exc:
                    fire = self._frame_too_long(exc)
            if self._reader is not None:
                fire = self._detach_reader()
            pause = (not self._paused and len(buffered) > self.input_limit
                     and self._waiting_frame is None and self._reader is None)
            if pause:
                self._paused = True
        if fire is not None:
            fire()
        return pause

    def when_frame(self, frame: Frame) -> Deferred:
        """Return a Deferred that fires with the next complete ``frame`` (reactor code's ``take``).

        It fails with the connection's error if the connection goes first.
        Cancelling it stops the wait and leaves the input in place.

        Raises
        ------
        RuntimeError
            Reactor code is already waiting for a frame on this link.
        """
        def cancel(d: Deferred) -> None:
            with self._lock:
                if self._reader is not None and self._reader[1] is d:
                    self._reader = None
        d: Deferred[bytes] = Deferred(cancel)
        with self._lock:
            if self._reader is not None:
                raise RuntimeError('reactor code is already waiting for a frame on this link')
            self._reader = (frame, d)
            fire = self._detach_reader()
            if self._reader is not None and self._paused:
                self._resume()
        if fire is not None:
            fire()
        if self._reader is not None:
            self._take_back(self._transport)  # its frame comes through the reactor: read now
        return d

    def close(self, error: ConnectionError) -> None:
        """The link is closed for good (or the reactor is stopping): every wait ends with ``error``."""
        with self._lock:
            self._closed = True
            self._go_down(error)
            fire = self._detach_reader()
            signal, self._signal = self._signal, None
        if signal is not None:
            signal.close()
        if fire is not None:
            fire()

    # -- callers (any thread) ---------------------------------------------

    def failures(self) -> int:
        """How many connection attempts failed so far (see ``wait_connected``)."""
        return self._failures

    def wait_connected(self, failures_before: int, deadline: float, pump: Pump | None) -> Generation:
        """Wait for a connection; return its generation.

        Parameters
        ----------
        failures_before : int
            ``failures()`` read before the connection was requested: an
            attempt that fails after that ends the wait.
        deadline : float
            A ``time.monotonic()`` value.
        pump : callable or None
            How to wait when the caller must turn the reactor itself.

        Raises
        ------
        NotConnected
            The attempt failed, or the link is closed.
        DeviceTimeout
            No connection by ``deadline``.
        """
        with self._lock:
            while True:
                if self.generation:
                    return self.generation
                if self._closed or self._failures != failures_before:
                    raise _fresh(self._error)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeviceTimeout(f'no connection within the timeout ({self._state})')
                self._wait(remaining, pump)

    def take(self, frame: Frame, deadline: float, pump: Pump | None) -> bytes:
        """Wait until ``frame`` is complete in the input, remove it and return it.

        Input buffered before the connection went is returned first; then
        the connection's error is raised.

        While it waits, the caller owns the connection's input and reads the
        socket itself (see the module); a caller that turns the reactor
        itself (``pump``), or a connection whose transport cannot give its
        input up, waits for the reactor to read instead.

        Raises
        ------
        DeviceTimeout
            No complete frame by ``deadline`` (the partial input stays buffered).
        DeviceDisconnected
            The frame went over its maximum length: the connection was dropped.
        ConnectionError
            The connection is gone (or never was) and no complete frame is buffered.
        """
        if pump is None and self._transport is not None:
            data = self._take_owned(frame, deadline)
            if data is not None:
                return data
        with self._lock:
            try:
                while True:
                    data = self._extract(frame)
                    if data is not None:
                        return data
                    if self.generation == 0:
                        raise _fresh(self._error)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise DeviceTimeout(f'no complete reply within the timeout '
                                            f'({len(self._data)} bytes buffered)')
                    self._waiting_frame = frame
                    if self._paused:
                        self._resume()  # a reply longer than the limit must be able to complete
                    self._wait(remaining, pump)
            finally:
                self._waiting_frame = None

    def query(self, request: bytes, frame: Frame, deadline: float, generation: Generation) -> bytes | None:
        """Write ``request`` on connection ``generation``, then read its reply (a ``frame``) owning the input.

        The usual query, for a caller that does not turn the reactor itself.
        Under one hold of the lock, input waiting from before the request is
        dropped, the request written and the input taken over; then the reply
        is read as ``take`` reads a frame, and the query counted
        (``queries``). Little runs between this call and its request leaving:
        an agent that polls a device every few milliseconds runs this on cold
        caches, where each object touched shows in the latency. The
        bookkeeping runs after the request has left, while the device
        answers.

        Returns
        -------
        bytes or None
            The reply. None, with not a byte sent, when the connection is not
            ``generation`` any more, its transport cannot give its input up,
            or the socket refused the request: the caller then writes the
            general way (``write``, then ``take``).

        Raises
        ------
        WriteFailed
            The socket took the request only in part and the rest could not be written.
        DeviceTimeout
            The device took not all of the request, or sent no complete reply, by ``deadline``.
        ConnectionError
            As ``take``.
        """
        lock = self._lock
        try:
            with lock:
                # Input from before the request is no reply: what is buffered, what a read
                # of the reactor under way holds, what waits in the socket (the reactor may
                # not watch it, or be busy). In the usual case that costs one poll.
                if (generation != self._readable or self._reactor_reading or self._data or self._paused
                        or self._poller.poll(0)):
                    if generation != self._readable:
                        return None
                    if self._reactor_reading:
                        self._await_read_done(deadline)  # its input lands in the buffer first
                    self._drop_stale()
                    if generation != self._readable:
                        return None
                # Open while _readable names this connection (socket_closing clears both).
                sock: socket.socket = self._sock  # type: ignore[assignment]
                try:
                    sent = sock.send(request)
                except OSError:  # full (BlockingIOError) or broken: nothing left
                    return None
                # The request is out: the input is this caller's until it is given up, on
                # every way out (see the handler below). What follows runs while the device
                # answers.
                self._owned = True
                self.stats.bytes_out += sent
                self._note_call()
                poller = self._poller
                tapped = tap.taps
            if tapped:
                # Told once it left: this caller reads the reply, so it is told after this.
                tap.notify_sent(self._link.address, request)
            rest = memoryview(request)[sent:] if sent < len(request) else None
            return self._read_owned(frame, deadline, generation, sock, poller, True, rest)
        except BaseException:
            # Ctrl-C, a tap's error, ...: the input must not stay owned, or the reactor
            # would never read the link again. Cleared before any call: Python handles a
            # pending signal on entry to a function. (Only this caller sets it: callers
            # take turns.)
            if self._owned:
                with lock:
                    self._owned = False
                    self._gave_up()
            raise

    def _take_owned(self, frame: Frame, deadline: float) -> bytes | None:
        """``take`` reading the socket itself; None: its input cannot be owned now (closing, a plain transport)."""
        lock = self._lock
        try:
            with lock:
                data = self._extract(frame)
                if data is not None:
                    return data
                generation = self.generation
                if generation == 0:
                    raise _fresh(self._error)
                if self._reactor_reading:
                    return self._await_reactor_read(frame, deadline)
                if generation != self._readable:
                    return None  # the reactor reads (and tells the connection's end)
                sock: socket.socket = self._sock  # type: ignore[assignment]  # open: see query
                poller = self._poller
                self._owned = True
                self._note_call()
            return self._read_owned(frame, deadline, generation, sock, poller, False)
        except BaseException:
            if self._owned:  # as in query
                with lock:
                    self._owned = False
                    self._gave_up()
            raise

    def _note_call(self) -> None:
        """A call takes the input over now (lock held): the usual pause between calls, a moving average."""
        self._pause += (min(time.monotonic() - self._released_at, _HAND_BACK_MAX) - self._pause) / 8

    def _read_owned(self, frame: Frame, deadline: float, generation: Generation, sock: socket.socket,
                    poller: Any, query: bool, rest: memoryview | None = None) -> bytes:
        """Read ``frame`` from ``sock`` with the input taken over (lock not held), then give the input up.

        ``query``: the frame answers a query (counted). ``rest``: the part of
        its request still to be written first. Input already read is buffered.
        """
        lock = self._lock
        try:
            if rest is not None:
                try:
                    self.write(generation, rest, deadline)
                except DeviceTimeout:
                    raise
                except DeviceDisconnected as exc:
                    raise WriteFailed(*exc.args) from exc
            while True:
                chunk = b''
                data = None
                with lock:
                    if self._readable != generation:
                        data = self._extract(frame)
                        if data is not None:
                            return data
                        if self.generation == generation:  # the socket is closing: its news follows
                            self._changed.wait(max(0.0, deadline - time.monotonic()))
                            if self.generation == generation:
                                raise DeviceTimeout('no complete reply within the timeout (closing)')
                        raise _fresh(self._error)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise DeviceTimeout(f'no complete reply within the timeout '
                                            f'({len(self._data)} bytes buffered)')
                poller.poll(remaining * 1000.0 + 1.0)  # ms, rounded up: never wake before the deadline
                with lock:
                    if self._readable == generation:
                        try:
                            chunk = sock.recv(_RECV_SIZE)
                        except OSError as exc:
                            self._read_failed(generation, exc)
                        else:
                            data = self._received(chunk, frame, generation, query)
                            if data is not None and not tap.taps:
                                self._owned = False
                                self._gave_up()
                                return data
                if chunk and tap.taps:
                    # Told outside the lock (a tap is anybody's code) while the input is still
                    # this caller's: nothing the reactor reads next can come before it.
                    tap.notify_received(self._link.address, chunk)
                if data is not None:
                    with lock:
                        self._owned = False
                        self._gave_up()
                    return data
        finally:
            if self._owned:  # as in query: cleared before any call
                with lock:
                    self._owned = False
                    self._gave_up()

    def _received(self, chunk: bytes, frame: Frame, generation: Generation, query: bool) -> bytes | None:
        """What a caller that owns the input read (lock held): the ``frame`` once complete, else None.

        ``chunk`` empty: the device closed the connection. ``query``: the frame
        answers a query (counted). The caller gives the input up.
        """
        if not chunk:
            self._lost_while_owned(generation, 'the device closed it')
            return None
        self.stats.bytes_in += len(chunk)
        # A reply that arrives whole into an empty buffer skips the buffer.
        data = None if self._data else frame.whole(chunk)
        if data is None:
            self._data += chunk
            data = self._extract(frame)  # also keeps the select signal in step
        if data is not None and query:
            self.stats.queries += 1
        return data

    def _read_failed(self, generation: Generation, exc: OSError) -> None:
        """A caller's recv failed (lock held): nothing to read yet, or the connection is lost."""
        if not isinstance(exc, BlockingIOError):
            self._lost_while_owned(generation, f'read failed: {exc}')

    def _gave_up(self) -> None:
        """The caller has just given the input up (lock held; it cleared ``_owned`` itself, first)."""
        self._released_at = time.monotonic()
        if self._reactor_stopped and (self._signal is not None or self._reader is not None):
            # Something waits for the reactor to read (select on comm, reactor code): at once.
            self.post(self._take_back, self._transport)

    def _await_reactor_read(self, frame: Frame, deadline: float) -> bytes:
        """A caller wants the input while the reactor's read is under way (lock held).

        That read's input goes into the buffer first; then the caller reads
        on its own (``take`` again), so nothing is reordered.
        """
        self._await_read_done(deadline, frame)
        self._lock.release()
        try:
            return self.take(frame, deadline, None)
        finally:
            self._lock.acquire()

    def _await_read_done(self, deadline: float, frame: Frame | None = None) -> None:
        """Wait (lock held) until the reactor's read under way has buffered its input.

        ``frame``: the reply that input may complete (``feed`` checks it);
        None: that input came before a request, and is stale.

        Raises
        ------
        DeviceTimeout
            It did not by ``deadline``.
        """
        self._waiting_frame = frame
        self._read_awaited = True  # reactor_read_done wakes us
        try:
            while self._reactor_reading:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeviceTimeout('no complete reply within the timeout (the reactor was reading)')
                self._changed.wait(remaining)
        finally:
            self._waiting_frame = None
            self._read_awaited = False

    def _extract(self, frame: Frame) -> bytes | None:
        """``frame`` out of the buffer, or None (lock held); past its maximum length, the connection ends.

        Raises
        ------
        DeviceDisconnected
            The frame went over its maximum length.
        """
        try:
            data = frame.extract(self._data)
        except FrameTooLong as exc:
            fire = self._frame_too_long(exc)
            if fire is not None:
                self.post(fire)  # a Deferred fires in the reactor thread only
            raise _fresh(self._error) from None
        if data is not None:
            if self._signal is not None:
                self._sync_signal()
            if self._paused and len(self._data) <= self.input_limit // 2:
                self._resume()
        return data

    # -- input ownership: the transport's side (reactor thread) ------------------

    def reactor_may_read(self, transport: Any) -> bool:
        """Whether ``transport``'s ``doRead`` may read; False: a caller owns the input (reading stops)."""
        with self._lock:
            if transport is not self._transport or not self._owned:
                self._reactor_reading = True
                return True
            self._reactor_stopped = True
            if self._hand_back is None:
                self._hand_back = self._reactor.callLater(self._hand_back_delay(), self._hand_back_due)
            return False

    def reactor_read_done(self) -> None:
        """The read ``reactor_may_read`` allowed is over: its input is buffered."""
        with self._lock:
            self._reactor_reading = False
            if self._owned or self._read_awaited:
                self._changed.notify_all()

    @contextmanager
    def socket_closing(self, transport: Any) -> Iterator[None]:
        """Held while ``transport`` closes its socket: no caller is using it meanwhile.

        A caller polling it is woken first (its connection's news follows).
        """
        with self._lock:
            if transport is self._transport and self._sock is not None:
                sock, self._sock = self._sock, None
                self._readable = 0
                if self._owned:
                    _shutdown(sock)
                self._changed.notify_all()
            yield

    def _take_back(self, transport: Any) -> None:
        """Have the reactor read ``transport`` again, if no caller owns its input (reactor thread)."""
        with self._lock:
            if transport is None or transport is not self._transport or self._owned:
                return
            if not self._reactor_stopped:
                return
            self._reactor_stopped = False
            paused = self._paused
        if not paused:
            # FileDescriptor.resumeProducing: startReading (reactor.addReader) unless disconnecting.
            transport.resumeProducing()

    def _hand_back_due(self) -> None:
        """The reactor's timer: take the input back once the link has been idle long enough."""
        with self._lock:
            self._hand_back = None
            if not self._reactor_stopped or self._transport is None:
                return
            delay = self._hand_back_delay()
            wait = delay if self._owned else self._released_at + delay - time.monotonic()
            if wait > 0:
                self._recheck = min(self._recheck * 2, _RECHECK_MAX)
                self._hand_back = self._reactor.callLater(max(wait, self._recheck), self._hand_back_due)
                return
            self._recheck = _HAND_BACK_MIN
            transport = self._transport
        self._take_back(transport)

    def _hand_back_delay(self) -> float:
        return min(max(_HAND_BACK_FACTOR * self._pause, _HAND_BACK_MIN), _HAND_BACK_MAX)

    def _drain(self) -> int:
        """Read and count what waits in the socket's buffer (lock held; nobody else reads it now)."""
        sock, generation, drained = self._sock, self.generation, 0
        if self._poller is None or not self._poller.poll(0):
            return 0  # the usual case, without a failing recv
        while sock is not None:
            try:
                chunk = sock.recv(_RECV_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                self._lost_while_owned(generation, f'read failed: {exc}')
                break
            if not chunk:
                self._lost_while_owned(generation, 'the device closed it')
                break
            self.stats.bytes_in += len(chunk)
            drained += len(chunk)
        return drained

    def _lost_while_owned(self, generation: Generation, why: str) -> None:
        """The caller found its connection gone (lock held): fail now; let the reactor see it too."""
        transport = self._transport
        error = DeviceDisconnected(f'connection to {self._link.address} lost: {why}')
        self._go_down(error)
        # The reactor stopped reading this socket: reading again, it finds the
        # end itself and the link reconnects as after any lost connection.
        self.post(_read_again, transport)

    def write(self, generation: Generation, data: bytes | memoryview, deadline: float,
              pump: Pump | None = None) -> int:
        """Write every byte of ``data`` to connection ``generation``; return the count.

        Waits for a device that stops reading until ``deadline``. For
        callers' threads only: reactor code writes to its transport.

        Raises
        ------
        DeviceDisconnected
            That connection is gone (or was replaced), or the write failed.
        DeviceTimeout
            The device did not take the data by ``deadline``.
        """
        view = memoryview(data)
        while True:
            with self._lock:
                writer = self._sock
                if generation != self.generation or writer is None:
                    raise DeviceDisconnected(f'connection lost before the write: {self._error}')
                try:
                    sent = writer.send(view)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    raise DeviceDisconnected(f'write failed: {exc}') from exc
                if sent:
                    self.stats.bytes_out += sent
                    view = view[sent:]
                if not view:
                    return len(data)
                fd = writer.fileno()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeviceTimeout(f'the device did not accept {len(view)} bytes within the timeout')
            # Bounded slices: the connection may go (and its descriptor be
            # reused) while we wait; the next turn of the loop notices.
            if pump is not None:
                pump(min(remaining, _WRITE_SLICE))
            else:
                _wait_writable(fd, min(remaining, _WRITE_SLICE))

    def wait_closed(self, deadline: float) -> bool:
        """Wait until the link is closed, at most until ``deadline``; return whether it is."""
        with self._lock:
            while not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def discard(self, generation: Generation, error: ConnectionError) -> None:
        """Stop using connection ``generation`` at once; drop its input; readers get ``error``.

        Called by a caller whose request on that connection timed out: a
        late reply must never answer a later request. The caller then asks
        the reactor to drop the connection itself.

        Its input is dropped and counted.
        """
        with self._lock:
            if generation != self.generation or generation == 0:
                return
            self.stats.stale_bytes_dropped += len(self._data)
            self._data.clear()
            self._go_down(error)
            fire = self._detach_reader()
        if fire is not None:
            self.post(fire)  # a Deferred fires in the reactor thread, never in a caller's

    def drop_stale(self, deadline: float) -> int:
        """Drop the input that came before a request about to be written; return how many bytes.

        That is what is buffered, what the reactor's read under way holds
        (waited for, until ``deadline``), and what waits in the socket while
        nobody reads it. Counted as dropped.

        Raises
        ------
        DeviceTimeout
            The reactor's read under way did not land by ``deadline``.
        """
        with self._lock:
            if self._reactor_reading:
                self._await_read_done(deadline)
            return self._drop_stale()

    def clear(self) -> int:
        """Drop all buffered input (counted as dropped); return how many bytes were dropped."""
        if not self._data and not self._paused and not self._reactor_stopped:
            return 0  # the common case before a request; input arriving now is no older than it
        with self._lock:
            return self._drop_stale()

    def __len__(self) -> int:
        return len(self._data)

    def fileno(self) -> int:
        """A descriptor that ``select`` reports readable while input waits, or the connection is gone.

        A dead socket is readable too (its ``recv`` fails): drivers that
        poll ``comm`` before reading then get the error from the read.

        Raises
        ------
        NotConnected
            The link is closed.
        """
        with self._lock:
            if self._closed:
                raise NotConnected(f'the link is closed: {self._error}')
            if self._signal is None:
                self._signal = _ReadySignal()
                self._sync_signal()
                if self._reactor_stopped and not self._owned:
                    self.post(self._take_back, self._transport)  # input in the kernel must show
            return self._signal.fileno()

    # -- internals (lock held) --------------------------------------------

    def _wait(self, remaining: float, pump: Pump | None) -> None:
        """Sleep until notified or ``remaining`` seconds pass (re-checking is the caller's loop)."""
        if pump is None:
            self._changed.wait(remaining)
            return
        self._lock.release()  # the reactor code that the pump runs takes the lock
        try:
            pump(remaining)
        finally:
            self._lock.acquire()

    def _drop_stale(self) -> int:
        """``clear``, with the lock held."""
        dropped = len(self._data)
        if not self._owned and not self._reactor_reading:
            dropped += self._drain()  # nobody reads the socket now: what waits there is stale too
        if dropped:
            self.stats.stale_bytes_dropped += dropped
            self._data.clear()
            self._sync_signal()
        if self._paused:
            self._resume()
        return dropped

    def _go_down(self, error: ConnectionError) -> None:
        """No connection from now on; a caller polling its socket is woken (``shutdown``)."""
        sock, self._sock = self._sock, None
        if sock is not None and self._owned:
            _shutdown(sock)
        self.generation = 0
        self._readable = 0
        self._transport = None
        self._poller = None
        self._reactor_stopped = False
        self._error = error
        self._paused = False
        self._sync_signal()
        self._changed.notify_all()

    def _resume(self) -> None:
        """Have the reactor read again (it paused at ``input_limit``)."""
        self._paused = False
        self.post(self._link.resume_reading, self.generation)  # callFromThread: safe under our lock

    def _frame_too_long(self, exc: FrameTooLong) -> Callable[[], None] | None:
        """A frame a reader waits for went over its maximum length: end this connection.

        Its input is dropped, readers get an error naming the limit, and the
        reactor is asked to abort the connection (``post`` from any thread,
        so the reactor's read that got here returns first). Returns what
        fires reactor code's reader, as ``_detach_reader``.
        """
        generation = self.generation
        why = (f'a reply from {self._link.address} went over the maximum frame length '
               f'(max_frame_length={exc.max_length} bytes)')
        self.stats.error_held(why)
        self.stats.stale_bytes_dropped += len(self._data)
        self._data.clear()
        self._go_down(DeviceDisconnected(f'{why}: connection dropped'))
        self.post(self._link.reconnect, generation, why)
        return self._detach_reader()

    def _detach_reader(self) -> Callable[[], None] | None:
        """Detach reactor code's reader if its frame is complete or the connection is gone.

        Returns what fires its Deferred, to be called once the lock is
        released (its callbacks may well call back into this bridge).
        """
        if self._reader is None:
            return None
        frame, d = self._reader
        try:
            data = frame.extract(self._data)
        except FrameTooLong as exc:
            self._reader = None  # ends below, with the error
            self._frame_too_long(exc)
            error = self._error
            return lambda: d.errback(error)
        if data is None and self.generation != 0 and not self._closed:
            return None
        self._reader = None
        self._sync_signal()
        if data is not None:
            return lambda: d.callback(data)
        error = self._error
        return lambda: d.errback(error)

    def _sync_signal(self) -> None:
        if self._signal is not None:
            self._signal.set(bool(self._data) or (self.generation == 0 and self._ever_connected))


class _ReadySignal:
    """A socket pair whose read end is readable exactly while ``set(True)`` holds."""

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._on = False

    def fileno(self) -> int:
        return self._read.fileno()

    def set(self, on: bool) -> None:
        if on == self._on:
            return
        try:
            if on:
                self._write.send(b'\0')
            else:
                self._read.recv(16)
        except OSError:  # the pair was closed under us: nothing left to signal
            return
        self._on = on

    def close(self) -> None:
        self._read.close()
        self._write.close()


def _shutdown(sock: socket.socket) -> None:
    """End both directions of ``sock`` (a thread polling it wakes up); its owner closes it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _read_again(transport: Any) -> None:
    """Reactor thread: watch ``transport``'s socket again (``startReading`` is ``reactor.addReader``)."""
    if transport is not None and transport.connected and not transport.disconnecting:
        transport.startReading()


def _fresh(error: ConnectionError) -> ConnectionError:
    """A new exception like ``error``: one stored error raised again and again would grow its traceback."""
    return type(error)(*error.args)


def _wait_writable(fd: int, timeout: float) -> None:
    """Wait until ``fd`` can take more data or ``timeout`` passes (any descriptor number)."""
    with selectors.PollSelector() as selector:  # poll(): no limit at descriptor 1024, no fd of its own
        try:
            selector.register(fd, selectors.EVENT_WRITE)
        except (ValueError, OSError):
            return  # closed under us: the caller's next turn says so
        selector.select(timeout)
