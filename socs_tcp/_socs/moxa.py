"""``socs.common.moxa_serial.Serial_TCPServer`` on socs_tcp.

The wiregrid tilt sensor (DWL and Sherborne drivers, binary, ``encoded=False``)
and the wiregrid Kikusui (``socs.common.pmx.PMX``, SCPI lines) reach their
instruments through a Moxa serial-to-Ethernet server. :class:`SerialTCPServer`
keeps ``Serial_TCPServer``'s whole API and changes what goes wrong:

- reads wait on the connection (never spin) and end by the timeout; a line
  read, as SOCS's, by the timeout after its last byte (at most twice the
  timeout in all), so a reply that comes in pieces is not cut;
- ``encoded=False`` always yields ``bytes``, ``encoded=True`` always ``str``
  (``readbuf`` and ``readpacket`` return what SOCS's did);
- a reply that comes after its request timed out is never returned for a
  later one: input is flushed before each request, the line is drained until
  quiet after an unanswered request, the first read after one keeps listening
  for the whole timeout and returns the *last* complete reply (an instrument
  answers in order, so anything before it is late), and a DWL reply must carry
  the header its request asks for;
- one client per Moxa port: building a server for an address closes the
  previous one for that address first (the tilt sensor agent builds the new
  driver while its old one is still alive);
- failures raise only what the agents catch. Construction never raises for a
  bridge that is down (the tilt sensor rebuilds its driver unguarded). A write
  that cannot be delivered is logged and makes the next read fail at once
  (the DWL constructor writes, unguarded, too). ``read(n)`` that does not get
  its ``n`` bytes raises :class:`LinkTimeout` / :class:`LinkError` (SOCS's
  raised ``TypeError``), both ``RuntimeError`` (caught by the tilt sensor)
  and ``ConnectionError``; ``readexactly`` and the line reads used by the PMX
  return ``''``/``False`` as SOCS's did, which the PMX turns into its
  ``-999`` readings.

:func:`install` puts the class in place of SOCS's; :func:`uninstall` puts
SOCS's back. Agents look the class up at call time (``mx.Serial_TCPServer``),
so the swap works whenever it is made.
"""

from __future__ import annotations

import importlib
import time
import weakref
from typing import cast

from twisted.logger import Logger

from socs_tcp._socs._byte_link import ByteLink, LinkError, LinkTimeout
from socs_tcp._socs._line import claim, release
from socs_tcp._socs._shape import require_class

__all__ = ['SerialTCPServer', 'install', 'uninstall']

log = Logger(namespace='socs_tcp._socs.moxa')

_MODULE = 'socs.common.moxa_serial'
_NAME = 'Serial_TCPServer'
_METHODS = ('write', 'read', 'readexactly', 'readline', 'readall', 'readbuf', 'readpacket',
            'writeread', 'flushInput', 'settimeout', 'gettimeout')

#: DWL-5000XY: request prefix -> the header its 12-byte reply starts with.
_REPLY_HEADERS = {
    b'\x06\x01\x02\xaa': b'\x61\x22',   # two-axis angle
    b'\x06\x01\x01\xaa': b'\x61\x11',   # single-axis angle
}


#: A line read ends by this many timeouts, however its bytes trickle in.
LINE_WAIT_LIMIT = 2


class SerialTCPServer:
    """A pyserial-style line to an instrument behind a Moxa serial server.

    Parameters
    ----------
    port : tuple
        ``(ip, tcp_port)`` of the Moxa port.
    timeout : float
        Seconds each read waits (> 0).
    encoded : bool
        ``str`` in and out (encoded as UTF-8) if True, ``bytes`` if False.

    Attributes
    ----------
    port : tuple
        As given.
    encoded : bool
    timeout : float
    sock : object
        ``sock.close()`` closes the connection, as on SOCS's socket.
    """

    def __init__(self, port: tuple[str, int], timeout: float = 1.0, encoded: bool = True) -> None:
        if not isinstance(port, tuple) or len(port) != 2:
            raise TypeError(f'port must be an (ip, tcp_port) tuple, got {port!r}')
        self.port = port
        self.encoded = bool(encoded)
        self._timeout = _positive(timeout)
        self._write_error: ConnectionError | None = None
        self._expect: bytes | None = None   # the reply header the last request asks for
        self._key = (port[0], int(port[1]))
        previous = claim(self._key, self)   # one client per Moxa port: the previous one closes first
        self._line = ByteLink(port[0], port[1], self._timeout)
        # the old connection's unanswered reply may reach this one
        # claim() hands back the address's previous user as an object; a Moxa
        # port's address is claimed by the Moxa transport's servers
        before = cast('SerialTCPServer', previous)
        self._line.owed = previous is not None and (before._line.owed or bool(before._line.rx))
        self.sock = _Sock(self._line)

    # -- timeout -----------------------------------------------------------

    def settimeout(self, timeout: float) -> None:
        """Set the read timeout (seconds, > 0)."""
        self._timeout = _positive(timeout)
        self._line.timeout = self._timeout

    def gettimeout(self) -> float:
        return self._timeout

    timeout = property(gettimeout, settimeout, doc='Read timeout in seconds (> 0).')

    # -- writing -------------------------------------------------------------

    def write(self, msg: str | bytes) -> None:
        """Send ``msg`` (``str`` if encoded, else bytes) as a new request.

        Input waiting from before is dropped first. A write that cannot be
        delivered does not raise (drivers write in their constructors,
        unguarded): it is logged, and the next read fails at once.
        """
        if self.encoded:
            if not isinstance(msg, str):
                raise TypeError(f'msg must be str on an encoded port, got {type(msg).__name__}')
            data = msg.encode()
        else:
            if not isinstance(msg, (bytes, bytearray, memoryview)):
                raise TypeError(f'msg must be bytes on a port with encoded=False, got {type(msg).__name__}')
            data = bytes(msg)
        self._expect = next((h for p, h in _REPLY_HEADERS.items() if data.startswith(p)), None)
        try:
            self._line.send_request(data)
            self._write_error = None
        except ConnectionError as exc:
            self._write_error = exc
            log.warn('{address}: could not send {data!r}: {error}', address=self._line.address,
                     data=data, error=str(exc))

    def writeread(self, msg: str | bytes) -> str | bytes | bool:
        """Flush, write ``msg`` and return ``readall()``."""
        self.flushInput()
        self.write(msg)
        return self.readall()

    def flushInput(self) -> None:
        """Drop all input received so far."""
        self._line.flush()

    # -- reading -------------------------------------------------------------

    def readexactly(self, n: int) -> str | bytes:
        """Return exactly ``n`` bytes, or an empty result if they did not come in time."""
        n = _count(n)
        try:
            return self._out(self._fixed(n))
        except LinkError as exc:
            log.warn('{address}: readexactly({n}): {error}', address=self._line.address,
                     n=n, error=str(exc))
            return self._out(b'')

    def read(self, n: int) -> str | bytes:
        """Return ``n`` bytes.

        SOCS's ``read`` returned ``n`` bytes or raised (its short read added
        ``bytes`` to ``''``: a ``TypeError``); so does this one, with an
        error that says what happened, and never a partial reply.

        Raises
        ------
        LinkTimeout
            Fewer than ``n`` bytes came within the timeout.
        LinkError
            The Moxa port could not be reached (nothing usable was buffered).
        """
        return self._out(self._fixed(_count(n)))

    def readline(self, term: str | bytes = '\n') -> str | bytes:
        """Return the next line without ``term``.

        If ``term`` did not come within the timeout, returns what came (as
        SOCS's did; it may be empty), and the rest of that reply, should it
        come later, is dropped before the next request.
        """
        line = self._line_until(_as_bytes(term, 'term'), partial=True)
        assert line is not None, 'with partial=True what came is returned, never None'
        return self._out(line)

    def readall(self) -> str | bytes | bool:
        """Return input up to ``'\\r'`` (removed); ``False`` if it did not come in time."""
        line = self._line_until(b'\r', partial=False)
        return False if line is None else self._out(line)

    def readbuf(self, n: int, max_loop: int = 10) -> bytes:
        """Return up to ``n`` bytes of what arrives within the timeout (bytes, as SOCS's)."""
        n = _count(n)
        line = self._line
        try:
            line.collect(time.monotonic() + self._timeout, lambda rx: len(rx) >= n)
        except ConnectionError as exc:
            log.warn('{address}: readbuf: {error}', address=line.address, error=str(exc))
        return self._pop(min(n, len(line.rx)))

    readbuf_slow = readbuf

    def readpacket(self, n: int) -> bytes | str:
        """Return up to ``n`` bytes as soon as some arrive; empty if none in time."""
        n = _count(n)
        line = self._line
        try:
            line.collect(time.monotonic() + self._timeout, lambda rx: len(rx) > 0)
        except ConnectionError as exc:
            log.warn('{address}: readpacket: {error}', address=line.address, error=str(exc))
        if not line.rx:
            return '' if self.encoded else b''
        return self._pop(min(n, len(line.rx)))

    # -- internals ---------------------------------------------------------------

    def _fixed(self, n: int) -> bytes:
        """One reply of ``n`` bytes (see the module's notes on late replies).

        Raises
        ------
        LinkTimeout
            No whole reply within the timeout.
        LinkError
            The port is unreachable and nothing usable is buffered.
        """
        line, header = self._line, self._expect
        self._check_write()
        careful = line.owed
        deadline = time.monotonic() + self._timeout

        def complete(rx: bytearray) -> bool:
            return _reply_at(rx, n, header, last=False) is not None

        lost: ConnectionError | None = None
        try:
            line.collect(deadline, None if careful else complete)
        except ConnectionError as exc:
            lost = exc
        at = _reply_at(line.rx, n, header, last=careful)
        if at is not None:
            if at:
                log.info('{address}: dropped {k} bytes received before the reply (late or garbled)',
                         address=line.address, k=at)
            reply = bytes(line.rx[at:at + n])
            del line.rx[:at + n]
            line.owed = False
            return reply
        line.owed = True   # its reply may still come: the next request drains first
        if lost is not None:
            raise LinkError(f'{line.address}: {lost}') from None
        raise LinkTimeout(f'{line.address}: no {n}-byte reply within {self._timeout} s '
                            f'({len(line.rx)} bytes came)')

    def _line_until(self, term: bytes, partial: bool) -> bytes | None:
        """The reply line ending in ``term`` (removed).

        If it did not come whole in time (or the link is down): with
        ``partial``, what came of it (SOCS's ``readline`` returned that, and
        instruments that end no reply are read this way), else None.
        """
        line = self._line
        try:
            self._check_write()
        except LinkError as exc:
            log.warn('{address}: {error}', address=line.address, error=str(exc))
            return b'' if partial else None
        careful = line.owed
        try:
            self._collect_line(term, careful)
        except ConnectionError as exc:
            log.warn('{address}: connection lost: {error}', address=line.address, error=str(exc))
        rx = line.rx
        if not careful and term in rx:
            end = rx.find(term)
            reply = bytes(rx[:end])
            del rx[:end + len(term)]
            line.owed = False
            return reply
        pieces = bytes(rx).split(term)
        rx.clear()
        # After an unanswered request the instrument's answers come in order:
        # the last one is this request's, and the lines before it are late.
        if len(pieces) > 2:
            log.info('{address}: dropped {k} late reply lines', address=line.address,
                     k=len(pieces) - 2)
        if careful and len(pieces) > 1 and pieces[-1] == b'':
            line.owed = False
            return pieces[-2]
        line.owed = True   # the reply is incomplete: its rest may still come
        return pieces[-1] if partial else None

    def _collect_line(self, term: bytes, careful: bool) -> None:
        """Read into ``rx`` until a line ends in ``term``, or no byte came for ``timeout`` seconds.

        SOCS's line reads waited ``timeout`` for each byte, so a reply that
        comes in pieces (a serial server forwards what it has) is read whole
        as long as no gap reaches the timeout; one deadline for the whole
        line would cut it and hand out its first digits as a reading. The
        wait ends by ``LINE_WAIT_LIMIT`` timeouts in all. ``careful`` (after
        an unanswered request): listen for the whole timeout first, and the
        last line must be whole.
        """
        line, timeout = self._line, self._timeout
        start = time.monotonic()
        listen_until = start + timeout if careful else start
        quiet_until, limit = start + timeout, start + LINE_WAIT_LIMIT * timeout
        while True:
            now = time.monotonic()
            if now >= listen_until and (line.rx.endswith(term) if careful else term in line.rx):
                return
            until = min(max(quiet_until, listen_until), limit)
            if now >= until:
                return
            if line.wait_input(until):
                line.rx += line.interface.recv(65536)
                quiet_until = time.monotonic() + timeout

    def _check_write(self) -> None:
        error, self._write_error = self._write_error, None
        if error is not None:
            raise LinkError(f'{self._line.address}: the request was not sent: {error}')

    def _pop(self, k: int) -> bytes:
        data = bytes(self._line.rx[:k])
        del self._line.rx[:k]
        return data

    def _out(self, data: bytes) -> str | bytes:
        return data.decode(errors='replace') if self.encoded else data

    def _rest(self) -> None:
        """A new server for this Moxa port is being built: close this one's connection for good."""
        self._line.close()

    def __del__(self) -> None:
        line = getattr(self, '_line', None)
        if line is not None:
            line.close()
        key = getattr(self, '_key', None)
        if key is not None:
            release(key, self)

    def __repr__(self) -> str:
        return f'<SerialTCPServer {self._line.address} encoded={self.encoded}>'


class _Sock:
    """What ``Serial_TCPServer.sock`` is: drivers call ``sock.close()`` in ``__del__``."""

    def __init__(self, line: ByteLink) -> None:
        self._line = weakref.ref(line)

    def close(self) -> None:
        line = self._line()
        if line is not None:
            line.close()


def _reply_at(rx: bytearray, n: int, header: bytes | None, last: bool) -> int | None:
    """Where the ``n``-byte reply to return starts in ``rx``, or None if it is not complete.

    ``last``: the instrument answers in order, so after an unanswered request
    the reply to the current one is the last of those that arrived; if the
    last one is still incomplete, nothing is returned (an earlier one is late).
    """
    if header is None:
        if len(rx) < n:
            return None
        if not last:
            return 0
        return len(rx) - n if len(rx) % n == 0 else None   # else: where replies start is unknown
    at = rx.find(header)
    found = None
    while at >= 0:
        if at + n > len(rx):
            return None if last or found is None else found
        if not last:
            return at
        found = at
        at = rx.find(header, at + n)
    return found


def _positive(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f'timeout must be a number of seconds, got {timeout!r}')
    if not timeout > 0:
        raise ValueError(f'timeout must be > 0, got {timeout!r}')
    return float(timeout)


def _count(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f'n must be an int, got {n!r}')
    if n <= 0:
        raise ValueError(f'n must be > 0, got {n!r}')
    return n


def _as_bytes(value: object, name: str) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes) or not value:
        raise TypeError(f'{name} must be a non-empty str or bytes, got {value!r}')
    return value


# -- the swap ------------------------------------------------------------------

_original: type | None = None


def install() -> None:
    """Make ``socs.common.moxa_serial.Serial_TCPServer`` this module's class.

    Raises
    ------
    socs_tcp.compat.CompatError
        SOCS's class does not have the shape this replaces.
    """
    global _original
    module = importlib.import_module(_MODULE)
    current = getattr(module, _NAME, None)
    if current is SerialTCPServer:
        return
    require_class(f'{_MODULE}.{_NAME}', current, _METHODS, ('self', 'port', 'timeout', 'encoded'))
    _original = current
    setattr(module, _NAME, SerialTCPServer)
    log.info('{module}.{name} runs on socs_tcp', module=_MODULE, name=_NAME)


def uninstall() -> None:
    """Put SOCS's own ``Serial_TCPServer`` back (nothing to do if not installed)."""
    global _original
    if _original is None:
        return
    module = importlib.import_module(_MODULE)
    if getattr(module, _NAME, None) is SerialTCPServer:
        setattr(module, _NAME, _original)
    _original = None
