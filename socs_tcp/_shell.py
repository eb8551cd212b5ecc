"""``socs-tcp shell HOST:PORT``: talk to a device by hand, as ``pyvisa-shell`` does.

Type a command, see the reply and how long it took. A line is sent as a
query when it ends with ``?`` and as a write otherwise (``--bare`` changes
that); the verbs say it outright:

=====================  ======================================================
``query TEXT``         send TEXT (+ write termination), show the reply
``write TEXT``         send TEXT (+ write termination), read nothing
``read``               show the next reply (up to the read termination)
``read N``             show the next N bytes
``timeout [S]``        show or set the timeout, in seconds
``stats``              the connection's counters (connects, timeouts, ...)
``help`` / ``exit``    this list / leave (Ctrl-D too)
=====================  ======================================================

TEXT may hold escapes: ``\\r``, ``\\n``, ``\\t``, ``\\\\``, ``\\xNN``.
Replies show as text, or as a hex dump with ``--binary``. Lines are edited
and recalled with readline (history kept in ``--history``). ``--transcript
FILE`` appends every exchange, timed, to FILE; ``--trace`` shows every byte
in and out as it moves.

The connection is socs_tcp's (`socs_tcp.TCPInterface`): it reconnects in the
background when the device goes away, and the shell says so when it goes
and when it is back. ``--gpib ADDR`` talks to the instrument at GPIB address
ADDR behind a Prologix GPIB-Ethernet box (``++mode 1``, ``++auto 1``,
``++addr ADDR`` after each connect; ``read`` sends ``++read eoi``);
``--moxa`` is for a serial device behind a Moxa (or any) serial server: a
late reply the bridge kept is flushed after each connect.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from socs_tcp import _arguments as arguments
from socs_tcp import _tap as tap

if TYPE_CHECKING:
    from socs_tcp import TCPInterface

VERBS = ('query', 'write', 'read', 'timeout', 'stats', 'help', 'exit', 'quit')
#: Names accepted for a termination, besides escapes such as ``\\r\\n``.
TERMINATIONS = {'lf': b'\n', 'cr': b'\r', 'crlf': b'\r\n', 'none': b''}
#: Seconds of quiet that end a bridge flush, and the most a flush may take.
FLUSH_QUIET, FLUSH_LIMIT = 0.2, 2.0


class ShellError(ValueError):
    """A line the shell cannot run (the message says why)."""


@dataclass(frozen=True)
class Command:
    """One parsed line: ``verb`` and its argument (bytes to send, a count or seconds)."""

    verb: str
    data: bytes = b''
    number: float | None = None


def unescape(text: str) -> bytes:
    """``text`` with ``\\r``, ``\\n``, ``\\t``, ``\\\\`` and ``\\xNN`` turned into bytes.

    Raises
    ------
    ShellError
        A bad escape, or a character that is not ASCII/Latin-1 (say which).
    """
    if '\\' not in text:
        try:
            return text.encode('latin-1')
        except UnicodeEncodeError as exc:
            raise ShellError(f'only Latin-1 text can be sent, got {text[exc.start]!r} '
                             '(use \\xNN escapes for bytes)') from None
    quoted = "b'" + text.replace("'", "\\'") + "'"
    try:
        return ast.literal_eval(quoted)
    except (SyntaxError, ValueError) as exc:
        raise ShellError(f'bad escape in {text!r}: {exc.msg if hasattr(exc, "msg") else exc}') from None


def parse_termination(text: str) -> bytes:
    """A termination given on the command line: ``lf``, ``cr``, ``crlf``, ``none`` or escapes."""
    named = TERMINATIONS.get(text.lower())
    if named is not None:
        return named
    try:
        return unescape(text)
    except ShellError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as (host, port).

    Raises
    ------
    argparse.ArgumentTypeError
        No port, or not a port number.
    """
    host, sep, port = text.rpartition(':')
    if not sep or not host:
        raise argparse.ArgumentTypeError(f'expected HOST:PORT (e.g. 192.168.1.12:5025), got {text!r}')
    try:
        return host.strip('[]'), arguments.port(int(port))
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f'port must be a number 1-65535, got {port!r}') from None


def parse_line(line: str, bare: str = 'auto') -> Command | None:
    """Parse one typed line (None: nothing to do).

    Parameters
    ----------
    line : str
        What was typed.
    bare : str
        What a line without a verb is: ``'query'``, ``'write'``, or
        ``'auto'`` (a query if it ends with ``?``, else a write).

    Raises
    ------
    ShellError
        The line cannot be run (says why).
    """
    text = line.strip()
    if not text:
        return None
    word, _, rest = text.partition(' ')
    verb = word.lower()
    rest = rest.strip()
    if verb in ('exit', 'quit', 'help', 'stats'):
        if rest:
            raise ShellError(f'{verb} takes no argument, got {rest!r}')
        return Command('exit' if verb == 'quit' else verb)
    if verb in ('query', 'write'):
        if not rest:
            raise ShellError(f'usage: {verb} TEXT')
        return Command(verb, unescape(rest))
    if verb == 'read':
        if not rest:
            return Command('read')
        try:
            n = int(rest)
        except ValueError:
            raise ShellError(f'usage: read [N]: N must be a whole number of bytes, got {rest!r}') from None
        if n < 1:
            raise ShellError(f'read N: N must be at least 1, got {n}')
        return Command('read', number=n)
    if verb == 'timeout':
        if not rest:
            return Command('timeout')
        try:
            seconds = float(rest)
        except ValueError:
            raise ShellError(f'usage: timeout [SECONDS], got {rest!r}') from None
        if not seconds > 0 or seconds == float('inf'):
            raise ShellError(f'timeout must be a number of seconds > 0, got {rest!r}')
        return Command('timeout', number=seconds)
    # No verb: the whole line is the message.
    if bare == 'auto':
        bare = 'query' if text.endswith('?') else 'write'
    return Command(bare, unescape(text))


def hexdump(data: bytes) -> str:
    """``data`` as lines of offset, 16 hex bytes and their printable ASCII."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset:offset + 16]
        text = ''.join(chr(b) if 32 <= b < 127 else '.' for b in chunk)
        lines.append(f'{offset:04x}  {chunk.hex(" "):<47}  |{text}|')
    return '\n'.join(lines) or '(empty)'


def show_bytes(data: bytes, binary: bool, encoding: str) -> str:
    """A reply as the shell prints it: text (escaped where not printable) or a hex dump."""
    if binary:
        return hexdump(data)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        return repr(data)[2:-1]
    if text.isprintable():
        return text
    return repr(data)[2:-1]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='socs-tcp shell', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('address', type=parse_address, metavar='HOST:PORT',
                        help='the device (or the Prologix/serial server) to talk to')
    parser.add_argument('--timeout', type=arguments.command_line(arguments.seconds, float),
                        default=2.0, help='seconds to wait for a reply (default 2)')
    parser.add_argument('--read-termination', type=parse_termination, default=b'\n',
                        metavar='TERM', help="what ends a reply: lf (default), cr, crlf, none "
                                             "(whatever arrives first), or escapes such as '\\r\\n'")
    parser.add_argument('--write-termination', type=parse_termination, default=b'\n',
                        metavar='TERM', help='appended to what you send: lf (default), cr, crlf, none')
    parser.add_argument('--encoding', default='utf-8', help='how replies are shown (default utf-8)')
    parser.add_argument('--binary', action='store_true', help='show replies as a hex dump')
    parser.add_argument('--bare', choices=('auto', 'query', 'write'), default='auto',
                        help="a line without a verb: auto (default: query if it ends with '?', "
                             'else write), query or write')
    parser.add_argument('--transcript', metavar='FILE',
                        help='append every exchange, with its time and duration, to FILE')
    parser.add_argument('--history', metavar='FILE',
                        default=os.path.join(os.path.expanduser('~'), '.socs_tcp_shell_history'),
                        help='readline history file (default ~/.socs_tcp_shell_history; '
                             "'' for none)")
    parser.add_argument('--trace', action='store_true', help='show every byte in and out')
    parser.add_argument('--gpib', type=arguments.command_line(_gpib_address, int), metavar='ADDR',
                        help='the instrument at GPIB address ADDR (0-30) behind a Prologix box')
    parser.add_argument('--moxa', action='store_true',
                        help='a serial device behind a serial server (Moxa): flush what the '
                             'bridge kept after each connect')
    return parser


def _gpib_address(value: int, name: str = 'gpib') -> int:
    if not isinstance(value, int) or not 0 <= value <= 30:
        raise ValueError(f'{name} must be a GPIB address 0-30, got {value!r}')
    return value


class Shell:
    """The interactive loop around one `socs_tcp.TCPInterface` (see the module)."""

    def __init__(self, args: argparse.Namespace, out=None) -> None:
        self.args = args
        self.out = out or sys.stdout
        self.host, self.port = args.address
        self.link = f'{self.host}:{self.port}'
        self.prompt = f'{self.link}> '
        self._print_lock = threading.Lock()
        self._at_prompt = False
        self._transcript = open(args.transcript, 'a', encoding='utf-8') if args.transcript else None  # noqa: SIM115
        self.interface: TCPInterface | None = None

    # -- output -----------------------------------------------------------------
    def say(self, text: str) -> None:
        """Print a line; from another thread while the prompt waits, keep the typed line."""
        with self._print_lock:
            if self._at_prompt and threading.current_thread() is not threading.main_thread():
                buffer = _readline_buffer()
                self.out.write(f'\r\x1b[K{text}\n{self.prompt}{buffer}')
            else:
                self.out.write(text + '\n')
            self.out.flush()

    def _record(self, kind: str, text: str) -> None:
        if self._transcript is not None:
            stamp = time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())
            self._transcript.write(f'{stamp} {kind} {text}\n')
            self._transcript.flush()

    # -- the tap: connection news and --trace -------------------------------------
    def opened(self, link: str) -> None:
        if link == self.link:
            self.say(f'[connected to {link}]')
            self._record('#', f'connected to {link}')

    def closed(self, link: str, reason: str) -> None:
        if link == self.link and self.interface is not None and not self._closing:
            self.say(f'[connection to {link} lost ({reason}); reconnecting in the background]')
            self._record('#', f'connection lost: {reason}')

    def sent(self, link: str, data: bytes) -> None:
        if link == self.link and self.args.trace:
            self.say(f'  >> {data!r}')

    def received(self, link: str, data: bytes) -> None:
        if link == self.link and self.args.trace:
            self.say(f'  << {data!r}')

    # -- the device -------------------------------------------------------------
    _closing = False

    def connect(self) -> TCPInterface:
        """Make the interface (a device that is down now is tried again in the background)."""
        from socs_tcp import Backoff, TCPInterface, set_reactor_owner

        set_reactor_owner('background')
        args = self.args
        self.say(f"socs-tcp shell: {self.link} (timeout {args.timeout:g} s, "
                 f"write {_escaped(args.write_termination)}, read {_escaped(args.read_termination)}); "
                 "'help' for commands, Ctrl-D to leave")
        hooks = []
        if args.gpib is not None:
            hooks.append(self._prologix_setup)
        if args.gpib is not None or args.moxa:
            hooks.append(self._flush_bridge)

        def on_connect(interface):
            for hook in hooks:
                hook(interface)

        tap.add_tap(self)
        self.interface = interface = TCPInterface(
            self.host, self.port, args.timeout,
            read_termination=args.read_termination or None,
            write_termination=args.write_termination,
            on_connect=on_connect if hooks else None,
            # Back within about two seconds of the device: a person is waiting.
            backoff=Backoff(initial=0.25, max_delay=2.0),
            encoding=args.encoding)
        if not interface.connected:
            self.say(f'[{self.link} is not reachable now; trying again in the background]')
        return interface

    def _device(self) -> TCPInterface:
        if self.interface is None:
            raise RuntimeError('the shell is not connected: call connect() first')
        return self.interface

    def _prologix_setup(self, interface) -> None:
        for line in ('++mode 1', '++auto 1', f'++addr {self.args.gpib}'):
            interface.send(line.encode() + b'\n')
        self.say(f'[Prologix: controller mode, read-after-write, GPIB address {self.args.gpib}]')

    def _flush_bridge(self, interface) -> None:
        # A bridge keeps what the instrument sent while nobody was connected
        # (a late reply): read it away until the line stays quiet.
        dropped = 0
        limit = time.monotonic() + FLUSH_LIMIT
        while time.monotonic() < limit:
            try:
                dropped += len(interface.read_exactly(1, timeout=FLUSH_QUIET))
            except TimeoutError:
                break
            dropped += interface.clear()
        if dropped:
            self.say(f'[flushed {dropped} stale bytes the bridge kept]')

    def close(self) -> None:
        self._closing = True
        tap.remove_tap(self)
        if self.interface is not None:
            self.interface.close()
        if self._transcript is not None:
            self._transcript.close()

    # -- commands ---------------------------------------------------------------
    def run_line(self, line: str) -> bool:
        """Run one line; return False when the shell should end."""
        try:
            command = parse_line(line, self.args.bare)
        except ShellError as exc:
            self.say(f'error: {exc}')
            return True
        if command is None:
            return True
        if command.verb == 'exit':
            return False
        if command.verb == 'help':
            self.say(HELP)
            return True
        if command.verb == 'timeout':
            if command.number is not None:
                self._device().timeout = command.number
            self.say(f'timeout {self._device().timeout:g} s')
            return True
        if command.verb == 'stats':
            stats = self._device().stats
            self.say(' '.join(f'{k}={v}' for k, v in sorted(stats.items())))
            return True
        self._exchange(command)
        return True

    def _exchange(self, command: Command) -> None:
        interface = self._device()
        args = self.args
        start = time.monotonic()
        try:
            if command.verb == 'query':
                self._record('>', repr(command.data))
                reply = interface.query(command.data)
            elif command.verb == 'write':
                self._record('>', repr(command.data))
                interface.send(command.data + args.write_termination)
                reply = None
            elif command.number is not None:
                reply = interface.read_exactly(int(command.number))
            else:
                if args.gpib is not None:
                    interface.send(b'++read eoi\n')  # address the instrument to talk
                reply = self._read_reply()
        except ConnectionError as exc:  # DeviceTimeout, DeviceDisconnected, NotConnected
            elapsed = (time.monotonic() - start) * 1000
            self.say(f'error: {exc} [{elapsed:.1f} ms]')
            self._record('!', f'{exc} ({elapsed:.1f} ms)')
            return
        elapsed = (time.monotonic() - start) * 1000
        if reply is None:
            self.say(f'(sent {len(command.data) + len(args.write_termination)} bytes) [{elapsed:.1f} ms]')
            return
        self._record('<', f'{reply!r} ({elapsed:.1f} ms)')
        shown = show_bytes(reply, args.binary, args.encoding)
        self.say(f'{shown}\n[{len(reply)} bytes in {elapsed:.1f} ms]' if args.binary
                 else f'{shown}  [{elapsed:.1f} ms]')

    def _read_reply(self) -> bytes:
        term = self.args.read_termination
        if term:
            return self._device().read_until(term)[:-len(term)]
        return self._device().recv(4096)

    # -- the loop ---------------------------------------------------------------
    def loop(self, stdin=None) -> int:
        stdin = stdin or sys.stdin
        interactive = stdin.isatty()
        if interactive:
            _setup_readline(self.args.history)
        try:
            while True:
                try:
                    self._at_prompt = True
                    line = input(self.prompt) if interactive else stdin.readline()
                    if not interactive and not line:
                        break
                except EOFError:
                    self.out.write('\n')
                    break
                except KeyboardInterrupt:
                    self.out.write('^C\n')
                    continue
                finally:
                    self._at_prompt = False
                try:
                    if not self.run_line(line):
                        break
                except KeyboardInterrupt:
                    self.say('^C (the reply, if it comes, is dropped)')
        finally:
            if interactive:
                _save_history(self.args.history)
        return 0


HELP = """\
query TEXT     send TEXT (+ write termination), show the reply
write TEXT     send TEXT (+ write termination), read nothing
read [N]       show the next reply (or the next N bytes)
timeout [S]    show or set the timeout, in seconds
stats          the connection's counters
help, exit     this list; leave (Ctrl-D too)
A line without a verb is a query if it ends with '?', else a write (--bare).
TEXT may hold escapes: \\r \\n \\t \\\\ \\xNN."""


def _escaped(term: bytes) -> str:
    return repr(term)[1:] if term else 'none'


def _readline_buffer() -> str:
    try:
        import readline
        return readline.get_line_buffer()
    except ImportError:
        return ''


def _setup_readline(history: str) -> None:
    try:
        import readline
    except ImportError:
        return
    if history:
        try:
            readline.read_history_file(history)
        except OSError:
            pass  # no history yet
        readline.set_history_length(1000)


def _save_history(history: str) -> None:
    try:
        import readline
        if history:
            readline.write_history_file(history)
    except (ImportError, OSError):
        pass


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    shell = Shell(args)
    try:
        shell.connect()
        return shell.loop()
    finally:
        shell.close()


if __name__ == '__main__':
    sys.exit(main())
