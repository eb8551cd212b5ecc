"""The demo's terminal output: a few live lines plus a scrolling event log.

On a terminal (``isatty`` and ``TERM`` not ``dumb``) the live lines are
redrawn in place with plain ANSI escapes, and events scroll above them. On
anything else (a pipe, a file, CI logs) nothing is redrawn: events are
printed as they happen and the live lines every few seconds, one per line.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import TextIO

_RESET = '\x1b[0m'
_COLOURS = {'red': '\x1b[31m', 'green': '\x1b[32m', 'yellow': '\x1b[33m', 'bold': '\x1b[1m',
            'dim': '\x1b[2m'}


def is_terminal(stream: TextIO) -> bool:
    """True when ``stream`` is an interactive terminal that understands ANSI."""
    try:
        return stream.isatty() and os.environ.get('TERM', '') not in ('', 'dumb')
    except (AttributeError, ValueError):
        return False


class LiveView:
    """Events that scroll, and a block of live lines redrawn in place.

    Parameters
    ----------
    stream : text stream
        Default ``sys.stdout``.
    ansi : bool, optional
        Redraw in place with ANSI escapes (default: when ``stream`` is a terminal).
    plain_interval : float
        Without ANSI, print the live lines at most this often (seconds).
    """

    def __init__(self, stream: TextIO | None = None, *, ansi: bool | None = None,
                 plain_interval: float = 3.0) -> None:
        self.stream = stream or sys.stdout
        self.ansi = is_terminal(self.stream) if ansi is None else ansi
        self.plain_interval = plain_interval
        self.started = time.monotonic()
        self._drawn = 0              # live lines currently on screen (ANSI mode)
        self._last_plain = -1e9

    def colour(self, text: str, name: str) -> str:
        """``text`` in colour ``name`` on a terminal, unchanged otherwise."""
        if not self.ansi:
            return text
        return f'{_COLOURS[name]}{text}{_RESET}'

    def elapsed(self) -> str:
        return f'+{time.monotonic() - self.started:5.1f}s'

    def _width(self) -> int:
        return max(40, shutil.get_terminal_size((100, 24)).columns - 1)

    def _clear(self) -> None:
        if self.ansi and self._drawn:
            # cursor to the start of the first live line, then erase to the end
            self.stream.write(f'\x1b[{self._drawn}F\x1b[J')
            self._drawn = 0

    def event(self, text: str) -> None:
        """Print one event line (it stays in the scrollback)."""
        self._clear()
        self.stream.write(f'[{self.elapsed()}] {text}\n')
        self.stream.flush()

    def live(self, lines: Sequence[str], force: bool = False) -> None:
        """Show the current live lines (redrawn in place, or printed now and then)."""
        if self.ansi:
            self._clear()
            width = self._width()
            # one screen line per live line: a wrapped line would break the redraw
            for line in lines:
                self.stream.write(_truncate(line, width) + '\n')
            self._drawn = len(lines)
            self.stream.flush()
            return
        now = time.monotonic()
        if force or now - self._last_plain >= self.plain_interval:
            self._last_plain = now
            for line in lines:
                self.stream.write(f'[{self.elapsed()}] {line.strip()}\n')
            self.stream.flush()

    def close(self) -> None:
        """Leave the last live lines on screen and move below them."""
        self._drawn = 0
        self.stream.flush()


def _truncate(line: str, width: int) -> str:
    """Cut ``line`` to ``width`` visible characters, keeping ANSI codes intact."""
    out, visible, i = [], 0, 0
    while i < len(line):
        if line[i] == '\x1b':
            end = line.find('m', i)
            if end < 0:
                break
            out.append(line[i:end + 1])
            i = end + 1
            continue
        if visible >= width:
            i += 1
            continue
        out.append(line[i])
        visible += 1
        i += 1
    return ''.join(out) + (_RESET if '\x1b' in line else '')
