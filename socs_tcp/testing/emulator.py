"""SOCS's device emulator over TCP, with faults: ``create_device_emulator``.

A drop-in for ``socs.testing.device_emulator.create_device_emulator`` with
``relay_type='tcp'``: a SOCS test file changes one import and runs as
before::

    from socs_tcp.testing.emulator import create_device_emulator

    pid_emu = create_device_emulator({'*W02400000': 'W02\\r'}, relay_type='tcp', port=3003)

    def test_send_message(pid_emu):
        pid_emu.define_responses({'ping': 'pong'})
        ...

The emulator behaves as SOCS's: each read from the client is one command
(stripped and decoded with ``encoding``; raw bytes with ``encoding=None``),
answered from ``responses`` (a list value answers with its items in turn,
``default_response`` answers anything else, no entry: no reply), the reply
sent as given (no terminator added). Without ``reconnect``, the emulator
stops listening once its client hung up; with it, it waits for the next.

On top, ``emulator.inject(COMMAND, *args)`` takes the fault commands of
every simulated device (`socs_tcp.sim.control`), e.g. ``inject('delay',
2.0)`` (late replies), ``inject('silent', 'on')``, ``inject('garbage',
b'\\x00')``, ``inject('hangup')``, ``inject('drop')``, ``inject('stop')``,
``inject('start')``, ``inject('restart', 1.0)``, ``inject('blackhole',
'on')``, ``inject('reset')``; and ``inject('hold', seconds)``: the next
reply is held that long, then delivered to whichever connection is open, or
to the next one to connect, as a serial server or a GPIB bridge delivers an
instrument's late reply after the client gave up and reconnected.

The emulator is a `socs_tcp.sim.DeviceServer` (``emulator.server``). It runs
in a reactor of its own, in a daemon thread shared by every emulator of the
process, and not in Twisted's global reactor: a SOCS test talks to it with
blocking calls in the test's thread (where pytest-twisted would turn the
global reactor), and the code under test keeps the global reactor to itself.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from copy import deepcopy

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.failure import Failure

from socs_tcp import _arguments as arguments
from socs_tcp._errors import ReactorThreadError
from socs_tcp.sim._server import DeviceServer
from socs_tcp.sim.control import ControlChannel

__all__ = ['DeviceEmulator', 'create_device_emulator']

log = Logger(namespace='socs_tcp.testing.emulator')

#: How long `DeviceEmulator.create_tcp_relay` tries to bind a port another test still holds.
BIND_TIMEOUT = 10.0
#: The longest any call into the emulators' reactor may take.
CALL_TIMEOUT = 10.0

_lock = threading.Lock()
_reactor = None
_reactor_thread: threading.Thread | None = None


def _emulators_reactor():
    """The emulators' own reactor, running in its daemon thread (started on first use)."""
    global _reactor, _reactor_thread
    with _lock:
        if _reactor is None:
            from twisted.internet.selectreactor import SelectReactor
            reactor = SelectReactor()
            reactor._registerAsIOThread = False  # the global reactor's thread stays what it is
            running = threading.Event()
            reactor.callWhenRunning(running.set)
            _reactor_thread = threading.Thread(
                target=reactor.run, kwargs={'installSignalHandlers': False},
                name='socs_tcp device emulators', daemon=True)
            _reactor_thread.start()
            if not running.wait(CALL_TIMEOUT):
                raise RuntimeError('the device emulators\' reactor did not start')
            _reactor = reactor
        return _reactor


def _call(f: Callable, *args):
    """Run ``f(*args)`` in the emulators' reactor; return its (Deferred's) result, or raise."""
    reactor = _emulators_reactor()
    if threading.current_thread() is _reactor_thread:
        raise ReactorThreadError('the device emulator blocks: call it from the test\'s thread')
    answers: queue.Queue = queue.Queue()
    reactor.callFromThread(lambda: defer.maybeDeferred(f, *args).addBoth(answers.put))
    try:
        result = answers.get(timeout=CALL_TIMEOUT)
    except queue.Empty:
        raise TimeoutError(f'the device emulator did not answer within {CALL_TIMEOUT} s') from None
    if isinstance(result, Failure):
        result.raiseException()
    return result


def create_device_emulator(responses: dict | None, relay_type: str, port: int = 9001,
                           encoding: str | None = 'utf-8', reconnect: bool = False):
    """Create a pytest fixture that yields a running `DeviceEmulator`.

    Parameters
    ----------
    responses : dict
        Command -> response (see `DeviceEmulator.define_responses`).
    relay_type : str
        ``'tcp'``; ``'serial'`` (socat and a pty) is handed to SOCS's own
        emulator, without `DeviceEmulator.inject`.
    port : int
        Port to listen on, on 127.0.0.1 (0: a free one, in ``socket_port``).
    encoding : str or None
        How commands and responses are encoded; None: raw bytes.
    reconnect : bool
        Keep accepting clients after the first one hung up.

    Returns
    -------
    function
        A pytest fixture (function scope): the emulator, shut down after the test.

    Raises
    ------
    NotImplementedError
        ``relay_type`` is neither (the type SOCS raises), or ``'serial'``
        without socs installed.
    """
    import pytest

    if relay_type == 'serial':
        # A serial relay is socat and a pty, nothing socs_tcp runs: SOCS's own emulator serves it.
        try:
            from socs.testing import device_emulator
        except ImportError:
            raise NotImplementedError("relay_type='serial' needs socs installed "
                                      '(socs.testing.device_emulator serves it)') from None
        return device_emulator.create_device_emulator(responses, relay_type, port=port,
                                                      encoding=encoding, reconnect=reconnect)
    if relay_type != 'tcp':
        raise NotImplementedError(
            f"relay_type must be 'tcp' (or 'serial', served by SOCS's emulator), got {relay_type!r}")
    port = arguments.port(port, allow_zero=True)

    @pytest.fixture()
    def create_device() -> Iterator[DeviceEmulator]:
        device = DeviceEmulator(responses, encoding, reconnect=reconnect)
        device.create_tcp_relay(port)
        yield device
        device.shutdown()

    return create_device


class _EmulatorServer(DeviceServer):
    """The emulator's device: each read is one command; ``hold`` faults; one client's life without reconnect."""

    def __init__(self, emulator: DeviceEmulator, port: int, reactor) -> None:
        super().__init__(self._answer, framer=_one_read, port=port, reactor=reactor)
        self._emulator = emulator
        self._hold: float | None = None     # seconds the next reply is held
        self._held: list[bytes] = []        # replies due, waiting for a connection

    def _answer(self, request: bytes) -> bytes | None:
        reply = self._emulator._reply_to(request)
        if reply is None or self._hold is None:
            return reply
        seconds, self._hold = self._hold, None
        self._reactor.callLater(seconds, self._deliver_held, reply)
        return None

    def _deliver_held(self, reply: bytes) -> None:
        live = [c for c in self._connections if not c.closing]
        if live:
            live[-1].write_now(reply)
        else:
            self._held.append(reply)

    def _connection_made(self, conn) -> None:
        super()._connection_made(conn)
        held, self._held = self._held, []
        for reply in held:
            conn.write_now(reply)

    def _connection_gone(self, conn) -> None:
        # Ended by the client (not by a fault of ours: then the transport was
        # told to disconnect first): without reconnect, SOCS's emulator is done.
        transport = conn.transport
        ours = getattr(transport, 'disconnecting', False) or getattr(transport, '_aborting', False)
        super()._connection_gone(conn)
        if not ours and not self._emulator.reconnect and not self._connections:
            log.info('Device emulator: client disconnected; not listening any more (reconnect=False)')
            self._stop_listening()


def _one_read(buf: bytearray) -> bytes | None:
    """Framer: whatever one read brought is one command, as SOCS's emulator takes it."""
    if not buf:
        return None
    data = bytes(buf)
    buf.clear()
    return data


class DeviceEmulator:
    """A device answering commands from a dict, with faults on demand.

    Parameters
    ----------
    responses : dict or None
        Initial responses (see `define_responses`).
    encoding : str or None
        Commands are decoded and responses encoded with it; None: bytes both ways.
    reconnect : bool
        Keep accepting clients after the first one hung up.

    Attributes
    ----------
    responses : dict
    default_response : str, bytes or None
        Sent for any command not in ``responses`` (None: nothing is sent).
    encoding : str or None
    reconnect : bool
    socket_port : int or None
        The port while the TCP relay runs.
    server : DeviceServer or None
        The simulated device, for tests that want more than `inject`.
    """

    def __init__(self, responses: dict | None, encoding: str | None = 'utf-8',
                 reconnect: bool = False) -> None:
        self.responses = deepcopy(responses)
        self.default_response = None
        self.encoding = encoding
        self.reconnect = bool(reconnect)
        self.socket_port: int | None = None
        self.server: _EmulatorServer | None = None
        self._control: ControlChannel | None = None
        self._type: str | None = None

    # -- SOCS's API -------------------------------------------------------------
    def get_response(self, msg):
        """The response to ``msg`` (None: no response), as SOCS's emulator gives it."""
        if self.responses is None:
            return None
        if msg not in self.responses and self.default_response is not None:
            return self.default_response
        value = self.responses.get(msg)
        if isinstance(value, list):
            if not value:
                log.info('Device emulator: the responses to {msg!r} are used up', msg=msg)
                return None
            return value.pop(0)
        if value is None:
            log.info('Device emulator: no response defined for {msg!r}', msg=msg)
        return value

    def define_responses(self, responses: dict, default_response=None) -> None:
        """Replace the responses: ``{command: response}``; a list answers with its items in turn."""
        self.responses = deepcopy(responses)
        self.default_response = default_response

    def update_responses(self, responses: dict) -> None:
        """Add to (or change) the current responses."""
        if self.responses is None:
            self.responses = {}
        self.responses.update(responses)

    def create_tcp_relay(self, port: int) -> None:
        """Listen on 127.0.0.1 ``port`` (0: a free one); return once listening.

        A port still held (by the previous test's emulator) is tried again
        for up to `BIND_TIMEOUT` seconds.

        Raises
        ------
        CannotListenError
            The port stayed taken.
        ReactorThreadError
            Called in the reactor thread (where it would wait for itself).
        """
        port = arguments.port(port, allow_zero=True)
        reactor = _emulators_reactor()
        self._type = 'tcp'
        self.server = _EmulatorServer(self, port, reactor)
        self._control = ControlChannel(self.server, reactor=reactor)
        deadline = time.monotonic() + BIND_TIMEOUT
        while True:
            try:
                self.socket_port = _call(self.server.start)
                return
            except CannotListenError:
                if time.monotonic() > deadline:
                    raise
                log.warn('Device emulator: port {port} is taken; trying again', port=port)
                time.sleep(0.2)

    def shutdown(self) -> None:
        """Stop listening and close the connection (idempotent)."""
        server, self.server = self.server, None
        if server is None:
            return
        if server.reactor.running and self._control is not None:
            _call(self._control.stop)
            _call(server.stop)
        self.socket_port = None

    def __del__(self) -> None:
        # Never blocks (a collection may run in any thread, or at exit).
        server, self.server = getattr(self, 'server', None), None
        if server is not None and server.reactor.running:
            server.reactor.callFromThread(server.stop)

    # -- faults -----------------------------------------------------------------
    def inject(self, command: str, *args) -> str:
        """Inject a fault: one of the simulators' control commands (`socs_tcp.sim.control`).

        ``inject('delay', 2.0)``, ``inject('silent', 'on')``, ``inject('hangup')``,
        ``inject('stop')``, ``inject('start')``, ``inject('garbage', b'\\xff')``
        (bytes or hex), ... and ``inject('hold', seconds)`` (see the module).
        Returns once the fault is in effect.

        Returns
        -------
        str
            The simulator's answer (e.g. ``'delay 2'``).

        Raises
        ------
        ValueError
            An unknown command or bad arguments (the simulator's message).
        RuntimeError
            The emulator is not running.
        """
        if self.server is None or self._control is None:
            raise RuntimeError('inject(): the emulator is not running (create_tcp_relay first)')
        if not isinstance(command, str) or not command.strip():
            raise TypeError(f'command must be a non-empty str, got {command!r}')
        words = [command, *(a.hex() if isinstance(a, bytes | bytearray) else str(a) for a in args)]
        if command == 'hold':
            if len(args) != 1:
                raise ValueError('usage: inject("hold", seconds)')
            seconds = arguments.seconds(float(args[0]), 'seconds', allow_zero=True)
            _call(setattr, self.server, '_hold', seconds)
            return f'next reply held {seconds:g} s'
        answer = _call(self._control.execute, ' '.join(words))
        if answer.startswith('ERR'):
            raise ValueError(f'inject{(command, *args)!r}: {answer[4:]}')
        return answer[3:]

    # -- internals --------------------------------------------------------------
    def _reply_to(self, raw: bytes) -> bytes | None:
        """What the device sends for one read (reactor thread)."""
        msg: str | bytes = raw.strip().decode(self.encoding) if self.encoding else raw
        if not msg:
            return None
        response = self.get_response(msg)
        if response is None:
            return None
        if self.encoding:
            if isinstance(response, bytes):
                response = response.decode()
            return response.encode(self.encoding)
        return response if isinstance(response, bytes) else str(response).encode()
