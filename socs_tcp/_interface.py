"""TCPInterface: the blocking adapter that OCS worker threads call."""

from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from socs_tcp import _arguments as arguments
from socs_tcp._backoff import Backoff
from socs_tcp._channel import Channel
from socs_tcp._comm import CommSocket
from socs_tcp._errors import NotConnected
from socs_tcp._factory import DEFAULT_INPUT_LIMIT
from socs_tcp._framing import DEFAULT_MAX_LENGTH, Exactly, Frame, Terminated, reply_frame
from socs_tcp._link_channel import LinkChannel
from socs_tcp._socket_channel import SocketChannel
from socs_tcp._visa import VisaHabits

_DEFAULT: Any = object()

# Module-level, not a class attribute: a Logger reached through an instance
# puts that instance in every event as log_source, and Twisted keeps the
# events it logs before logging begins (a plain script never begins it): the
# interface could then never be collected, nor close its connection.
log = Logger(namespace='socs_tcp._interface')


class TCPInterface(VisaHabits):
    """Interface class for connecting to devices using TCP.

    A drop-in for ``socs.tcp.TCPInterface``: drivers that subclass it and call
    ``super().__init__(ip_address, port, timeout)`` work unchanged. The
    connection itself is owned by the Twisted reactor (``DeviceClientFactory``),
    which reconnects in the background; this class lets worker threads use it
    with blocking calls, each bounded by its timeout. It checks arguments and
    works out each call's deadline; the I/O is its channel's (the reactor's
    link, or the socket a patched ``_connect`` returned: `socs_tcp._channel`).

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
        ``on_connect(handle)``, run in the calling thread after every
        (re)connect, before any other I/O on the new connection (re-initialise
        the device, drain a prompt). ``handle`` (a `ConnectionHandle`) has the
        interface's methods and attributes, bound to the new connection and
        to the deadline of the call that made it; calls the hook makes on the
        interface itself are bound the same way. If it raises, the connection
        is dropped and the call fails with a ``ConnectionError``.
    backoff : Backoff, optional
        Background reconnect policy.
    connect_timeout : float, optional
        Seconds a connection attempt may take (default: ``timeout``).
    input_limit : int
        Bytes of unread input above which the reactor stops reading while
        no call waits for input, until they are read (TCP flow control then
        holds the device back, as the kernel buffer does for ``socs.tcp``).
        A reply a call waits for may be longer (up to ``max_frame_length``).
        Nothing is dropped.
    max_frame_length : int
        Longest frame (reply) a call reads, default 1 MiB. A device that
        sends a longer one (a line that never ends) loses its connection and
        the call fails with a ``ConnectionError`` naming the limit, as
        Twisted's ``LineReceiver.lineLengthExceeded`` does: memory stays
        bounded while a caller waits.
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
        None until the interface first connected (as socs.tcp documents for
        a device that was down at construction); from then on a socket-like
        object (``sendall``, ``recv``, ``close``, ``settimeout``, usable with
        ``select``), also while the device is down.
    """

    def __init__(self, ip_address: str, port: int, timeout: float = 10, *,
                 read_termination: bytes | str | None = None,
                 write_termination: bytes | str = b'',
                 on_connect: Callable[[ConnectionHandle], None] | None = None,
                 backoff: Backoff | None = None,
                 connect_timeout: float | None = None,
                 input_limit: int = DEFAULT_INPUT_LIMIT,
                 max_frame_length: int = DEFAULT_MAX_LENGTH,
                 trace: bool = False,
                 encoding: str = 'utf-8',
                 reactor=None) -> None:
        if not isinstance(ip_address, str) or not ip_address:
            raise TypeError(f'ip_address must be a non-empty str, got {ip_address!r}')
        self.ip_address = ip_address
        self.port = arguments.port(port)
        self.timeout = timeout
        self.encoding = encoding
        self.write_termination = self._optional_bytes(write_termination, 'write_termination') or b''
        if on_connect is not None and not callable(on_connect):
            raise TypeError(f'on_connect must be callable, got {on_connect!r}')
        if backoff is not None and not isinstance(backoff, Backoff):
            raise TypeError(f'backoff must be a socs_tcp.Backoff, got {backoff!r}')
        connect_timeout = (self.timeout if connect_timeout is None
                           else arguments.seconds(connect_timeout, 'connect_timeout'))
        input_limit = arguments.count(input_limit, 'input_limit')
        self._max_frame_length = arguments.count(max_frame_length, 'max_frame_length')
        self.read_termination = read_termination
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._closed = False
        self._link = LinkChannel(ip_address, self.port, connect_timeout=connect_timeout, backoff=backoff,
                                 input_limit=input_limit, max_frame_length=self._max_frame_length,
                                 on_connect=None if on_connect is None else _hook_runner(self, on_connect),
                                 reactor=reactor)
        self._link.trace = bool(trace)
        self._link.socket_like = CommSocket(self, self._link)
        self._channel: Channel = self._link
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
    def read_termination(self) -> bytes | None:
        return self._read_termination

    @read_termination.setter
    def read_termination(self, value: bytes | str | None) -> None:
        self._read_termination = self._optional_bytes(value, 'read_termination')
        # query()'s usual frame, made once: frames are values, shared by every call.
        self._reply_frame = reply_frame(self._read_termination, None, self._max_frame_length)

    @property
    def comm(self) -> Any:
        return self._channel.comm

    @comm.setter
    def comm(self, value: object) -> None:
        # What _connect returned: our own comm (or None: not connected yet)
        # keeps the reactor's link; anything else is a socket to use as socs.tcp does.
        if value is self._link.socket_like or (value is None and self._channel is self._link):
            self._channel = self._link
        else:
            self._channel = SocketChannel(value, _seam(self), self._link.address)

    @property
    def connected(self) -> bool:
        return self._channel.connected

    @property
    def trace(self) -> bool:
        return self._link.trace

    @trace.setter
    def trace(self, value: bool) -> None:
        self._link.trace = value

    @property
    def stats(self) -> dict:
        """Counters: connects, disconnects, connect_failures, bytes_in/out, stale bytes dropped,
        queries, timeouts, input_pauses, last_error (and its time), plus state, connected,
        buffered bytes, reading_paused, input_limit and the current reconnect delay."""
        return self._channel.stats()

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
        self._channel.send(data, self._deadline('send', None))

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
        return self._channel.recv(bufsize, self._deadline('recv', None), bool(reset_on_error))

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
            No connection, or it was lost before the reply was complete, or
            the reply went over ``max_frame_length``.
        """
        # The usual call (bytes, the interface's own reply framing and timeout) goes straight
        # to the channel: what runs before a request leaves shows in every query's latency.
        if type(msg) is bytes and terminator is _DEFAULT and size is None and timeout is None \
                and not self._closed:
            return self._channel.query(msg + self.write_termination, self._reply_frame,
                                       time.monotonic() + self._timeout)
        data = self._encode(msg, 'msg') + self.write_termination
        if terminator is _DEFAULT and size is None:
            frame = self._reply_frame
        else:
            if terminator is _DEFAULT:
                terminator = self.read_termination
            elif size is not None and terminator is not None:
                raise ValueError('query() takes terminator or size, not both')
            else:
                terminator = self._optional_bytes(terminator, 'terminator')
            size = None if size is None else self._frame_size(size, 'size')
            frame = reply_frame(terminator, size, self._max_frame_length)
        return self._channel.query(data, frame, self._deadline('query', timeout))

    def read_until(self, terminator: bytes | str, timeout: float | None = None) -> bytes:
        """Return input up to and including ``terminator``.

        On a timeout the input stays buffered for the next read.

        Raises
        ------
        DeviceTimeout
            ``terminator`` did not arrive within ``timeout``.
        ConnectionError
            Not connected, or the connection was lost first, or more than
            ``max_frame_length`` bytes came without ``terminator``.
        """
        end = self._optional_bytes(terminator, 'terminator')
        if not end:
            raise ValueError('terminator must not be empty')
        return self._read(Terminated(end, self._max_frame_length, strip=False), 'read_until', timeout)

    def read_exactly(self, n: int, timeout: float | None = None) -> bytes:
        """Return exactly ``n`` bytes of input.

        Raises
        ------
        ValueError
            ``n`` is not positive or above ``max_frame_length``.
        DeviceTimeout
            Fewer than ``n`` bytes arrived within ``timeout`` (they stay buffered).
        ConnectionError
            Not connected, or the connection was lost first.
        """
        return self._read(Exactly(self._frame_size(n, 'n'), self._max_frame_length), 'read_exactly', timeout)

    def clear(self) -> int:
        """Drop all buffered input (not a device clear); return the number of bytes dropped."""
        return self._channel.clear(self._deadline('clear', None))

    def close(self) -> None:
        """Close the connection and stop reconnecting. Idempotent.

        Further calls raise ``NotConnected``.
        """
        if self._closed:
            return
        self._closed = True
        if self._channel is not self._link:
            self._channel.close()
        self._link.close()

    def __enter__(self) -> TCPInterface:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        # SOCS closes its socket here; a forgotten interface must not keep a
        # connection (many devices take one client only), nor reconnect forever.
        if not getattr(self, '_closed', True) and not sys.is_finalizing():
            self._closed = True
            self._link.close_soon()

    def __repr__(self) -> str:
        return f'<{type(self).__name__} {self.ip_address}:{self.port} {self._channel.stats()["state"]}>'

    # -- the seam socs.tcp's tests patch ------------------------------------------

    def _connect(self, address: tuple[str, int]) -> CommSocket | None:
        """Connect now, as ``socs.tcp`` does on construction; return ``comm``, or None.

        Waits at most ``timeout``. A device that cannot be reached is logged,
        not raised: the link keeps trying in the background. Called in the
        running reactor's thread (reactor code building an interface), it
        cannot wait: the link starts connecting and None is returned.
        """
        try:
            if not self._link.connect(self._deadline('connect', None)):
                return None
        except ConnectionError as exc:
            log.warn('Unable to connect to {address}: {error}', address=self._link.address, error=str(exc))
            return None
        return self._link.socket_like  # type: ignore[return-value]

    # -- internals ---------------------------------------------------------------

    def _deadline(self, method: str, timeout: float | None) -> float:
        """The call's deadline (``time.monotonic()``); a closed interface refuses the call."""
        timeout = self._timeout if timeout is None else arguments.seconds(timeout, 'timeout')
        if self._closed:
            raise NotConnected(f'{method}() on a closed interface to {self.ip_address}:{self.port}')
        return time.monotonic() + timeout

    def _read(self, frame: Frame, method: str, timeout: float | None) -> bytes:
        return self._channel.read(frame, self._deadline(method, timeout), method)

    def _frame_size(self, n: int, name: str) -> int:
        n = arguments.count(n, name)
        if n > self._max_frame_length:
            raise ValueError(f'{name} must be at most max_frame_length ({self._max_frame_length}), got {n}')
        return n

    def _encode(self, msg: bytes | str, name: str) -> bytes:
        if type(msg) is bytes:  # the usual case, on every call
            return msg
        return arguments.as_bytes(msg, name, encoding=self.encoding)

    def _optional_bytes(self, value: bytes | str | None, name: str) -> bytes | None:
        return arguments.as_bytes(value, name, encoding=self.encoding, allow_none=True)


class ConnectionHandle:
    """What ``on_connect`` receives: its interface, bound to one connection and one deadline.

    Every attribute and method is the interface's (``handle.query(...)``,
    ``handle.stats``, ``handle.timeout``). While the hook runs, its calls
    (through the handle or on the interface itself) use only the connection
    just made, never make another, and end by ``deadline``: the hook cannot
    outlast the call that connected.

    Attributes
    ----------
    interface : TCPInterface
    deadline : float
        The ``time.monotonic()`` value by which the hook's calls end.
    """

    __slots__ = ('interface', 'deadline')

    def __init__(self, interface: TCPInterface, deadline: float) -> None:
        object.__setattr__(self, 'interface', interface)
        object.__setattr__(self, 'deadline', deadline)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.interface, name)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(self.interface, name, value)

    def __repr__(self) -> str:
        return f'<ConnectionHandle of {self.interface!r}>'


def _hook_runner(interface: TCPInterface, hook: Callable[[ConnectionHandle], None]) -> Callable[[float], None]:
    """``hook`` as the link runs it, holding the interface weakly (the link must not keep it alive)."""
    ref = weakref.ref(interface)

    def run(deadline: float) -> None:
        owner = ref()
        if owner is None:
            raise NotConnected('the interface this on_connect belonged to is gone')
        hook(ConnectionHandle(owner, deadline))
    return run


def _seam(interface: TCPInterface) -> Callable[[], object | None]:
    """A new socket through ``interface._connect``, as ``socs.tcp``'s reset makes one (held weakly)."""
    ref = weakref.ref(interface)

    def reconnect() -> object | None:
        owner = ref()
        if owner is None:
            raise NotConnected('the interface this comm belonged to is gone')
        return owner._connect((owner.ip_address, owner.port))
    return reconnect
