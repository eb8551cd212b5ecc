"""Driver for a single-channel SCPI power supply over TCP (lines ending in '\\n').

Commands used: ``*IDN?``, ``MEAS:VOLT?``, ``MEAS:CURR?``, ``VOLT?``, ``CURR?``,
``VOLT <v>``, ``CURR <a>``, ``OUTP ON|OFF``, ``OUTP?`` and ``SYST:ERR?``.
Set commands have no reply; the driver reads the error queue after each one
so that a refused setting is reported instead of silently ignored.

The ``parse_*`` functions hold the reply formats and are tested against byte
strings; a reply that doesn't parse raises `ReplyError`, never returns junk.
"""

from __future__ import annotations

import math
import re

from socs_tcp import TCPInterface
from socs_tcp.agents.errors import DeviceReportedError, ReplyError

#: The supply's output range; the agent validates set points against it.
VOLTAGE_LIMIT = 30.0
CURRENT_LIMIT = 5.0

#: The error queue never holds more than this many entries (bounds a drain).
MAX_QUEUED_ERRORS = 20

_ERROR_RE = re.compile(r'^([+-]?\d+)\s*,\s*"(.*)"$')


def _text(reply: bytes, what: str) -> str:
    try:
        text = reply.decode('ascii').strip()
    except UnicodeDecodeError as exc:
        raise ReplyError(f'{what}: reply is not ASCII text: {reply!r}') from exc
    if not text:
        raise ReplyError(f'{what}: empty reply')
    return text


def parse_float(reply: bytes, what: str = 'reply') -> float:
    """Return the finite number in ``reply`` (e.g. ``b'+1.2345E+01'``).

    Raises
    ------
    ReplyError
        If the reply is not one finite number (SCPI's 9.91E37 "not a number"
        included).
    """
    text = _text(reply, what)
    try:
        value = float(text)
    except ValueError as exc:
        raise ReplyError(f'{what}: expected a number, got {reply!r}') from exc
    if not math.isfinite(value) or abs(value) >= 9.9e37:
        raise ReplyError(f'{what}: device returned no valid number ({text})')
    return value


def parse_bool(reply: bytes, what: str = 'reply') -> bool:
    """Return the SCPI boolean in ``reply`` (``1``/``0``/``ON``/``OFF``).

    Raises
    ------
    ReplyError
        For anything else.
    """
    text = _text(reply, what).upper()
    if text in ('1', 'ON'):
        return True
    if text in ('0', 'OFF'):
        return False
    raise ReplyError(f'{what}: expected 0 or 1, got {reply!r}')


def parse_error(reply: bytes) -> tuple[int, str]:
    """Return ``(code, message)`` from a ``SYST:ERR?`` reply (``0,"No error"``).

    Raises
    ------
    ReplyError
        If the reply is not ``<int>,"<text>"``.
    """
    text = _text(reply, 'SYST:ERR?')
    match = _ERROR_RE.match(text)
    if match is None:
        raise ReplyError(f'SYST:ERR?: expected <code>,"<message>", got {reply!r}')
    return int(match.group(1)), match.group(2)


def parse_idn(reply: bytes) -> dict:
    """Return manufacturer, model, serial and firmware from an ``*IDN?`` reply.

    Raises
    ------
    ReplyError
        If the reply does not have the four comma-separated fields.
    """
    fields = [f.strip() for f in _text(reply, '*IDN?').split(',')]
    if len(fields) != 4 or not all(fields[:2]):
        raise ReplyError(f'*IDN?: expected 4 comma-separated fields, got {reply!r}')
    return dict(zip(('manufacturer', 'model', 'serial', 'firmware'), fields, strict=True))


def format_number(value: float) -> str:
    """Format a set point for a SCPI command (fixed point, enough digits)."""
    return f'{value:.4f}'


class PowerSupply(TCPInterface):
    """A SCPI power supply.

    Parameters
    ----------
    ip_address : str
        IP address of the supply.
    port : int
        SCPI socket port (5025 on most supplies).
    timeout : float
        Seconds one exchange may take before it fails.
    """

    def __init__(self, ip_address: str, port: int = 5025, timeout: float = 10):
        super().__init__(ip_address, port, timeout,
                         read_termination='\n', write_termination='\n')

    def _ask(self, command: str) -> bytes:
        return self.query(command)

    # -- identity and readings ----------------------------------------------
    def identify(self) -> dict:
        """Return the ``*IDN?`` fields (manufacturer, model, serial, firmware).

        Raises
        ------
        ConnectionError
            If the device can't be reached or doesn't answer in time.
        ReplyError
            If the reply doesn't parse.
        """
        return parse_idn(self._ask('*IDN?'))

    def measure_voltage(self) -> float:
        """Measured output voltage in V. Raises as `identify`."""
        return parse_float(self._ask('MEAS:VOLT?'), 'MEAS:VOLT?')

    def measure_current(self) -> float:
        """Measured output current in A. Raises as `identify`."""
        return parse_float(self._ask('MEAS:CURR?'), 'MEAS:CURR?')

    def voltage_setpoint(self) -> float:
        """Programmed voltage in V. Raises as `identify`."""
        return parse_float(self._ask('VOLT?'), 'VOLT?')

    def current_setpoint(self) -> float:
        """Programmed current limit in A. Raises as `identify`."""
        return parse_float(self._ask('CURR?'), 'CURR?')

    def output(self) -> bool:
        """True if the output is on. Raises as `identify`."""
        return parse_bool(self._ask('OUTP?'), 'OUTP?')

    def get_data(self) -> dict:
        """Read everything the acquisition publishes.

        Returns
        -------
        dict
            ``voltage``, ``current`` (measured), ``voltage_setpoint``,
            ``current_setpoint`` (floats) and ``output`` (0 or 1).

        Raises
        ------
        ConnectionError, ReplyError
            As `identify`.
        """
        return {
            'voltage': self.measure_voltage(),
            'current': self.measure_current(),
            'voltage_setpoint': self.voltage_setpoint(),
            'current_setpoint': self.current_setpoint(),
            'output': int(self.output()),
        }

    # -- errors ---------------------------------------------------------------
    def next_error(self) -> tuple[int, str]:
        """Pop the oldest entry of the error queue (``(0, 'No error')`` when empty)."""
        return parse_error(self._ask('SYST:ERR?'))

    def check_errors(self) -> None:
        """Drain the error queue; raise if it held anything.

        Raises
        ------
        DeviceReportedError
            With every queued error, oldest first.
        ConnectionError, ReplyError
            As `identify`.
        """
        errors = []
        for _ in range(MAX_QUEUED_ERRORS):
            code, message = self.next_error()
            if code == 0:
                break
            errors.append((code, message))
        if errors:
            raise DeviceReportedError(errors)

    # -- settings ---------------------------------------------------------------
    def _set(self, command: str) -> None:
        # Set commands have no reply: the error queue says whether it was taken.
        self.send(command + '\n')
        self.check_errors()

    def set_voltage(self, volts: float) -> None:
        """Program the output voltage.

        Raises
        ------
        DeviceReportedError
            If the supply refused it (e.g. out of range).
        ConnectionError, ReplyError
            As `identify`.
        """
        self._set(f'VOLT {format_number(volts)}')

    def set_current(self, amps: float) -> None:
        """Program the current limit. Raises as `set_voltage`."""
        self._set(f'CURR {format_number(amps)}')

    def set_output(self, on: bool) -> None:
        """Switch the output on or off. Raises as `set_voltage`."""
        self._set('OUTP ON' if on else 'OUTP OFF')
