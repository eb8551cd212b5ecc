"""pyvisa habits on a TCPInterface: ``write()`` and ``read()``.

A pyvisa user expects ``write('*RST')`` to send the write termination and
``read()`` to return one reply as ``str`` without its read termination.
socs.tcp's ``send()`` and ``recv()`` do neither: ``send()`` sends exactly the
bytes given, ``recv()`` returns whatever bytes have arrived. socs_tcp keeps
``send()``/``recv()`` exactly as socs.tcp has them (SOCS drivers count on it),
and adds ``write()``/``read()`` with pyvisa's meaning, built on the public
calls alone (``send``, ``read_until``, the terminations, ``encoding``).
``query()`` stays socs_tcp's: it applies both terminations, and returns bytes.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

__all__ = ['VisaHabits']


class VisaHabits:
    """``write()``/``read()`` that apply the terminations as pyvisa's do.

    Mixed into `socs_tcp.TCPInterface`. ``write_termination`` and
    ``read_termination`` are the interface's (bytes or str at construction).

    Examples
    --------
    >>> dev = TCPInterface(host, port, read_termination='\\n', write_termination='\\n')  # doctest: +SKIP
    >>> dev.write('VOLT 5')            # sends b'VOLT 5\\n'  # doctest: +SKIP
    >>> dev.write('MEAS:VOLT?'); dev.read()                 # doctest: +SKIP
    '5.000'
    """

    # What the mixin uses of the class it is mixed into (TCPInterface).
    encoding: str
    write_termination: bytes
    read_termination: bytes | None

    if TYPE_CHECKING:
        def send(self, msg: str | bytes) -> None: ...

        def read_until(self, terminator: bytes | str, timeout: float | None = None) -> bytes: ...

    def write(self, message: str | bytes, termination: str | bytes | None = None,
              encoding: str | None = None) -> int:
        """Send ``message`` followed by the write termination; return the bytes sent.

        As in pyvisa, the termination is appended even when ``message``
        already ends with it (with a warning, as pyvisa warns).

        Parameters
        ----------
        message : str or bytes
            ``str`` is encoded with ``encoding`` (default: the interface's).
        termination : str or bytes, optional
            Instead of ``write_termination`` for this call.
        encoding : str, optional
            Instead of the interface's ``encoding`` for this call.

        Raises
        ------
        TypeError
            ``message`` or ``termination`` is neither str nor bytes.
        ConnectionError
            As `TCPInterface.send`.
        """
        enc = encoding or self.encoding
        data = _as_bytes(message, 'message', enc)
        term = self.write_termination if termination is None else _as_bytes(termination, 'termination', enc)
        if term and data.endswith(term):
            warnings.warn('write message already ends with termination characters', stacklevel=2)
        data += term
        self.send(data)
        return len(data)

    def read(self, termination: str | bytes | None = None, encoding: str | None = None,
             timeout: float | None = None) -> str:
        """Return the next reply up to the read termination, as ``str``, without the termination.

        Parameters
        ----------
        termination : str or bytes, optional
            Instead of ``read_termination`` for this call.
        encoding : str, optional
            Instead of the interface's ``encoding``.
        timeout : float, optional
            Seconds (default: the interface's timeout).

        Raises
        ------
        ValueError
            Neither ``termination`` nor ``read_termination`` is set: without
            one a reply has no end (use ``recv()`` or ``read_exactly()``).
        DeviceTimeout
            No termination within the timeout (the input stays buffered).
        ConnectionError
            As `TCPInterface.read_until`.
        """
        enc = encoding or self.encoding
        term = self.read_termination if termination is None else _as_bytes(termination, 'termination', enc)
        if not term:
            raise ValueError('read() needs a read_termination (set it on the interface or pass '
                             'termination=); without one use recv() or read_exactly()')
        return self.read_until(term, timeout)[:-len(term)].decode(enc)


def _as_bytes(value: str | bytes, name: str, encoding: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode(encoding)
    raise TypeError(f'{name} must be str or bytes, got {type(value).__name__}')
