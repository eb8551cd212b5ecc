"""Run-time fault control for a running simulator: a line protocol on its own port.

An operator (``nc 127.0.0.1 PORT``), the demo or a test sends one command per
line; each is answered by one line, ``OK ...`` or ``ERR ...``:

==========================  ==================================================
``status``                  ``OK listening=1 connections=1 requests=42 ...``
                            (server state, faults, then the device's state)
``drop``                    abort every open device connection (keeps listening)
``hangup``                  close every open device connection cleanly (FIN),
                            as a device that hangs up (keeps listening)
``drop-after <n>``          abort the connection carrying the n-th next request
``silent on|off``           read requests but never answer them
``delay <seconds>``         answer each request that much later
``fragments <n> [<s>]``     send replies in n-byte chunks, s seconds apart;
                            ``fragments off`` sends them whole again
``garbage <hex>``           put these bytes in front of the next reply (once)
``stop``                    the device goes away: stop listening, drop connections
``start``                   listen again (same port)
``restart <seconds>``       ``stop`` now, ``start`` after that many seconds
``blackhole on|off``        vanish from the network: open connections go silent,
                            new ones hang; ``off`` (or ``start``) comes back
``reset``                   clear every reply fault (silent, delay, fragments, ...)
``late <seconds>|off``      bridges only: the instrument answers the next request
                            that late, to whichever client is connected then
                            (held for the next connection if none is)
``one-client on|off``       bridges only: take one TCP client at a time
``help``                    list the commands
==========================  ==================================================

These are the fault commands of every simulated device here: the
simulators ``socs-tcp simulate`` runs, the benchmarks' echo devices
(``python -m socs_tcp.sim.echo --control``), the demo and the tests.

`ControlChannel` is the server side (it runs in the simulator's reactor);
`SimControl` is a blocking client for scripts, the demo and tests. Don't call
`SimControl` from the reactor thread of the process that runs the channel: it
would wait for an answer that reactor can't send.
"""

from __future__ import annotations

import socket

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from socs_tcp import _arguments as arguments

log = Logger(namespace='socs_tcp.sim.control')

HELP = ('status | drop | hangup | drop-after <n> | silent on|off | delay <s> | '
        'fragments <n> [<s>]|off | garbage <hex> | stop | start | restart <s> | '
        'blackhole on|off | reset | late <s>|off | one-client on|off | help')


class CommandError(ValueError):
    """A control command was malformed (answered with ``ERR``)."""


def _number(text: str, name: str, parse=float):
    """``text`` as a number (checked for range by whoever uses it)."""
    try:
        return parse(text)
    except ValueError:
        kind = 'an integer' if parse is int else 'a number'
        raise CommandError(f'{name} must be {kind}, got {text!r}') from None


def _seconds(text: str, name: str) -> float:
    return arguments.seconds(_number(text, name), name, allow_zero=True)


def _on_off(text: str, name: str) -> bool:
    word = text.lower()
    if word in ('on', '1', 'true'):
        return True
    if word in ('off', '0', 'false'):
        return False
    raise CommandError(f"{name} must be 'on' or 'off', got {text!r}")


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
        self._listening = None
        self._restart_call = None

    def start(self) -> int:
        """Listen (reactor thread); return the port."""
        factory = Factory.forProtocol(_ControlProtocol)
        factory.noisy = False
        factory.channel = self
        self._listening = self._reactor.listenTCP(self.port, factory, interface=self.host)
        self.port = self._listening.getHost().port
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
        name, args = words[0].lower(), words[1:]
        method = getattr(self, '_cmd_' + name.replace('-', '_'), None)
        if method is None:
            return defer.succeed(f'ERR unknown command {name!r} (try: help)')
        d = defer.maybeDeferred(method, *args)

        def ok(text):
            log.info('control: {line} -> OK {text}', line=line, text=text or '')
            return f'OK {text}'.rstrip()

        def failed(failure):
            if failure.check(CommandError, ValueError, TypeError):
                return f'ERR {failure.getErrorMessage()}'
            log.failure('control command {line!r} failed', failure, line=line)
            return f'ERR {failure.type.__name__}: {failure.getErrorMessage()}'

        return d.addCallbacks(ok, failed)

    @staticmethod
    def _arity(args, n: int, usage: str) -> None:
        if len(args) != n:
            raise CommandError(f'usage: {usage}')

    def _cmd_help(self, *args):
        return HELP

    def _cmd_status(self, *args):
        srv = self.server
        faults = srv.faults
        parts = [f'listening={int(srv.listening)}', f'port={srv.port}',
                 f'connections={srv.connection_count}', f'requests={len(srv.requests)}',
                 f'silent={int(faults.silent)}', f'delay={faults.delay:g}',
                 f'fragments={faults.fragment_size or 0}',
                 f'blackhole={int(srv.blackholed)}',
                 f'restart_pending={int(self._restart_call is not None and self._restart_call.active())}']
        if hasattr(srv, 'bridge_status'):
            parts.append(srv.bridge_status())
        model = getattr(srv, 'model', None)
        if model is not None and hasattr(model, 'describe'):
            parts.append(model.describe())
        return ' '.join(parts)

    def _cmd_drop(self, *args):
        self._arity(args, 0, 'drop')
        count = self.server.connection_count
        d = self.server.drop_connections()
        return d.addCallback(lambda _: f'dropped {count} connections')

    def _cmd_hangup(self, *args):
        self._arity(args, 0, 'hangup')
        count = self.server.connection_count
        d = self.server.hang_up()
        return d.addCallback(lambda _: f'closed {count} connections')

    def _cmd_drop_after(self, *args):
        self._arity(args, 1, 'drop-after <n>')
        n = _number(args[0], 'n', int)
        self.server.drop_after(n)
        return f'dropping at request {n} from now'

    def _cmd_silent(self, *args):
        self._arity(args, 1, 'silent on|off')
        on = _on_off(args[0], 'silent')
        self.server.set_silent(on)
        return f'silent {"on" if on else "off"}'

    def _cmd_delay(self, *args):
        self._arity(args, 1, 'delay <seconds>')
        seconds = _seconds(args[0], 'delay')
        self.server.set_delay(seconds)
        return f'delay {seconds:g}'

    def _cmd_fragments(self, *args):
        if len(args) == 1 and args[0].lower() == 'off':
            self.server.set_fragments(None)
            return 'fragments off'
        if len(args) not in (1, 2):
            raise CommandError('usage: fragments <size> [<interval>] | fragments off')
        size = _number(args[0], 'size', int)
        interval = _seconds(args[1], 'interval') if len(args) == 2 else 0.0
        self.server.set_fragments(size, interval)
        return f'fragments {size} {interval:g}'

    def _cmd_garbage(self, *args):
        self._arity(args, 1, 'garbage <hex>')
        try:
            data = bytes.fromhex(args[0])
        except ValueError:
            raise CommandError(f'garbage must be hex digits, got {args[0]!r}') from None
        self.server.set_garbage(data)
        return f'garbage {len(data)} bytes before the next reply'

    def _cmd_stop(self, *args):
        self._arity(args, 0, 'stop')
        self._cancel_restart()
        return self.server.stop().addCallback(lambda _: 'stopped')

    def _cmd_start(self, *args):
        self._arity(args, 0, 'start')
        self._cancel_restart()
        return self.server.start().addCallback(lambda port: f'listening on {port}')

    def _cmd_restart(self, *args):
        self._arity(args, 1, 'restart <seconds>')
        seconds = _seconds(args[0], 'seconds')
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

    def _cmd_blackhole(self, *args):
        self._arity(args, 1, 'blackhole on|off')
        on = _on_off(args[0], 'blackhole')
        self._cancel_restart()
        d = self.server.set_blackhole(on)
        if on:
            return d.addCallback(lambda _: 'blackholed: connections silent, new ones hang')
        return d.addCallback(lambda _: f'back: listening on {self.server.port}')

    def _cmd_reset(self, *args):
        self._arity(args, 0, 'reset')
        self.server.reset_faults()
        return 'faults cleared'

    def _bridge(self, command: str):
        if not hasattr(self.server, 'set_late'):
            raise CommandError(f'{command}: this simulator is not a bridge')
        return self.server

    def _cmd_late(self, *args):
        self._arity(args, 1, 'late <seconds>|off')
        seconds = 0.0 if args[0].lower() == 'off' else _seconds(args[0], 'late')
        self._bridge('late').set_late(seconds)
        return f'next reply {seconds:g} s late' if seconds else 'late off'

    def _cmd_one_client(self, *args):
        self._arity(args, 1, 'one-client on|off')
        on = _on_off(args[0], 'one-client')
        self._bridge('one-client').set_one_client(on)
        return f'one client {"on" if on else "off"}'


class _ControlProtocol(LineOnlyReceiver):
    delimiter = b'\n'
    MAX_LENGTH = 4096

    def lineReceived(self, line: bytes):
        text = line.decode('utf-8', 'replace').strip()
        if not text:
            return
        d = self.factory.channel.execute(text)
        d.addCallback(lambda answer: self.sendLine(answer.encode('utf-8')))

    def lineLengthExceeded(self, line):
        self.sendLine(b'ERR line too long')
        self.transport.loseConnection()


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

    # -- one method per command ------------------------------------------------
    def status(self) -> dict:
        """The simulator's state as a dict of strings (``listening``, ``connections``, ...)."""
        return dict(part.split('=', 1) for part in self.send('status').split() if '=' in part)

    def drop(self) -> str:
        """Abort every open device connection."""
        return self.send('drop')

    def hang_up(self) -> str:
        """Close every open device connection cleanly (the device hangs up)."""
        return self.send('hangup')

    def drop_after(self, n: int) -> str:
        """Abort the connection carrying the ``n``-th next request."""
        return self.send(f'drop-after {int(n)}')

    def silent(self, on: bool = True) -> str:
        """Stop (or resume) answering requests."""
        return self.send(f'silent {"on" if on else "off"}')

    def delay(self, seconds: float) -> str:
        """Answer each request ``seconds`` late."""
        return self.send(f'delay {float(seconds)!r}')

    def fragments(self, size: int | None, interval: float = 0.0) -> str:
        """Send replies in ``size``-byte chunks (None: whole)."""
        if size is None:
            return self.send('fragments off')
        return self.send(f'fragments {int(size)} {float(interval)!r}')

    def garbage(self, data: bytes) -> str:
        """Put ``data`` in front of the next reply."""
        data = bytes(data)
        if not data:
            raise ValueError('data must not be empty')
        return self.send(f'garbage {data.hex()}')

    def stop(self) -> str:
        """Take the device away (stop listening, drop connections)."""
        return self.send('stop')

    def start(self) -> str:
        """Bring the device back on the same port."""
        return self.send('start')

    def restart(self, seconds: float) -> str:
        """Take the device away now and bring it back after ``seconds``."""
        return self.send(f'restart {float(seconds)!r}')

    def blackhole(self, on: bool = True) -> str:
        """Vanish from the network (open connections silent, new ones hang), or come back."""
        return self.send(f'blackhole {"on" if on else "off"}')

    def reset(self) -> str:
        """Clear every reply fault."""
        return self.send('reset')

    def late(self, seconds: float) -> str:
        """Bridges: the next reply comes ``seconds`` late (0: cancel), to the client connected then."""
        return self.send(f'late {float(seconds)!r}' if seconds else 'late off')

    def one_client(self, on: bool = True) -> str:
        """Bridges: take one TCP client at a time (or any number)."""
        return self.send(f'one-client {"on" if on else "off"}')
