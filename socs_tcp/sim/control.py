"""Run-time fault control for a running simulator: a line protocol on its own port.

An operator (``nc 127.0.0.1 PORT``), the demo or a test sends one command per
line; each is answered by one line, ``OK ...`` or ``ERR ...``. The commands
(defined once, in `socs_tcp.sim._commands`; ``help`` lists them, and so does
``socs-tcp simulate --help``) are these::

{table}

They are the fault commands of every simulated device here: the simulators
``socs-tcp simulate`` runs, the benchmarks' echo devices
(``python -m socs_tcp.sim.echo --control``), the demo and the tests.

`ControlChannel` is the server side (it runs in the simulator's reactor);
`SimControl` is a blocking client for scripts, the demo and tests, with one
method per command. Don't call `SimControl` from the reactor thread of the
process that runs the channel: it would wait for an answer that reactor can't
send.
"""

from __future__ import annotations

import socket

from twisted.internet import defer
from twisted.internet.interfaces import IAddress, IDelayedCall, IListeningPort, ITransport
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from socs_tcp import _arguments as arguments
from socs_tcp.sim import _commands as commands
from socs_tcp.sim._commands import CommandError

log = Logger(namespace='socs_tcp.sim.control')

# The docstring's command list, from the one definition.
__doc__ = (__doc__ or '').replace('{table}', '\n'.join(commands.help_lines('    ')))

#: The answer to ``help``: every command's usage.
HELP = ' | '.join(c.usage for c in commands.COMMANDS)


class ControlChannel:
    """Accepts control commands for one `socs_tcp.sim.DeviceServer`.

    Parameters
    ----------
    server : DeviceServer
        The simulated device to act on. If it has a ``model`` with a
        ``describe()`` method, ``status`` appends the device's state.
    host : str
        Interface to listen on.
    port : int
        Port (0: pick a free one).
    reactor : optional
        The reactor (default: the global one).
    """

    def __init__(self, server, host: str = '127.0.0.1', port: int = 0, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.server = server
        self.host = host
        self.port = arguments.port(port, allow_zero=True)
        self._reactor = reactor
        self._listening: IListeningPort | None = None
        self._restart_call: IDelayedCall | None = None

    def start(self) -> int:
        """Listen (reactor thread); return the port."""
        listening = self._reactor.listenTCP(self.port, _ControlFactory(self), interface=self.host)
        self._listening = listening
        self.port = listening.getHost().port
        return self.port

    def stop(self) -> defer.Deferred:
        """Stop listening and cancel a pending restart (reactor thread).

        Returns a Deferred that fires once the port is closed.
        """
        self._cancel_restart()
        if self._listening is None:
            return defer.succeed(None)
        listening, self._listening = self._listening, None
        return defer.maybeDeferred(listening.stopListening)

    def _cancel_restart(self) -> None:
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        self._restart_call = None

    # -- commands ---------------------------------------------------------------
    def execute(self, line: str) -> defer.Deferred:
        """Run one command line; the Deferred fires with the answer line."""
        words = line.split()
        if not words:
            return defer.succeed('ERR empty command (try: help)')
        try:
            cmd = commands.command(words[0])
            values = cmd.parse(words[1:])
        except CommandError as exc:
            return defer.succeed(f'ERR {exc}')
        d = defer.maybeDeferred(getattr(self, '_cmd_' + cmd.method_name), *values)

        def ok(text):
            log.info('control: {line} -> OK {text}', line=line, text=text or '')
            return f'OK {text}'.rstrip()

        def failed(failure):
            if failure.check(ValueError, TypeError):
                return f'ERR {failure.getErrorMessage()}'
            log.failure('control command {line!r} failed', failure, line=line)
            return f'ERR {failure.type.__name__}: {failure.getErrorMessage()}'

        return d.addCallbacks(ok, failed)

    # One handler per command of `socs_tcp.sim._commands.COMMANDS`, called
    # with the values its parameters parsed to.
    def _cmd_help(self) -> str:
        return HELP

    def _cmd_status(self) -> str:
        srv = self.server
        faults = srv.faults
        parts = [f'listening={int(srv.listening)}', f'port={srv.port}',
                 f'connections={srv.connection_count}', f'requests={len(srv.requests)}',
                 f'silent={int(faults.silent)}', f'delay={faults.delay:g}',
                 f'fragments={faults.fragment_size or 0}',
                 f'blackhole={int(srv.blackholed)}',
                 f'restart_pending={int(self._restart_call is not None and self._restart_call.active())}']
        if hasattr(srv, 'bridge_status'):        # a simulator behind a serial/GPIB bridge
            parts.append(srv.bridge_status())
        model = getattr(srv, 'model', None)
        if model is not None and hasattr(model, 'describe'):
            parts.append(model.describe())
        return ' '.join(parts)

    def _cmd_drop(self) -> defer.Deferred:
        count = self.server.connection_count
        d = self.server.drop_connections()
        return d.addCallback(lambda _: f'dropped {count} connections')

    def _cmd_hangup(self) -> defer.Deferred:
        count = self.server.connection_count
        d = self.server.hangup()
        return d.addCallback(lambda _: f'closed {count} connections')

    def _cmd_drop_after(self, n: int) -> str:
        self.server.drop_after(n)
        return f'dropping at request {n} from now'

    def _cmd_silent(self, on: bool) -> str:
        self.server.set_silent(on)
        return f'silent {"on" if on else "off"}'

    def _cmd_delay(self, seconds: float) -> str:
        self.server.set_delay(seconds)
        return f'delay {seconds:g}'

    def _cmd_fragments(self, size: int | None, interval: float = 0.0) -> str:
        self.server.set_fragments(size, interval)
        return 'fragments off' if size is None else f'fragments {size} {interval:g}'

    def _cmd_garbage(self, data: bytes) -> str:
        self.server.set_garbage(data)
        return f'garbage {len(data)} bytes before the next reply'

    def _cmd_stop(self) -> defer.Deferred:
        self._cancel_restart()
        return self.server.stop().addCallback(lambda _: 'stopped')

    def _cmd_start(self) -> defer.Deferred:
        self._cancel_restart()
        return self.server.start().addCallback(lambda port: f'listening on {port}')

    def _cmd_restart(self, seconds: float) -> defer.Deferred:
        self._cancel_restart()

        def back():
            self._restart_call = None
            d = self.server.start()
            d.addCallback(lambda port: log.info('control: device is back on port {port}',
                                                port=port))
            d.addErrback(lambda failure: log.failure('control: restart could not listen again',
                                                     failure))

        def stopped(_):
            self._restart_call = self._reactor.callLater(seconds, back)
            return f'stopped; back in {seconds:g} s'

        return self.server.stop().addCallback(stopped)

    def _cmd_blackhole(self, on: bool) -> defer.Deferred:
        self._cancel_restart()
        d = self.server.set_blackhole(on)
        if on:
            return d.addCallback(lambda _: 'blackholed: connections silent, new ones hang')
        return d.addCallback(lambda _: f'back: listening on {self.server.port}')

    def _cmd_reset(self) -> str:
        self.server.reset_faults()
        return 'faults cleared'

    def _bridge(self, name: str):
        if not hasattr(self.server, 'set_late'):
            raise commands.CommandError(f'{name}: this simulator is not a bridge')
        return self.server

    def _cmd_late(self, seconds: float) -> str:
        self._bridge('late').set_late(seconds)
        return f'next reply {seconds:g} s late' if seconds else 'late off'

    def _cmd_one_client(self, on: bool) -> str:
        self._bridge('one-client').set_one_client(on)
        return f'one client {"on" if on else "off"}'


class _ControlProtocol(LineOnlyReceiver):
    delimiter = b'\n'
    MAX_LENGTH = 4096
    factory: _ControlFactory
    transport: ITransport

    def lineReceived(self, line: bytes):
        text = line.decode('utf-8', 'replace').strip()
        if not text:
            return
        d = self.factory.channel.execute(text)
        d.addCallback(lambda answer: self.sendLine(answer.encode('utf-8')))

    def lineLengthExceeded(self, line):
        self.sendLine(b'ERR line too long')
        self.transport.loseConnection()


class _ControlFactory(Factory[_ControlProtocol]):
    noisy = False

    def __init__(self, channel: ControlChannel):
        self.channel = channel

    def buildProtocol(self, addr: IAddress | None) -> _ControlProtocol:
        protocol = _ControlProtocol()
        protocol.factory = self
        return protocol


class SimControlError(RuntimeError):
    """The simulator answered ``ERR`` (the message says why)."""


class SimControl:
    """Blocking client of a simulator's control channel.

    Each command opens a connection, sends one line and reads one answer, so
    a `SimControl` keeps working across simulator restarts.

    Parameters
    ----------
    host : str
        Control channel address.
    port : int
        Control channel port (printed as ``CONTROL <n>`` by ``socs-tcp simulate``).
    timeout : float
        Seconds to wait for the answer.

    Raises
    ------
    TypeError, ValueError
        For a bad argument, naming it.

    Examples
    --------
    >>> ctl = SimControl('127.0.0.1', 40123)      # doctest: +SKIP
    >>> ctl.restart(3)                            # doctest: +SKIP
    'stopped; back in 3 s'
    """

    def __init__(self, host: str, port: int, timeout: float = 5.0):
        if not isinstance(host, str) or not host:
            raise TypeError(f'host must be a non-empty str, got {host!r}')
        self.host = host
        self.port = arguments.port(port)
        self.timeout = arguments.seconds(timeout, 'timeout')

    def send(self, command: str) -> str:
        """Send one command; return the text after ``OK``.

        Raises
        ------
        SimControlError
            If the simulator answered ``ERR``.
        ConnectionError
            If the channel can't be reached or doesn't answer within ``timeout``.
        """
        if not isinstance(command, str) or '\n' in command or not command.strip():
            raise ValueError(f'command must be one non-empty line, got {command!r}')
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
                sock.sendall(command.encode('utf-8') + b'\n')
                answer = b''
                while not answer.endswith(b'\n'):
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
        except TimeoutError as exc:
            raise ConnectionError(f'simulator control {self.host}:{self.port} did not answer '
                                  f'{command!r} within {self.timeout} s') from exc
        text = answer.decode('utf-8', 'replace').strip()
        if text == 'OK' or text.startswith('OK '):
            return text[3:]
        if text.startswith('ERR'):
            raise SimControlError(f'{command!r}: {text[4:]}')
        raise ConnectionError(f'simulator control {self.host}:{self.port}: unexpected answer '
                              f'{text!r} to {command!r}')

    def _run(self, name: str, *values: object) -> str:
        """Send command ``name`` with ``values``, written as `socs_tcp.sim._commands` defines."""
        return self.send(commands.command(name).line(*values))

    # -- one method per command of socs_tcp.sim._commands.COMMANDS, same name ------
    def status(self) -> dict[str, str]:
        """The simulator's state as a dict of strings (``listening``, ``connections``, ...)."""
        return dict(part.split('=', 1) for part in self._run('status').split() if '=' in part)

    def drop(self) -> str:
        """Drop every open device connection (RST: the peer sees a reset)."""
        return self._run('drop')

    def hangup(self) -> str:
        """Hang up every open device connection (FIN: the peer reads the end of the stream)."""
        return self._run('hangup')

    def drop_after(self, n: int) -> str:
        """Drop the connection carrying the ``n``-th next request."""
        return self._run('drop-after', n)

    def silent(self, on: bool = True) -> str:
        """Stop (or resume) answering requests."""
        return self._run('silent', on)

    def delay(self, seconds: float) -> str:
        """Answer each request ``seconds`` late."""
        return self._run('delay', seconds)

    def fragments(self, size: int | None, interval: float = 0.0) -> str:
        """Send replies in ``size``-byte chunks, ``interval`` s apart (None: whole)."""
        if size is None:
            return self._run('fragments', None)
        return self._run('fragments', size, interval)

    def garbage(self, data: bytes) -> str:
        """Put ``data`` (non-empty) in front of the next reply."""
        return self._run('garbage', data)

    def stop(self) -> str:
        """Take the device away (stop listening, drop every connection)."""
        return self._run('stop')

    def start(self) -> str:
        """Bring the device back on the same port."""
        return self._run('start')

    def restart(self, seconds: float) -> str:
        """Take the device away now and bring it back after ``seconds``."""
        return self._run('restart', seconds)

    def blackhole(self, on: bool = True) -> str:
        """Vanish from the network (open connections silent, new ones hang), or come back."""
        return self._run('blackhole', on)

    def reset(self) -> str:
        """Turn every reply fault off."""
        return self._run('reset')

    def late(self, seconds: float) -> str:
        """Bridges: the next reply comes ``seconds`` late (0: on time), to the client connected then."""
        return self._run('late', seconds)

    def one_client(self, on: bool = True) -> str:
        """Bridges: take one TCP client at a time (or any number)."""
        return self._run('one-client', on)

    def help(self) -> str:
        """Every command's usage, ``|``-separated."""
        return self._run('help')
