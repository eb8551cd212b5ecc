"""The three ways a driver can talk to a line-based device, behind one call.

Each client has ``query(payload: bytes) -> bytes``: write ``payload`` plus a
newline and return the reply line without its newline, raising
``ConnectionError`` (or ``OSError`` for the raw socket) on failure. They are
written the way a careful driver author would use each layer:

- ``raw``: a blocking ``socket`` with a timeout; reconnects on the next call
  after an error (a naive driver's recovery).
- ``socs.tcp``: ``socs.tcp.TCPInterface``, ``send`` then ``recv`` until the
  newline (the seed's ``Device.get_data`` pattern, made safe against split
  replies).
- ``socs_tcp``: ``socs_tcp.TCPInterface.query``.

Neither ``raw`` nor ``socs.tcp`` is safe when several threads share one
connection (a write and a read of two threads interleave), so with
``shared_lock=True`` their query takes a lock around send+recv, as a correct
multi-threaded driver must. ``socs_tcp.query`` is atomic by contract and
takes no lock here.
"""

from __future__ import annotations

import socket
import threading
import time

KINDS = ('raw', 'socs.tcp', 'socs_tcp')


def _silence_socs_tcp_prints() -> None:
    # socs.tcp reports every reconnect with print(); in a benchmark that
    # garbles the table. A module-level 'print' shadows the builtin there only.
    import socs.tcp
    socs.tcp.print = lambda *args, **kwargs: None


class _LockedQuery:
    """``query`` around a subclass's ``_query``, under ``self._lock`` when there is one."""

    _lock: threading.Lock | None = None

    def _query(self, payload: bytes) -> bytes:
        raise NotImplementedError

    def query(self, payload: bytes) -> bytes:
        if self._lock is None:
            return self._query(payload)
        with self._lock:
            return self._query(payload)


class RawSocketClient(_LockedQuery):
    """A blocking socket with ``settimeout(timeout)``, reconnecting on demand."""

    kind = 'raw'

    def __init__(self, host: str, port: int, timeout: float, *, shared_lock: bool = False):
        self.address = (host, int(port))
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self._buf = b''
        self._lock = threading.Lock() if shared_lock else None
        try:
            self._connect()
        except OSError:
            self.sock = None

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self._buf = b''

    def _drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _query(self, payload: bytes) -> bytes:
        try:
            if self.sock is None:
                self._connect()
            self.sock.sendall(payload + b'\n')
            while b'\n' not in self._buf:
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise ConnectionError('peer closed')
                self._buf += chunk
        except OSError:
            self._drop()
            raise
        line, _, self._buf = self._buf.partition(b'\n')
        return line

    def close(self) -> None:
        self._drop()


class SocsTcpClient(_LockedQuery):
    """``socs.tcp.TCPInterface``: ``send`` then ``recv`` until the newline.

    ``recv`` returning ``b''`` (what socs.tcp does when the peer has closed)
    is reported as a ``ConnectionError`` here, so a closed device counts as a
    failure and not as a wrong reply.
    """

    kind = 'socs.tcp'

    def __init__(self, host: str, port: int, timeout: float, *, shared_lock: bool = False,
                 reset_on_error: bool = False):
        _silence_socs_tcp_prints()
        from socs.tcp import TCPInterface
        self.iface = TCPInterface(host, port, timeout)
        self.reset_on_error = reset_on_error
        self._lock = threading.Lock() if shared_lock else None

    def _query(self, payload: bytes) -> bytes:
        self.iface.send(payload + b'\n')
        data = b''
        while not data.endswith(b'\n'):
            more = self.iface.recv(reset_on_error=self.reset_on_error)
            if not more:
                raise ConnectionError('recv returned no data (peer closed)')
            data += more
        return data[:-1]

    def close(self) -> None:
        if self.iface.comm is not None:
            self.iface.comm.close()
            self.iface.comm = None


class SocsTcpNewClient:
    """``socs_tcp.TCPInterface.query`` (thread-safe by itself: no lock)."""

    kind = 'socs_tcp'

    def __init__(self, host: str, port: int, timeout: float, *, shared_lock: bool = False,
                 **options):
        from socs_tcp import TCPInterface
        self.iface = TCPInterface(host, port, timeout, read_termination=b'\n',
                                  write_termination=b'\n', **options)

    def query(self, payload: bytes) -> bytes:
        return self.iface.query(payload)

    def close(self) -> None:
        self.iface.close()


CLIENTS = {cls.kind: cls for cls in (RawSocketClient, SocsTcpClient, SocsTcpNewClient)}


def make_client(kind: str, host: str, port: int, timeout: float, **kwargs):
    """Build the client of ``kind`` (one of ``KINDS``).

    Raises
    ------
    ValueError
        If ``kind`` is not one of ``KINDS``.
    """
    try:
        cls = CLIENTS[kind]
    except KeyError:
        raise ValueError(f'kind must be one of {KINDS}, got {kind!r}') from None
    return cls(host, port, timeout, **kwargs)


def available_kinds() -> tuple[str, ...]:
    """The kinds whose library imports here (socs_tcp may still be missing)."""
    found = ['raw']
    for kind, module in (('socs.tcp', 'socs.tcp'), ('socs_tcp', 'socs_tcp')):
        try:
            __import__(module)
        except ImportError:
            continue
        found.append(kind)
    return tuple(found)


def wait_connected(client, timeout: float = 5.0) -> bool:
    """Query until one reply comes back or ``timeout`` passes; True on success."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.query(b'ping') == b'ping':
                return True
        except OSError:
            time.sleep(0.01)
    return False
