"""Recording every link's traffic to a text file: ``SOCS_TCP_RECORD=FILE``.

With ``SOCS_TCP_RECORD`` set in a process's environment, importing socs_tcp
installs a `Recorder` tap (see `socs_tcp._tap`): every connection of every
socs_tcp link in the process (a script, a running agent) is written down,
bytes and timing, as it happens. ``FILE`` names one file for all links, or
an existing directory (or a path ending in ``/``) for one file per device,
``<host>_<port>.rec`` in it. Files are appended to, one line per event,
flushed at once: a killed process leaves a usable recording.

The format (``socs-tcp simulate replay FILE`` serves it as a device)::

    # socs_tcp recording 1
    # started 2026-12-05T23:50:01Z
    0.000000 127.0.0.1:7001 open
    0.001204 127.0.0.1:7001 > 'VOLT?\\n'
    0.002311 127.0.0.1:7001 < '12.500\\n'
    9.871022 127.0.0.1:7001 close 'Connection was closed cleanly.'

Each line is: seconds since the recording started, the link
(``host:port``), then ``open``, ``>`` (bytes sent to the device), ``<``
(bytes received from it) or ``close`` (with the reason). Bytes are written
as Python writes a bytes literal without its ``b``: printable ASCII as is,
``\\n``, ``\\r``, ``\\t``, ``\\\\`` and ``\\xNN`` for the rest; a reply split
over several reads is several ``<`` lines. Lines starting with ``#`` and
blank lines are comments. Edit freely: change a reply, delete a line, add a
request; times only need to grow.
"""

from __future__ import annotations

import ast
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from socs_tcp import _tap as tap

#: The environment variable that turns recording on.
RECORD_ENV = 'SOCS_TCP_RECORD'
HEADER = '# socs_tcp recording 1'
#: Event kinds, as written.
OPEN, SENT, RECEIVED, CLOSE = 'open', '>', '<', 'close'
_KINDS = (OPEN, SENT, RECEIVED, CLOSE)


def encode_bytes(data: bytes) -> str:
    """``data`` as written in a recording: its bytes literal without the ``b``."""
    return repr(bytes(data))[1:]


def decode_bytes(text: str, where: str = 'recording') -> bytes:
    """The bytes a recording wrote as ``text`` (see `encode_bytes`).

    Raises
    ------
    ValueError
        ``text`` is not a quoted bytes literal (``where`` says which line).
    """
    text = text.strip()
    try:
        value = ast.literal_eval('b' + text) if text[:1] in ('"', "'") else None
    except (SyntaxError, ValueError):
        value = None
    if not isinstance(value, bytes):
        raise ValueError(f'{where}: expected quoted bytes such as \'VOLT?\\n\', got {text!r}')
    return value


@dataclass(frozen=True)
class Event:
    """One line of a recording."""

    time: float
    link: str
    kind: str
    data: bytes = b''
    reason: str = ''


def parse(text: str, source: str = 'recording') -> list[Event]:
    """Read a recording's events (in file order).

    Raises
    ------
    ValueError
        A line that is not an event, naming ``source`` and the line number.
    """
    events = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        where = f'{source}:{number}'
        parts = line.split(None, 3)
        if len(parts) < 3 or parts[2] not in _KINDS:
            raise ValueError(f"{where}: expected '<seconds> <host:port> open|>|<|close [...]', "
                             f'got {line!r}')
        try:
            seconds = float(parts[0])
        except ValueError:
            raise ValueError(f'{where}: time must be a number of seconds, got {parts[0]!r}') from None
        kind, rest = parts[2], parts[3] if len(parts) > 3 else ''
        if kind in (SENT, RECEIVED):
            events.append(Event(seconds, parts[1], kind, data=decode_bytes(rest, where)))
        elif kind == CLOSE:
            reason = decode_bytes(rest, where).decode('utf-8', 'replace') if rest else ''
            events.append(Event(seconds, parts[1], kind, reason=reason))
        else:
            events.append(Event(seconds, parts[1], kind))
    return events


def read(path: str | os.PathLike) -> list[Event]:
    """`parse` the recording in file ``path``."""
    path = Path(path)
    return parse(path.read_text(encoding='utf-8'), str(path))


class Recorder:
    """A tap that writes every link's traffic to ``path`` (a file, or a directory: one file per link).

    Thread-safe: taps run in whichever thread moved the bytes.

    Parameters
    ----------
    path : str or PathLike
        A file (created or appended to), or a directory (existing, or
        named with a trailing ``/``; created) for one ``<host>_<port>.rec``
        file per link.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        text = os.fspath(path)
        if not text:
            raise ValueError(f'{RECORD_ENV} must name a file or a directory, got an empty value')
        self.path = Path(text)
        self.per_link = text.endswith(os.sep) or self.path.is_dir()
        if self.per_link:
            self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._files: dict[str, TextIO] = {}
        self._start = time.monotonic()

    def _file(self, link: str):
        key = link if self.per_link else ''
        f = self._files.get(key)
        if f is None:
            name = self.path / (link.replace(':', '_') + '.rec') if self.per_link else self.path
            f = open(name, 'a', encoding='utf-8')  # noqa: SIM115 (kept open: closed by close())
            if f.tell() == 0:
                stamp = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
                f.write(f'{HEADER}\n# started {stamp}\n')
            self._files[key] = f
        return f

    def _write(self, link: str, kind: str, rest: str = '') -> None:
        line = f'{time.monotonic() - self._start:.6f} {link} {kind}{" " + rest if rest else ""}\n'
        with self._lock:
            f = self._file(link)
            f.write(line)
            f.flush()

    # -- the tap ---------------------------------------------------------------
    def opened(self, link: str) -> None:
        self._write(link, OPEN)

    def sent(self, link: str, data: bytes) -> None:
        self._write(link, SENT, encode_bytes(data))

    def received(self, link: str, data: bytes) -> None:
        self._write(link, RECEIVED, encode_bytes(data))

    def closed(self, link: str, reason: str) -> None:
        self._write(link, CLOSE, encode_bytes(str(reason).encode('utf-8', 'replace')))

    def close(self) -> None:
        """Close the files (a later event opens them again, appending)."""
        with self._lock:
            files, self._files = self._files, {}
        for f in files.values():
            f.close()


_installed: Recorder | None = None


def install_from_environment(environ: dict | None = None) -> Recorder | None:
    """Start recording if ``SOCS_TCP_RECORD`` is set (once per process); return the recorder."""
    global _installed
    value = (os.environ if environ is None else environ).get(RECORD_ENV)
    if not value or _installed is not None:
        return _installed
    _installed = Recorder(value)
    tap.add_tap(_installed)
    return _installed
