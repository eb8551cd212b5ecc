"""The fault-control commands of every simulator, defined once.

Each `ControlCommand` holds a command's name (as typed on the control
channel), its parameters and a one-line summary. The control channel parses
lines with it (`socs_tcp.sim.control.ControlChannel`), the control client
builds lines with it (`socs_tcp.sim.control.SimControl`, one method per
command, named as the command with ``_`` for ``-``), and the ``help`` command
and ``socs-tcp simulate --help`` list it. A command added here without a
handler in the channel or a method in the client fails the tests.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from socs_tcp import _arguments as arguments

__all__ = ['COMMANDS', 'CommandError', 'ControlCommand', 'Param', 'ValueKind', 'command', 'help_lines']


class CommandError(ValueError):
    """A control command was malformed (the channel answers ``ERR`` and the message)."""


class ValueKind(enum.Enum):
    """How a parameter is written on the line and what it stands for."""

    INTEGER = 'an integer'
    SECONDS = 'a finite number of seconds >= 0'
    SWITCH = "'on' or 'off'"
    HEX = 'hex digits'
    SIZE_OR_OFF = "an integer or 'off'"


@dataclass(frozen=True)
class Param:
    """One parameter of a `ControlCommand`.

    Attributes
    ----------
    name : str
        Its name in the usage line (``<name>``) and in error messages.
    kind : ValueKind
        How it is written and parsed.
    optional : bool
        May be left out (only the last parameters).
    """

    name: str
    kind: ValueKind
    optional: bool = False

    @property
    def usage(self) -> str:
        if self.kind is ValueKind.SWITCH:
            text = 'on|off'
        elif self.kind is ValueKind.SIZE_OR_OFF:
            text = f'<{self.name}>|off'
        else:
            text = f'<{self.name}>'
        return f'[{text}]' if self.optional else text

    def parse(self, word: str) -> object:
        """The value ``word`` stands for.

        Raises
        ------
        CommandError
            If ``word`` is not of this parameter's kind.
        """
        kind = self.kind
        lower = word.lower()
        try:
            if kind is ValueKind.SWITCH:
                if lower in ('on', '1', 'true'):
                    return True
                if lower in ('off', '0', 'false'):
                    return False
                raise ValueError
            if kind is ValueKind.SIZE_OR_OFF and lower == 'off':
                return None
            if kind in (ValueKind.INTEGER, ValueKind.SIZE_OR_OFF):
                return int(word)
            if kind is ValueKind.HEX:
                return bytes.fromhex(word)
            return arguments.seconds(float(word), self.name, allow_zero=True)
        except (ValueError, TypeError):
            raise CommandError(f'{self.name} must be {kind.value}, got {word!r}') from None

    def format(self, value: object) -> str:
        """``value`` written as the channel reads it.

        Raises
        ------
        TypeError, ValueError
            If ``value`` can't stand for this parameter, naming it.
        """
        kind = self.kind
        if kind is ValueKind.SWITCH:
            return 'on' if value else 'off'
        if kind is ValueKind.SIZE_OR_OFF and value is None:
            return 'off'
        if kind in (ValueKind.INTEGER, ValueKind.SIZE_OR_OFF):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f'{self.name} must be an int, got {value!r}')
            return str(value)
        if kind is ValueKind.HEX:
            if not isinstance(value, (bytes, bytearray, memoryview)) or not bytes(value):
                raise ValueError(f'{self.name} must be non-empty bytes, got {value!r}')
            return bytes(value).hex()
        return repr(arguments.seconds(value, self.name, allow_zero=True))


@dataclass(frozen=True)
class ControlCommand:
    """One command of the control channel.

    Attributes
    ----------
    name : str
        The first word of the line.
    params : tuple of Param
        What follows it.
    summary : str
        What it does, in one line.
    """

    name: str
    params: tuple[Param, ...]
    summary: str

    @property
    def usage(self) -> str:
        """E.g. ``'fragments <size>|off [<interval>]'``."""
        return ' '.join([self.name, *(p.usage for p in self.params)])

    @property
    def method_name(self) -> str:
        """The name of its `SimControl` method and `ControlChannel` handler."""
        return self.name.replace('-', '_')

    def parse(self, words: Sequence[str]) -> list[object]:
        """The values of the words after the command's name.

        Raises
        ------
        CommandError
            If there are too few or too many words, or one is malformed;
            the message ends with the usage.
        """
        required = sum(not p.optional for p in self.params)
        if not required <= len(words) <= len(self.params):
            raise CommandError(f'usage: {self.usage}')
        try:
            return [param.parse(word) for param, word in zip(self.params, words, strict=False)]
        except CommandError as exc:
            raise CommandError(f'{exc} (usage: {self.usage})') from None

    def line(self, *values: object) -> str:
        """The command line for ``values`` (trailing optional ones may be left out).

        Raises
        ------
        TypeError, ValueError
            If there are too many or too few values, or one can't be written.
        """
        required = sum(not p.optional for p in self.params)
        if not required <= len(values) <= len(self.params):
            raise TypeError(f'{self.name} takes {required}..{len(self.params)} values, '
                            f'got {len(values)} (usage: {self.usage})')
        return ' '.join([self.name, *(p.format(v) for p, v in zip(self.params, values, strict=False))])


_N = Param('n', ValueKind.INTEGER)
_SECONDS = Param('seconds', ValueKind.SECONDS)

#: Every control command, in the order ``help`` lists them.
COMMANDS: tuple[ControlCommand, ...] = (
    ControlCommand('status', (), 'the server state, its faults, then the device state (key=value words)'),
    ControlCommand('drop', (), 'drop every open device connection (RST: the peer sees a reset); keeps listening'),
    ControlCommand('hangup', (), 'hang up every open device connection (FIN: the peer reads the end '
                                 'of the stream); keeps listening'),
    ControlCommand('drop-after', (_N,), 'drop the connection carrying the n-th next request, unanswered'),
    ControlCommand('silent', (Param('silent', ValueKind.SWITCH),),
                   'read requests but never answer them (off: answer again)'),
    ControlCommand('delay', (_SECONDS,), 'start each reply that many seconds after its request (0: at once)'),
    ControlCommand('fragments', (Param('size', ValueKind.SIZE_OR_OFF),
                                 Param('interval', ValueKind.SECONDS, optional=True)),
                   'send replies in size-byte chunks, interval seconds apart (off: whole again)'),
    ControlCommand('garbage', (Param('hex', ValueKind.HEX),), 'put these bytes in front of the next reply (once)'),
    ControlCommand('stop', (), 'the device goes away: stop listening, drop every connection'),
    ControlCommand('start', (), 'listen again, on the same port'),
    ControlCommand('restart', (_SECONDS,), 'stop now, start after that many seconds'),
    ControlCommand('blackhole', (Param('blackhole', ValueKind.SWITCH),),
                   'vanish from the network: open connections go silent, new ones hang (off: come back)'),
    ControlCommand('reset', (), 'turn every reply fault off (silent, delay, fragments, garbage, drop-after)'),
    ControlCommand('late', (_SECONDS,), 'bridges only: the instrument answers the next request that many '
                                        'seconds late, to the client connected then (held for the next '
                                        'connection if none is); 0: on time'),
    ControlCommand('one-client', (Param('one-client', ValueKind.SWITCH),),
                   'bridges only: take one TCP client at a time (off: any number)'),
    ControlCommand('help', (), 'list the commands'),
)

_BY_NAME = {c.name: c for c in COMMANDS}


def command(name: str) -> ControlCommand:
    """The command called ``name`` (case-insensitive).

    Raises
    ------
    CommandError
        If there is none.
    """
    try:
        return _BY_NAME[name.lower()]
    except KeyError:
        raise CommandError(f'unknown command {name!r} (try: help)') from None


def help_lines(indent: str = '  ') -> list[str]:
    """One line per command: its usage, then its summary."""
    width = max(len(c.usage) for c in COMMANDS)
    return [f'{indent}{c.usage:<{width}}  {c.summary}' for c in COMMANDS]
