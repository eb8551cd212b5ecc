"""The input buffer shared by the reactor (which fills it) and callers (who drain it)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable

from twisted.internet.defer import Deferred

from socs_tcp.errors import DeviceTimeout, NotConnected


class InputBuffer:
    """Bytes received from the device and not yet handed to a caller.

    ``feed`` runs in the reactor thread; ``take`` blocks a worker thread until
    a frame is there; ``when_frame`` is its Deferred twin for reactor code.
    One reader waits at a time (the interface serialises its callers).

    While the connection is down the buffer keeps what was received, and a
    reader gets that first, then the error that ended the connection.

    ``fileno`` gives a descriptor that ``select.select`` reports readable
    exactly while unread input is waiting, for drivers that poll ``comm``.

    Parameters
    ----------
    lock : threading.Lock
        Guards the buffer; the owner shares it with its own connection state.
    """

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._data = bytearray()
        self._error: ConnectionError | None = NotConnected('not connected')
        self._source: object | None = None  # the connection whose input is accepted
        # The one waiting reader: its frame and how to wake it.
        self._frame = None
        self._wake_thread = threading.Lock()
        self._wake_thread.acquire()
        self._deferred: Deferred | None = None
        # select() support, made on first use: one byte sits in the pair
        # exactly while self._data is not empty.
        self._pair: tuple[socket.socket, socket.socket] | None = None
        self._signalled = False

    # -- reactor side -----------------------------------------------------

    def feed(self, data: bytes, source: object) -> bool:
        """Append ``data`` from ``source`` and wake the reader if its frame is complete.

        Input from anything but the connection the buffer listens to (one that
        was discarded after a timeout) is refused, under the same lock that
        ``discard`` takes, so a late reply can never slip in.

        @return: whether the input was accepted.
        """
        fire = None
        with self._lock:
            if source is not self._source:
                return False
            self._data += data
            self._sync_signal()
            frame = self._frame
            if frame is not None and frame.ready(self._data):
                fire = self._wake_locked()
        if fire is not None:
            fire()
        return True

    def connection_up(self, source: object) -> int:
        """Listen to a new connection, ``source``; forget the old one's input and error.

        Input left from a previous connection answers requests that are gone,
        so it is dropped rather than handed to the next reader.

        @return: the number of bytes dropped.
        """
        with self._lock:
            self._source = source
            self._error = None
            dropped = len(self._data)
            self._data.clear()
            self._sync_signal()
            return dropped

    def connection_down(self, source: object | None, error: ConnectionError) -> None:
        """``source`` is gone (None: whatever was listened to): readers get what is buffered, then ``error``."""
        fire = None
        with self._lock:
            if source is not None and source is not self._source and self._source is not None:
                return  # an older connection's news
            self._source = None
            self._error = error
            if self._frame is not None:
                fire = self._wake_locked()
        if fire is not None:
            fire()

    def discard(self, source: object, error: ConnectionError) -> int:
        """Stop listening to ``source`` and drop its input; readers get ``error``.

        @return: the number of bytes dropped.
        """
        with self._lock:
            if source is not self._source:
                return 0
            self._source = None
            self._error = error
            dropped = len(self._data)
            self._data.clear()
            self._sync_signal()
            return dropped

    # -- caller side ------------------------------------------------------

    def take(self, frame, deadline: float) -> bytes:
        """Block until ``frame`` is complete and return it.

        @param deadline: a ``time.monotonic()`` value.
        @raise DeviceTimeout: no complete frame by ``deadline``.
        @raise ConnectionError: the connection is down and no complete frame is buffered.
        """
        with self._lock:
            while True:
                data = frame.extract(self._data)
                if data is not None:
                    self._sync_signal()
                    return data
                if self._error is not None:
                    raise self._error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeviceTimeout(f'no complete reply within the timeout ({len(self._data)} bytes buffered)')
                self._wait(frame, remaining)

    def when_frame(self, frame) -> Deferred:
        """Return a Deferred that fires with the next complete ``frame``.

        Cancelling it stops the wait and leaves the input in place.
        """
        def cancel(d: Deferred) -> None:
            with self._lock:
                if self._deferred is d:
                    self._frame = self._deferred = None
        d = Deferred(cancel)
        with self._lock:
            self._check_no_reader()
            data = frame.extract(self._data)
            if data is None and self._error is None:
                self._frame, self._deferred = frame, d
                return d
            self._sync_signal()
            error = self._error
        if data is not None:
            d.callback(data)
        else:
            d.errback(error)
        return d

    def clear(self) -> int:
        """Drop all buffered input; return how many bytes were dropped."""
        with self._lock:
            dropped = len(self._data)
            self._data.clear()
            self._sync_signal()
            return dropped

    def __len__(self) -> int:
        return len(self._data)

    def fileno(self) -> int:
        """A descriptor readable exactly while input is waiting (for ``select``)."""
        with self._lock:
            if self._pair is None:
                self._pair = socket.socketpair()
                for s in self._pair:
                    s.setblocking(False)
                self._sync_signal()
            return self._pair[0].fileno()

    def close(self) -> None:
        """Release the ``select`` descriptor pair, if one was made."""
        with self._lock:
            pair, self._pair, self._signalled = self._pair, None, False
        if pair is not None:
            for s in pair:
                s.close()

    # -- internals (called with the lock held) ----------------------------

    def _check_no_reader(self) -> None:
        if self._frame is not None:
            raise RuntimeError('another read is already waiting on this connection')

    def _wait(self, frame, remaining: float) -> None:
        """Sleep until fed, disconnected or ``remaining`` seconds pass; re-take the lock."""
        self._check_no_reader()
        self._frame = frame
        self._lock.release()
        try:
            self._wake_thread.acquire(timeout=remaining)
        finally:
            self._lock.acquire()
            if self._frame is frame:  # timed out: nobody woke us
                self._frame = None

    def _wake_locked(self) -> Callable[[], None] | None:
        """Detach the waiting reader; return what wakes it (to call without the lock).

        A thread is woken at once (it re-checks the buffer itself); a Deferred
        gets its frame, or the connection's error, once the lock is released,
        since its callbacks may well call back into this buffer.
        """
        frame, self._frame = self._frame, None
        d, self._deferred = self._deferred, None
        if d is None:
            self._wake_thread.release()
            return None
        data = frame.extract(self._data)
        self._sync_signal()
        if data is not None:
            return lambda: d.callback(data)
        error = self._error
        return lambda: d.errback(error)

    def _sync_signal(self) -> None:
        if self._pair is None:
            return
        want = len(self._data) > 0
        if want == self._signalled:
            return
        try:
            if want:
                self._pair[1].send(b'\0')
            else:
                self._pair[0].recv(16)
        except OSError:
            return
        self._signalled = want
