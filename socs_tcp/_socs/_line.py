"""Line-oriented request/reply links to instruments behind a bridge (a Prologix box, a LAN port).

SOCS's GPIB and SCPI drivers ``write()`` a command and ``read()`` its reply
over a socket of their own. :class:`LineDevice` gives them the same methods on
a :class:`LineLink`, a socs_tcp connection that

- reads one whole ``\\n``-terminated line per ``read()``, within the timeout;
  a reply that ends without a terminator (an instrument that marks the end
  with GPIB's EOI only, or SOCS's test emulator) is returned once the line
  has been quiet for ``reply_quiet`` seconds after its last byte;
- drops input nobody asked for before each request (a reply that came after
  its request timed out);
- after a request went unanswered, drains the line until it has been quiet
  for a while before the next request goes out, on whichever connection: a
  bridge hands an instrument's late reply to the next TCP connection;
- keeps one connection per bridge address in the process: opening one closes
  the other (bridges often take one client; a driver an agent rebuilt after a
  timeout must not keep its old connection);
- re-runs the driver's set-up after every reconnect (``on_reconnect``).

Every failure raises :class:`LinkDown`, both a ``ConnectionError`` and a
``TimeoutError``: SOCS's agents catch it with ``except socket.timeout``
(scpi_psu, tektronix3021c), ``except OSError`` or ``except ConnectionError``
(srs_cg635).
"""

from __future__ import annotations

import os
import select
import threading
import time
import weakref
from collections.abc import Callable
from typing import ClassVar

from twisted.logger import Logger

from socs_tcp import compat
from socs_tcp._errors import DeviceDisconnected
from socs_tcp._interface import ConnectionHandle, TCPInterface

log = Logger(namespace='socs_tcp.line')

Address = tuple[str, int]

_lock = threading.Lock()
_users: dict[Address, weakref.ref] = {}   # bridge address -> the LineLink that last used it
_unanswered: set[Address] = set()        # addresses whose last request got no reply


class LinkDown(DeviceDisconnected, TimeoutError):
    """The instrument could not be reached, or did not answer within the timeout.

    A ``ConnectionError`` (and socs_tcp's ``DeviceDisconnected``) and a
    ``TimeoutError``, so ``except socket.timeout`` catches it too.
    """


def redirected(host: str, port: int) -> Address:
    """Where ``host:port`` really is, after ``SOCS_TCP_REDIRECT`` (drivers with a fixed port)."""
    table = compat.parse_redirects(os.environ.get(compat.REDIRECT_ENV, ''))
    target = table.get((host, port))
    if target is None:
        return host, port
    log.info('{source} redirected to {target} ({env})', source=f'{host}:{port}',
             target='{}:{}'.format(*target), env=compat.REDIRECT_ENV)
    return target


def claim(address: Address, user: object) -> object | None:
    """Make ``user`` the one user of the bridge at ``address`` in this process; return the previous one.

    The previous user's connection is closed first (its ``_rest()``): a
    :class:`LineLink` or a ``socket://`` port reconnects, claiming the bridge
    back, only when it is used again; a Moxa server closes for good.
    """
    with _lock:
        previous = _users.get(address, lambda: None)()
        _users[address] = weakref.ref(user)
    if previous is None or previous is user:
        return None
    previous._rest()
    return previous


def release(address: Address, user: object) -> None:
    """``user`` stopped using the bridge at ``address`` for good."""
    with _lock:
        if _users.get(address, lambda: None)() is user:
            del _users[address]


class LineLink:
    """One instrument's line-oriented link through a bridge (see the module's description).

    Parameters
    ----------
    host, port
        The bridge, before ``SOCS_TCP_REDIRECT``.
    timeout : float
        Seconds each connect, write and read may take.
    quiet : float
        After an unanswered request: how long the line must stay silent
        before the next request goes out.
    reply_quiet : float
        How long the line must stay silent after the last byte of a reply
        without a terminator before that reply is returned.
    on_reconnect : callable, optional
        Run (with no argument) on every connection after the first, before
        anything else is sent on it: the driver's set-up.

    Raises
    ------
    LinkDown
        No connection within ``timeout``.
    """

    def __init__(self, host: str, port: int, timeout: float, *, quiet: float, reply_quiet: float,
                 on_reconnect: Callable[[], None] | None = None) -> None:
        self.address = redirected(host, port)
        self.quiet = quiet
        self.reply_quiet = reply_quiet
        self._held = b''   # input read past the end of the last line returned
        self._on_reconnect = on_reconnect
        self._connections = 0
        self._claim()
        me = weakref.ref(self)   # the interface must not keep this link (and its driver) alive

        def connected(interface: ConnectionHandle) -> None:
            link = me()
            if link is not None:
                link._connected(interface)

        self.interface = TCPInterface(*self.address, timeout, on_connect=connected)
        if not self.interface.connected:
            why = self.interface.stats.get('last_error') or 'refused or unreachable'
            self.interface.close()
            raise LinkDown(f'could not connect to {self._where()} within {timeout} s: {why}')

    def write(self, data: bytes) -> None:
        """Send ``data`` as a new request: unread input is dropped first, nothing else is waited for."""
        self._claim()
        self._held = b''
        with _lock:
            owed = self.address in _unanswered
        try:
            if owed and self.interface.connected:
                # on this connection: a new one drains in its on_connect hook
                self._drain(self.interface)
            self.interface.clear()
            self.interface.send(data)
        except ConnectionError as exc:
            raise self._down(f'writing {data!r}', exc) from None

    def read_line(self) -> bytes:
        """The next reply, within the timeout: a whole line (with its ``\\n``) as soon as it is in.

        A reply without a terminator is returned once no byte has come for
        ``reply_quiet`` seconds; never while bytes keep coming. After a
        request left unanswered, the next request first drains the line, on
        the same connection (an instrument's late reply comes on it; a serial
        or GPIB emulator may take no second connection) or, when it was lost,
        on the new one.
        """
        line, self._held = self._held, b''
        end = time.monotonic() + self.interface.timeout
        try:
            if not line:
                line = self._first_bytes(end)
            last = time.monotonic()
            while (cut := line.find(b'\n')) < 0:
                now = time.monotonic()
                if now - last >= self.reply_quiet:
                    return line   # quiet after the last byte: the whole reply, unterminated
                if now >= end:
                    # bytes never stopped coming: this connection may still
                    # carry the rest, so the next request goes out on a new one
                    self._rest()
                    raise LinkDown(f'{self._where()}: no end of the reply within '
                                   f'{self.interface.timeout} s ({len(line)} bytes so far)')
                comm = self.interface.comm
                if comm is None:
                    raise LinkDown(f'{self._where()}: the connection closed during a reply')
                ready, _, _ = select.select([comm], [], [], min(self.reply_quiet - (now - last), end - now))
                if ready:   # input, or the connection gone: then recv raises
                    line += self.interface.recv(65536)
                    last = time.monotonic()
        except ConnectionError as exc:
            with _lock:
                _unanswered.add(self.address)
            raise self._down('reading a reply', exc) from None
        self._held = line[cut + 1:]
        return line[:cut + 1]

    def _first_bytes(self, end: float) -> bytes:
        """What arrives first, by ``end``; waited for with ``select``, so that the interface
        does not count a timeout (it would send the next request on a new connection)."""
        while (left := end - time.monotonic()) > 0:
            comm = self.interface.comm
            if comm is None:
                raise LinkDown(f'{self._where()}: not connected')
            ready, _, _ = select.select([comm], [], [], left)
            if ready:   # input, or the connection gone: then recv raises
                return self.interface.recv(65536)
        raise LinkDown(f'{self._where()}: no reply within {self.interface.timeout} s')

    def close(self) -> None:
        """Close the connection for good. Idempotent."""
        release(self.address, self)
        self.interface.close()

    # -- internals ---------------------------------------------------------------

    def _claim(self) -> None:
        claim(self.address, self)

    def _rest(self) -> None:
        """Close the connection until this link is used again (another link to the bridge opens)."""
        comm = self.interface.comm
        if comm is not None:
            comm.close()

    def _connected(self, interface: ConnectionHandle) -> None:
        self._connections += 1
        with _lock:
            drain = self.address in _unanswered
        if drain:
            self._drain(interface)
        if self._connections > 1 and self._on_reconnect is not None:
            self._on_reconnect()

    def _drain(self, interface: TCPInterface | ConnectionHandle) -> None:
        """Read and drop input until the line has been quiet for ``quiet`` s (at most ``timeout`` s in all).

        It waits with ``select`` on ``comm``, not with a read that times out:
        such a read would mark this new connection as overdue, to be replaced.
        A connection lost meanwhile raises from ``recv`` (a ``ConnectionError``).
        """
        end = time.monotonic() + interface.timeout
        quiet_since, dropped = time.monotonic(), 0
        while (silent := time.monotonic() - quiet_since) < self.quiet:
            left = end - time.monotonic()
            if left <= 0:
                raise LinkDown(f'{self._where()}: the line did not stay quiet for {self.quiet} s within '
                               f'{interface.timeout} s after an unanswered request')
            ready, _, _ = select.select([interface.comm], [], [], min(self.quiet - silent, left))
            if ready:
                dropped += len(interface.recv(65536))
                quiet_since = time.monotonic()
        with _lock:
            _unanswered.discard(self.address)
        if dropped:
            log.info('{where}: dropped {n} bytes of late replies before the next request',
                     where=self._where(), n=dropped)

    def _down(self, doing: str, exc: ConnectionError) -> LinkDown:
        return exc if isinstance(exc, LinkDown) else LinkDown(f'{self._where()}: {doing}: {exc}')

    def _where(self) -> str:
        return '{}:{}'.format(*self.address)


class LineDevice:
    """``conn_socket``/``write``/``read`` of SOCS's GPIB and SCPI drivers, on a :class:`LineLink`.

    Mixed in before SOCS's class, so its constructor and every other method
    are SOCS's own. ``sock`` is the connection's socket-like ``comm``.
    """

    #: The SOCS class a replacement built on this one stands in for (set by its ``install()``).
    _socs_tcp_replaces: ClassVar[type | None] = None
    #: Seconds a connect, write or read may take (SOCS: ``sock.settimeout(5)``).
    link_timeout = 5.0
    #: Seconds of silence that end the drain after an unanswered request.
    drain_quiet = 1.0
    #: Seconds of silence after the last byte of a reply without a ``\\n`` that end it.
    #: SOCS's Prologix set-up (``++mode 1``, ``++auto 1``; ``++eos`` and ``++eot_enable``
    #: left at their defaults) has the box forward what the instrument sends up to EOI
    #: and add nothing: an instrument that ends a reply with EOI alone gives no ``\\n``,
    #: and SOCS's own ``recv(128)`` never needed one. The pieces of one reply follow each
    #: other within milliseconds (GPIB and the LAN are far faster than that), so 0.2 s of
    #: silence is well past the end of any reply still coming, yet adds little to a
    #: query (SOCS already pauses 0.1 s after each write) and is far below the 5 s timeout.
    reply_quiet = 0.2
    #: Seconds to wait after each write (SOCS's pause, that bridges and instruments rely on).
    write_pause = 0.1

    def link_address(self) -> Address:
        raise NotImplementedError

    def after_reconnect(self) -> None:
        """Set-up to send again on every new connection (none by default)."""

    def conn_socket(self) -> None:
        old = getattr(self, '_link', None)
        if old is not None:
            old.close()
        me = weakref.ref(self)

        def reconnected() -> None:
            device = me()
            if device is not None:
                device.after_reconnect()

        self._link = LineLink(*self.link_address(), self.link_timeout, quiet=self.drain_quiet,
                              reply_quiet=self.reply_quiet, on_reconnect=reconnected)
        self.sock = self._link.interface.comm

    def write(self, msg: str) -> None:
        self._link.write((msg + '\n').encode())
        time.sleep(self.write_pause)

    def read(self) -> str:
        line = self._link.read_line()
        try:
            return line.decode().strip()
        except UnicodeDecodeError:
            # line noise is no reading: fail as the agents expect a failure
            raise LinkDown(f'{self._link._where()}: a reply that is not text: {line!r}') from None
