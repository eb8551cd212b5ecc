"""ByteLink: a request/reply byte line to a device, for drivers that speak raw bytes.

SOCS's Moxa serial servers, the HWP PID controller and the HWP gripper are
reached through hand-written sockets. Their replacements share this one
piece: a :class:`socs_tcp.TCPInterface` (reactor-owned connection, background
reconnects) plus what a line needs when a bridge sits between TCP and the
instrument:

- a request is sent only on a quiet, empty line: buffered input is dropped
  first, and after a request that went unanswered (``owed``) or on a fresh
  connection (a bridge hands the instrument's held bytes to the next client)
  the line is first drained until it has been quiet for a while;
- waiting for input never spins and never outlasts its deadline;
- a lost connection is a ``ConnectionError`` at once, never ``b''`` forever.

Which reply answers which request is the protocol's business: the callers
(:mod:`.moxa`, :mod:`.hwp_pid`, :mod:`.hwp_gripper`) pick it from what arrived.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable

from twisted.logger import Logger

from socs_tcp import NotConnected, TCPInterface

log = Logger(namespace='socs_tcp._socs.byte_link')

class LinkError(ConnectionError, RuntimeError):
    """The device could not be reached, or the connection was lost.

    A ``ConnectionError`` (an ``OSError``) and a ``RuntimeError``: SOCS's
    drivers raised ``RuntimeError`` when they could not connect, and raw
    sockets raise ``OSError``; the agents catch one or the other.
    """


class LinkTimeout(LinkError, TimeoutError):
    """The device did not answer within the timeout (also ``socket.timeout``)."""


#: Quiet time asked of a fresh connection before its first request: a bridge
#: hands what it held to a new client at once, so a short settle is enough.
FRESH_SETTLE = 0.1


class ByteLink:
    """A byte line to ``host:port`` with a memory of requests that went unanswered.

    Parameters
    ----------
    host : str
        Address of the bridge or controller.
    port : int
        Its TCP port.
    timeout : float
        Seconds a read waits for its reply.
    quiet : float, optional
        Seconds the line must have been quiet before a request that follows
        an unanswered one (default: ``timeout``).
    """

    def __init__(self, host: str, port: int, timeout: float, quiet: float | None = None) -> None:
        #: A request went unanswered (or half answered): its reply may still come.
        self.owed = False
        self.rx = bytearray()
        self._quiet = quiet
        self._connects = 0   # connections made so far: one more means a fresh connection
        self.interface = TCPInterface(host, port, timeout)
        self.address = f'{host}:{self.interface.port}'

    @property
    def timeout(self) -> float:
        return self.interface.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self.interface.timeout = value

    # -- requests ------------------------------------------------------------

    def send_request(self, data: bytes) -> None:
        """Send ``data`` as a new request on a quiet, empty line.

        Raises
        ------
        ConnectionError
            No connection could be made, or the write failed twice.
        """
        interface = self.interface
        if not interface.connected:
            interface.send(b'')  # connect now, so that what the bridge held is drained below
        connects = interface.stats['connects']   # counts reconnects made in the background too
        fresh, self._connects = connects != self._connects, connects
        if self.owed:
            quiet = self.timeout if self._quiet is None else min(self._quiet, self.timeout)
            self.drain(quiet, why='an earlier request went unanswered')
        elif fresh:
            self.drain(min(FRESH_SETTLE, self.timeout), why='new connection')
        self.flush()
        interface.send(data)

    def flush(self) -> int:
        """Drop all input received so far; return how many bytes."""
        dropped = len(self.rx) + self.interface.clear()
        self.rx.clear()
        if dropped:
            log.debug('{address}: dropped {n} stale bytes', address=self.address, n=dropped)
        return dropped

    def drain(self, quiet: float, why: str) -> None:
        """Drop input until none arrived for ``quiet`` seconds (at most three times that)."""
        start = time.monotonic()
        limit = start + 3 * quiet
        last = start
        dropped = self.flush()
        while True:
            now = time.monotonic()
            until = min(last + quiet, limit)
            if now >= until:
                break
            try:
                if self.wait_input(until):
                    dropped += self.flush()
                    last = time.monotonic()
            except ConnectionError:
                break
        if dropped:
            log.info('{address}: dropped {n} late bytes before the next request ({why})',
                     address=self.address, n=dropped, why=why)

    # -- input ---------------------------------------------------------------

    def wait_input(self, deadline: float) -> bool:
        """Wait until input is waiting (True) or ``deadline`` passed (False).

        Raises
        ------
        ConnectionError
            The connection is gone (or was never made).
        """
        comm = self.interface.comm
        if comm is None:
            raise NotConnected(f'not connected to {self.address}')
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        readable, _, _ = select.select([comm], [], [], remaining)
        return bool(readable)

    def collect(self, deadline: float, complete: Callable[[bytearray], bool] | None) -> bool:
        """Read into ``rx`` until ``complete(rx)`` or ``deadline``; return whether complete.

        ``complete=None`` reads until the deadline. What arrived stays in
        ``rx`` in every case.

        Raises
        ------
        ConnectionError
            The connection was lost (or never made) before ``rx`` was complete.
        """
        while complete is None or not complete(self.rx):
            if not self.wait_input(deadline):
                return complete is None
            self.rx += self.interface.recv(65536)
        return True

    def close(self) -> None:
        """Close the connection for good (a bridge port takes one client)."""
        self.interface.close()
