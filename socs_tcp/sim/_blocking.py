"""`DeviceServer` for threads other than the reactor's: each call waits for its outcome.

A test body in a worker thread (OCS runs blocking tasks in one, and
``deferToThread`` bodies run in one) reaches its simulated device through
``server.blocking``::

    def body():                       # in a worker thread
        server.blocking.set_silent(True)
        port = server.blocking.start()
        server.blocking.when_requests(1, timeout=2)

Every method hops into the running reactor, calls the `DeviceServer` method
of the same name there, and returns its result (a Deferred's result once it
fired), or raises its exception. Bad arguments raise before anything changes,
as in the reactor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.threads import blockingCallFromThread
from twisted.python import threadable

from socs_tcp._errors import ReactorThreadError
from socs_tcp.sim._faults import Faults

if TYPE_CHECKING:
    from socs_tcp.sim._server import DeviceServer


class BlockingDeviceServer:
    """The blocking twin of one `DeviceServer` (get it as ``server.blocking``).

    Raises
    ------
    ReactorThreadError
        From every method, when called in the reactor thread (where waiting
        would deadlock: call the `DeviceServer` itself there) or while the
        reactor is not running (nothing would ever answer).
    """

    def __init__(self, server: DeviceServer):
        self.server = server

    def __repr__(self) -> str:
        return f'<BlockingDeviceServer of {self.server!r}>'

    def _call(self, name: str, *args, **kwargs):
        reactor = self.server.reactor
        if not getattr(reactor, 'running', False):
            raise ReactorThreadError(f'DeviceServer.blocking.{name}() needs a running reactor; '
                                     f'before it runs, call DeviceServer.{name}() itself')
        if threadable.isInIOThread():
            raise ReactorThreadError(f'DeviceServer.blocking.{name}() called in the reactor '
                                     f'thread, where it would deadlock: call '
                                     f'DeviceServer.{name}() there')
        return blockingCallFromThread(reactor, getattr(self.server, name), *args, **kwargs)

    # -- state (plain reads of the server's) ----------------------------------
    @property
    def port(self) -> int | None:
        """`DeviceServer.port`."""
        return self.server.port

    @property
    def listening(self) -> bool:
        """`DeviceServer.listening`."""
        return self.server.listening

    @property
    def connection_count(self) -> int:
        """`DeviceServer.connection_count`."""
        return self.server.connection_count

    @property
    def requests(self) -> list[bytes]:
        """`DeviceServer.requests`."""
        return self.server.requests

    @property
    def request_count(self) -> int:
        """`DeviceServer.request_count`."""
        return self.server.request_count

    @property
    def faults(self) -> Faults:
        """`DeviceServer.faults`."""
        return self.server.faults

    # -- listening and connections ----------------------------------------------
    def start(self) -> int:
        """`DeviceServer.start`: return the port once listening."""
        return self._call('start')

    def stop_listening(self) -> None:
        """`DeviceServer.stop_listening`: return once the port is closed."""
        self._call('stop_listening')

    def stop(self) -> None:
        """`DeviceServer.stop`: return once the port is closed and every connection gone."""
        self._call('stop')

    def set_blackhole(self, on: bool = True) -> None:
        """`DeviceServer.set_blackhole`: return once in effect."""
        self._call('set_blackhole', on)

    def drop_connections(self) -> None:
        """`DeviceServer.drop_connections`: return once those connections are gone."""
        self._call('drop_connections')

    def hangup(self) -> None:
        """`DeviceServer.hangup`: return once those connections are gone."""
        self._call('hangup')

    def send_unsolicited(self, data: bytes | str) -> None:
        """`DeviceServer.send_unsolicited`."""
        self._call('send_unsolicited', data)

    def clear_requests(self) -> None:
        """`DeviceServer.clear_requests`."""
        self._call('clear_requests')

    # -- faults ---------------------------------------------------------------------
    def drop_after(self, n: int | None) -> None:
        """`DeviceServer.drop_after`."""
        self._call('drop_after', n)

    def set_delay(self, seconds: float) -> None:
        """`DeviceServer.set_delay`."""
        self._call('set_delay', seconds)

    def set_silent(self, silent: bool = True) -> None:
        """`DeviceServer.set_silent`."""
        self._call('set_silent', silent)

    def set_fragments(self, size: int | None, interval: float = 0.0) -> None:
        """`DeviceServer.set_fragments`."""
        self._call('set_fragments', size, interval)

    def set_garbage(self, data: bytes | str) -> None:
        """`DeviceServer.set_garbage`."""
        self._call('set_garbage', data)

    def reset_faults(self) -> None:
        """`DeviceServer.reset_faults`."""
        self._call('reset_faults')

    # -- waiting ----------------------------------------------------------------------
    def when_connections(self, n: int, timeout: float | None = None) -> int:
        """`DeviceServer.when_connections`: return ``n`` once so.

        Raises
        ------
        TimeoutError
            If ``timeout`` passes first.
        """
        return self._call('when_connections', n, timeout)

    def when_requests(self, n: int, timeout: float | None = None) -> list[bytes]:
        """`DeviceServer.when_requests`: return a copy of the requests once so.

        Raises
        ------
        TimeoutError
            If ``timeout`` passes first.
        """
        return self._call('when_requests', n, timeout)
