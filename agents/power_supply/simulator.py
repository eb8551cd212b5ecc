"""A simulated single-channel SCPI power supply on the socs_tcp device server.

`PowerSupplyModel` is the device: voltage and current set points, an output
switch, a resistive load, and an error queue. With the output on it regulates
like a real bench supply: constant voltage (``V = Vset``, ``I = Vset / R``)
until the load would draw more than the current limit, then constant current
(``I = Iset``, ``V = Iset * R``). Readings carry a little noise while the output is on. Bad commands
and out-of-range values are not answered; they queue a SCPI error that
``SYST:ERR?`` returns, oldest first, as real supplies do.

Keywords match in short or long form, any case (``MEAS:VOLT?``,
``measure:voltage?``). Supported: ``*IDN?``, ``*RST``, ``*CLS``, ``*OPC?``,
``MEAS:VOLT?``, ``MEAS:CURR?``, ``VOLT <v>|MIN|MAX``, ``VOLT?``,
``CURR <a>|MIN|MAX``, ``CURR?``, ``OUTP ON|OFF|1|0``, ``OUTP?``,
``SYST:ERR?``.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable

from socs_tcp.sim import DeviceServer

VOLTAGE_MAX = 30.0
CURRENT_MAX = 5.0
ERROR_QUEUE_SIZE = 20

NO_ERROR = (0, 'No error')
UNDEFINED_HEADER = (-113, 'Undefined header')
DATA_TYPE_ERROR = (-104, 'Data type error')
PARAMETER_NOT_ALLOWED = (-108, 'Parameter not allowed')
MISSING_PARAMETER = (-109, 'Missing parameter')
ILLEGAL_PARAMETER_VALUE = (-224, 'Illegal parameter value')
DATA_OUT_OF_RANGE = (-222, 'Data out of range')
QUEUE_OVERFLOW = (-350, 'Queue overflow')


def _keyword_matches(node: str, keyword: str) -> bool:
    """SCPI keyword match: the uppercase part is the short form, the whole word the long one."""
    short = ''.join(c for c in keyword if not c.islower())
    return node.upper() in (short.upper(), keyword.upper())


def _header_matches(header: str, pattern: str) -> bool:
    nodes, keywords = header.split(':'), pattern.split(':')
    return len(nodes) == len(keywords) and all(
        _keyword_matches(n, k) for n, k in zip(nodes, keywords, strict=True))


def _format(value: float) -> str:
    return f'{value:+.6E}'


class PowerSupplyModel:
    """The supply's state: set points, output, load and error queue.

    Parameters
    ----------
    load_ohms : float
        Resistance of the load on the output.
    identity : str
        The ``*IDN?`` reply.
    noise_volts, noise_amps : float
        Standard deviation of the measurement noise.
    seed : int, optional
        Seed of the noise generator.
    """

    def __init__(self, load_ohms: float = 10.0,
                 identity: str = 'SOCS-TCP,SIM-PSU-3005,SN00042,1.2',
                 noise_volts: float = 0.0005, noise_amps: float = 0.0001,
                 seed: int | None = None):
        self.load_ohms = load_ohms
        self.identity = identity
        self.noise_volts = noise_volts
        self.noise_amps = noise_amps
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.errors: deque = deque()
        self.reset()
        self._commands: list[tuple[str, Callable[[str | None], str | None]]] = [
            ('*IDN?', lambda arg: self.identity),
            ('*RST', lambda arg: self.reset()),
            ('*CLS', lambda arg: self.errors.clear()),
            ('*OPC?', lambda arg: '1'),
            ('MEASure:VOLTage?', lambda arg: _format(self.measure()[0])),
            ('MEASure:CURRent?', lambda arg: _format(self.measure()[1])),
            ('VOLTage?', lambda arg: _format(self.voltage)),
            ('CURRent?', lambda arg: _format(self.current)),
            ('VOLTage', lambda arg: self._set('voltage', arg, VOLTAGE_MAX)),
            ('CURRent', lambda arg: self._set('current', arg, CURRENT_MAX)),
            ('OUTPut?', lambda arg: '1' if self.output else '0'),
            ('OUTPut', self._set_output),
            ('SYSTem:ERRor?', lambda arg: '{},"{}"'.format(*self.pop_error())),
        ]

    def reset(self) -> None:
        """``*RST``: output off, 0 V, 1 A limit."""
        self.voltage = 0.0
        self.current = 1.0
        self.output = False

    # -- physics ------------------------------------------------------------------
    def measure(self) -> tuple[float, float]:
        """Measured (volts, amps) at the output, noise included."""
        if not self.output:
            return 0.0, 0.0        # nothing to measure: read exactly zero
        if self.voltage / self.load_ohms <= self.current:
            volts, amps = self.voltage, self.voltage / self.load_ohms   # constant voltage
        else:
            volts, amps = self.current * self.load_ohms, self.current   # constant current
        volts += self._rng.gauss(0.0, self.noise_volts)
        amps += self._rng.gauss(0.0, self.noise_amps)
        return volts, amps

    @property
    def mode(self) -> str:
        """'OFF', 'CV' (constant voltage) or 'CC' (constant current)."""
        if not self.output:
            return 'OFF'
        return 'CV' if self.voltage / self.load_ohms <= self.current else 'CC'

    # -- errors -------------------------------------------------------------------
    def push_error(self, error: tuple[int, str]) -> None:
        """Queue an error; a full queue replaces its newest entry by "Queue overflow"."""
        if len(self.errors) >= ERROR_QUEUE_SIZE:
            self.errors[-1] = QUEUE_OVERFLOW
            return
        self.errors.append(error)

    def pop_error(self) -> tuple[int, str]:
        """The oldest queued error, or ``(0, 'No error')``."""
        return self.errors.popleft() if self.errors else NO_ERROR

    # -- commands -----------------------------------------------------------------
    def _set(self, name: str, arg: str | None, maximum: float) -> None:
        if arg is None:
            return self.push_error(MISSING_PARAMETER)
        word = arg.upper()
        if word in ('MIN', 'MINIMUM'):
            value = 0.0
        elif word in ('MAX', 'MAXIMUM'):
            value = maximum
        else:
            try:
                value = float(arg)
            except ValueError:
                return self.push_error(DATA_TYPE_ERROR)
            if not 0.0 <= value <= maximum:   # NaN fails this too
                return self.push_error(DATA_OUT_OF_RANGE)
        setattr(self, name, value)
        return None

    def _set_output(self, arg: str | None) -> None:
        if arg is None:
            return self.push_error(MISSING_PARAMETER)
        word = arg.upper()
        if word in ('ON', '1'):
            self.output = True
        elif word in ('OFF', '0'):
            self.output = False
        else:
            self.push_error(ILLEGAL_PARAMETER_VALUE)
        return None

    def handle(self, line: bytes) -> str | None:
        """Execute one command line; return the reply for a query, None otherwise."""
        try:
            text = line.decode('ascii').strip()
        except UnicodeDecodeError:
            with self._lock:
                self.push_error(UNDEFINED_HEADER)
            return None
        if not text:
            return None
        header, _, rest = text.partition(' ')
        arg = rest.strip() or None
        with self._lock:
            for pattern, action in self._commands:
                if header.endswith('?') != pattern.endswith('?'):
                    continue
                if _header_matches(header.rstrip('?'), pattern.rstrip('?')):
                    if pattern.endswith('?') and arg is not None:
                        self.push_error(PARAMETER_NOT_ALLOWED)
                        return None
                    return action(arg)
            self.push_error(UNDEFINED_HEADER)
            return None

    def describe(self) -> str:
        """Short state summary for the control channel's ``status``."""
        with self._lock:
            return (f'output={"on" if self.output else "off"} mode={self.mode} '
                    f'voltage={self.voltage:g} current={self.current:g} '
                    f'load_ohms={self.load_ohms:g} errors={len(self.errors)}')


class PowerSupplySimulator(DeviceServer):
    """A `DeviceServer` serving a `PowerSupplyModel` (lines ending in '\\n').

    Parameters
    ----------
    host : str
        Interface to listen on.
    port : int
        Port (0: pick a free one at `start`).
    model : PowerSupplyModel, optional
        The device state (a default one if not given), kept as ``self.model``.
    """

    command_set = (
        ('*IDN?', 'identity: maker, model, serial, firmware'),
        ('*RST', 'output off, set points to 0, errors cleared'),
        ('*CLS', 'clear the error queue'),
        ('*OPC?', 'answers 1 (operations complete)'),
        ('MEAS:VOLT?', 'the output voltage now (V)'),
        ('MEAS:CURR?', 'the output current now (A)'),
        ('VOLT 5', f'voltage set point, 0-{VOLTAGE_MAX:g} V (or MIN, MAX)'),
        ('VOLT?', 'voltage set point'),
        ('CURR 1', f'current limit, 0-{CURRENT_MAX:g} A (or MIN, MAX)'),
        ('CURR?', 'current limit'),
        ('OUTP ON', 'switch the output (ON, OFF, 1, 0)'),
        ('OUTP?', 'output state, 1 or 0'),
        ('SYST:ERR?', 'oldest queued error: code,"message" (0,"No error" when empty)'),
    )

    def __init__(self, host: str = '127.0.0.1', port: int = 0,
                 model: PowerSupplyModel | None = None):
        self.model = model if model is not None else PowerSupplyModel()
        super().__init__(self.model.handle, terminator=b'\n', host=host, port=port)
