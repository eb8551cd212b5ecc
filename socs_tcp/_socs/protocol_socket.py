"""``socket://host:port`` for pyserial, on a socs_tcp connection (see ``socs_tcp._socs.pyserial``).

A serial line through a serial server (a Moxa) behaves as a serial port
does, whatever happens to the TCP connection underneath:

- a dropped or refused connection reads as a quiet line: ``read()`` returns
  what arrived (maybe nothing) when its timeout is over, as a port whose
  device is silent would, and the connection is made again in the
  background; writes meanwhile are lost, as on a line with nobody listening
  (logged). pyserial's own handler raised ``SerialException`` instead, which
  agents do not catch;
- input nobody asked for is dropped before each write (a reply that came
  after its reader gave up), and after a read that came back short (the
  reply may still be on its way, or held by the serial server for the next
  connection) the next write first waits until the line has been quiet for
  ``drain_quiet`` seconds;
- one connection per serial server port in the process: opening one closes
  the previous (serial servers often take one client);
- while an earlier request to the serial server port is still owed a reply
  (a read came back short, or a request's reply was never read, since the
  last reply that matched its request), a request in Pfeiffer's telegram
  format (the TC400 turbo controllers: address, action, parameter number,
  data, checksum, ``\r``) is answered only by a reply telegram for the same
  address and parameter: a late reply to the earlier request that arrives
  after all is dropped, not handed to this one. When nothing is owed, a reply
  is handed out as it came, as pyserial's handler does.

The port's settings (baud rate, parity...) are the serial server's, as with
pyserial's handler: they are accepted and ignored.
"""

from __future__ import annotations

import re
import select
import threading
import time
import urllib.parse

from serial.serialutil import PortNotOpenError, SerialBase, SerialException, Timeout
from twisted.logger import Logger

from socs_tcp._interface import TCPInterface
from socs_tcp._socs._line import Address, claim, redirected, release

log = Logger(namespace='socs_tcp.serial')

#: How often a read looks again while the connection is down (seconds).
POLL = 0.05

#: A Pfeiffer vacuum protocol telegram: address, action (0 or 1), 0, parameter number,
#: data length, data, checksum, carriage return.
TELEGRAM = re.compile(rb'(\d{3})[01]0(\d{3})(\d{2})(.*)(\d{3})\r')

_lock = threading.Lock()
#: Serial server ports on which a request is still owed a reply (see ``Serial._owes``).
_owed: set[Address] = set()


def telegram_key(data: bytes) -> tuple[bytes, bytes] | None:
    """``(address, parameter)`` of a whole Pfeiffer telegram with a valid checksum, else None."""
    match = TELEGRAM.fullmatch(data)
    if match is None or int(match.group(5)) != sum(data[:-4]) % 256:
        return None
    return match.group(1), match.group(2)


class Serial(SerialBase):
    """A pyserial port for ``socket://host:port``, on socs_tcp (see the module's description)."""

    BAUDRATES = (50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800,
                 9600, 19200, 38400, 57600, 115200)

    #: Seconds a connect or write may take when the port has no write timeout.
    link_timeout = 5.0
    #: Seconds of silence that end the drain after a short read.
    drain_quiet = 0.2

    is_open: bool   # SerialBase's, set in its __init__ (pyserial has no type hints)
    _link: TCPInterface | None = None
    _short_read = False
    _expected: tuple[bytes, bytes] | None = None   # (address, parameter) of the telegram sent last
    _pending = b''                                  # a reply read whole, not yet handed out

    def open(self) -> None:
        """Open the port: connect (bounded); a device that is down only makes reads quiet.

        Raises
        ------
        SerialException
            No port set, already open, or a URL that is not ``socket://host:port``.
        """
        if self._port is None:
            raise SerialException('Port must be configured before it can be used.')
        if self.is_open:
            raise SerialException('Port is already open.')
        self._address = redirected(*self.from_url(self.portstr))
        claim(self._address, self)
        timeout = self._write_timeout if self._write_timeout else self.link_timeout
        self._link = TCPInterface(*self._address, timeout)
        if not self._link.connected:
            log.warn('{where}: not reachable now ({error}); reads are quiet until it is',
                     where=self._where(), error=self._link.stats.get('last_error'))
        self.is_open = True
        self._short_read = False

    def close(self) -> None:
        if self.is_open and self._link is not None:
            release(self._address, self)
            self._link.close()
        self.is_open = False

    def from_url(self, url: str) -> tuple[str, int]:
        """``(host, port)`` of ``socket://host:port``.

        Raises
        ------
        SerialException
            Another scheme, an option (pyserial's ``?logging=`` is not
            supported: socs_tcp logs through twisted.logger), no host, or a
            port outside 1..65535.
        """
        parts = urllib.parse.urlsplit(url)
        try:
            if parts.scheme != 'socket':
                raise ValueError(f'not starting with socket:// ({parts.scheme!r})')
            if parts.query:
                raise ValueError(f'unsupported options {parts.query!r}')
            if not parts.hostname:
                raise ValueError('no host')
            port = parts.port
            if port is None or not 0 < port < 65536:
                raise ValueError('port not in range 1...65535')
        except ValueError as exc:
            raise SerialException(f'expected a string in the form "socket://<host>:<port>": {exc}') from None
        return parts.hostname, port

    def _reconfigure_port(self) -> None:
        """Nothing to configure: the serial server's settings apply."""

    @property
    def in_waiting(self) -> int:
        """Bytes received and not read yet."""
        link = self._check_open()
        return len(self._pending) + int(link.stats.get('buffered', 0))

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes: fewer when the port's timeout is over first (a quiet line)."""
        self._check_open()
        timeout = Timeout(self._timeout)
        data = bytearray()
        while len(data) < size:
            if self._expected is not None and not self._pending:
                self._pending = self._matching_reply(timeout)
            if self._pending:
                take = size - len(data)
                data += self._pending[:take]
                self._pending = self._pending[take:]
            else:
                data += self._read_some(size - len(data), timeout.time_left())
            if timeout.expired():
                break
        self._short_read = len(data) < size
        if self._short_read:
            self._owe(True)
        return bytes(data)

    def write(self, data: bytes) -> int:
        """Send ``data`` as a new request; returns ``len(data)`` (also when the line is down: lost, logged)."""
        link = self._check_open()
        data = bytes(memoryview(data))   # as pyserial: bytes-like only (a str raises TypeError)
        if self._short_read:
            self._drain()
        if self._expected is not None:
            self._owe(True)   # the last telegram's reply was never read: it may still come
        link.clear()
        self._pending = b''
        self._expected = telegram_key(data)
        try:
            link.send(data)
        except ConnectionError as exc:
            log.warn('{where}: write of {n} bytes lost, the line is down ({error}); reconnecting',
                     where=self._where(), n=len(data), error=str(exc))
        return len(data)

    def reset_input_buffer(self) -> None:
        link = self._check_open()
        self._pending = b''
        link.clear()

    def reset_output_buffer(self) -> None:
        """Nothing waits to be sent: every write is handed to the connection whole."""
        self._check_open()

    def send_break(self, duration: float = 0.25) -> None:
        """No break over a serial server's TCP port (as pyserial's handler)."""
        self._check_open()

    def _update_break_state(self) -> None:
        pass

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    @property
    def cts(self) -> bool:
        self._check_open()
        return True

    @property
    def dsr(self) -> bool:
        self._check_open()
        return True

    @property
    def ri(self) -> bool:
        self._check_open()
        return False

    @property
    def cd(self) -> bool:
        self._check_open()
        return True

    # -- internals ---------------------------------------------------------------

    def _rest(self) -> None:
        """Another port to the same serial server opened: close this connection until used again."""
        comm = self._link.comm if self._link is not None else None
        if comm is not None:
            comm.close()

    def _read_some(self, size: int, wait: float | None) -> bytes:
        """Whatever input arrives within ``wait`` seconds (None: until some does), at most ``size`` bytes."""
        link = self._open_link()
        comm = link.comm
        if comm is None or not link.connected:
            nap = POLL if wait is None else min(wait, POLL)
            if nap > 0:
                time.sleep(nap)   # down: a quiet line, looked at again every POLL
            return b''
        # comm is readable while input waits, and once the connection is gone
        ready, _, _ = select.select([comm], [], [], wait)
        if not ready:
            return b''
        try:
            return link.recv(size)
        except ConnectionError:
            return b''   # gone just now: reads quiet from here on, until reconnected

    def _matching_reply(self, timeout: Timeout) -> bytes:
        """The reply to the telegram sent last, read whole; late replies to earlier requests are dropped.

        Another telegram is dropped as a late reply only while an earlier
        request is owed one (``_owes``). When nothing is owed, every reply
        this port could still receive answers the telegram sent last (each
        earlier request got its reply, and input is dropped before every
        write), so a reply for another parameter cannot be a late one: it is
        the device's answer and is handed out as it came, as pyserial's
        handler does (the protocol code judges it). What is not a valid
        telegram is handed out as it is too, and so is a partial line when
        the timeout is over.
        """
        expected = self._expected
        assert expected is not None, 'read() looks for a matching reply only after a telegram was sent'
        line = bytearray()
        while True:
            line += self._read_some(1, timeout.time_left())
            if line.endswith(b'\r'):
                key = telegram_key(bytes(line))
                if key == expected:
                    self._owe(False)   # a good exchange: nothing earlier can still be owed
                    break
                if key is None or not self._owes():
                    break
                log.info('{where}: dropped {line!r}, a late reply: the request was for parameter {param}',
                         where=self._where(), line=bytes(line), param=expected[1].decode())
                line.clear()
            elif timeout.expired():
                break
        self._expected = None
        return bytes(line)

    def _owes(self) -> bool:
        """Whether an earlier request to this serial server port may still get its reply.

        Set when a read came back short (its reply may still be on its way,
        or held by the serial server for the next connection, hence per
        port, not per ``Serial``) or a telegram's reply was never read;
        cleared by the next reply that matched its request.
        """
        with _lock:
            return self._address in _owed

    def _owe(self, owed: bool) -> None:
        with _lock:
            if owed:
                _owed.add(self._address)
            else:
                _owed.discard(self._address)

    def _drain(self) -> None:
        """Drop input until the line has been quiet for ``drain_quiet`` s (at most a few periods)."""
        start = time.monotonic()
        quiet_since, dropped = start, 0
        give_up = start + max(self.drain_quiet * 10, self._timeout or 0)
        while time.monotonic() < give_up:
            left = self.drain_quiet - (time.monotonic() - quiet_since)
            if left <= 0:
                break
            got = self._read_some(4096, left)
            if got:
                dropped += len(got)
                quiet_since = time.monotonic()
        self._short_read = False
        if dropped:
            log.info('{where}: dropped {n} bytes of late replies before the next request',
                     where=self._where(), n=dropped)

    def _check_open(self) -> TCPInterface:
        """The open port's connection.

        Raises
        ------
        serial.PortNotOpenError
            The port is not open.
        """
        if not self.is_open:
            raise PortNotOpenError()
        return self._open_link()

    def _open_link(self) -> TCPInterface:
        # open() makes the link before it sets is_open, and close() leaves it
        # in place: a port that was ever opened has one
        assert self._link is not None, 'the port was never opened'
        return self._link

    def _where(self) -> str:
        return '{}:{}'.format(*self._address)
