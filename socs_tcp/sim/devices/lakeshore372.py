"""A simulated Lakeshore 372 AC resistance bridge, as SOCS's ``LS372`` driver talks to it.

The 372 takes ASCII commands terminated by ``\\r\\n`` (several may share a
line, separated by ``;``). A query (a command with ``?``) is answered by one
line; a setting command is not answered at all, and neither is a command the
device does not know (it only sets an error bit), so a driver waiting for an
answer to one times out, as with the real device.

SOCS's ``LS372`` driver queries the device in its constructor (``*IDN?``,
``SCAN?``, then ``INSET?``/``INNAME?``/``INTYPE?``/``TLIMIT?`` for the control
input A and channels 1-16, then ``OUTMODE?``/``HTRSET?`` of the sample and
still heaters), and the agent's ``acq`` polls ``SCAN?``, ``KRDG? <ch>`` and
``SRDG? <ch>``. Those, and the settings its tasks send (``SCAN``, ``INSET``,
``INTYPE``, ``INNAME``, ``TLIMIT``, ``OUTMODE``, ``HTRSET``, ``RANGE``, ``MOUT``,
``STILL``, ``SETP``, ``PID``), are supported; see `answer`.

The thermometers are those of a dilution refrigerator at base temperature
(mixing chamber ~10 mK up to the 50 K stage), read through a RuO2-like
resistance curve; each reading carries a little noise and a slow drift, so
consecutive readings differ. With autoscan on, the scanner steps through the
enabled channels, spending each channel's pause + dwell time on it.

`LS372State` is the device and `answer` the pure command -> reply function;
`Lakeshore372Simulator` serves them on a `socs_tcp.sim.DeviceServer`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from socs_tcp.sim import DeviceServer

__all__ = ['Input', 'Heater', 'LS372State', 'answer', 'Lakeshore372Simulator', 'TERMINATOR']

TERMINATOR = b'\r\n'
CHANNELS = range(1, 17)

# Base temperatures (K) of the thermometers on channels 1-8; the others read
# the last stage's, as unconnected inputs of a real bridge read something too.
STAGES = {1: ('MXC', 0.0102), 2: ('Cold plate', 0.085), 3: ('Still', 0.82),
          4: ('4K plate', 3.4), 5: ('50K plate', 46.0), 6: ('Still line', 0.79),
          7: ('MXC flange', 0.0108), 8: ('Sample', 0.0111)}


def ruox_resistance(kelvin: float) -> float:
    """Ohms of a RuO2-like sensor at ``kelvin`` (~3 kOhm at 50 K, ~65 kOhm at 10 mK)."""
    return 2000.0 * math.exp((1.5 / max(kelvin, 1e-4)) ** 0.25)


@dataclass
class Input:
    """One measurement input (1-16) or the control input ``'A'``, as INSET/INTYPE/INNAME hold it."""

    name: str
    kelvin: float                 # the temperature the sensor sits at
    enabled: int = 1
    dwell: int = 7                # s
    pause: int = 3                # s
    curve: int = 21
    tempco: int = 1               # 1 negative, 2 positive
    mode: int = 0                 # 0 voltage, 1 current excitation
    excitation: int = 7           # excitation range index
    autorange: int = 1
    range: int = 10               # resistance range index
    csshunt: int = 0
    units: int = 1                # 1 kelvin, 2 ohms
    tlimit: float = 0.0


@dataclass
class Heater:
    """One heater output (0 sample, 1 warm-up, 2 still): OUTMODE, HTRSET, RANGE, MOUT, SETP."""

    mode: int
    input: str
    powerup: int = 1
    polarity: int = 0
    filter: int = 0
    delay: int = 1
    resistance: float = 120.0
    max_current: int = 8
    max_user_current: float = 0.0
    display: int = 1
    range: int = 0
    manual_out: float = 0.0
    setpoint: float = 0.0


def _default_inputs() -> dict[str | int, Input]:
    inputs: dict[str | int, Input] = {'A': Input('Input A', 0.0105, enabled=0, dwell=10, mode=1, excitation=4,
                         autorange=0, range=15, units=2)}
    last = STAGES[max(STAGES)][1]
    for ch in CHANNELS:
        name, kelvin = STAGES.get(ch, (f'Channel {ch:02}', last))
        inputs[ch] = Input(name, kelvin, enabled=1 if ch in STAGES else 0)
    return inputs


@dataclass
class LS372State:
    """The bridge: inputs, scanner, heaters and PID, and how readings vary.

    Parameters
    ----------
    serial : str
        Serial number (third field of ``*IDN?``).
    clock : callable
        Seconds, monotonic (injectable for tests).
    seed : int, optional
        Seed of the reading noise.
    noise : float
        Relative standard deviation of each reading.
    drift : float
        Relative amplitude of the slow (10-minute period) drift of the temperatures.
    """

    serial: str = 'LSASIM'
    clock: Callable[[], float] = time.monotonic
    seed: int | None = None
    noise: float = 0.002
    drift: float = 0.01
    inputs: dict = field(default_factory=_default_inputs)
    heaters: dict = field(default_factory=lambda: {0: Heater(mode=2, input='6'),
                                                   1: Heater(mode=0, input='1'),
                                                   2: Heater(mode=4, input='16', range=1,
                                                             manual_out=10.6)})
    pid: tuple = (40.0, 2.0, 0.0)
    scan_channel: int = 1
    autoscan: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._scan_since = self.clock()

    @property
    def identity(self) -> str:
        return f'LSCI,MODEL372,{self.serial},1.3'

    def active_channel(self) -> int:
        """The scanned channel now (with autoscan on, it moves on by itself)."""
        if self.autoscan:
            now = self.clock()
            while True:
                here = self.inputs[self.scan_channel]
                spent = here.pause + here.dwell
                if now - self._scan_since < spent:
                    break
                self._scan_since += spent
                self.scan_channel = self._next_enabled(self.scan_channel)
        return self.scan_channel

    def _next_enabled(self, channel: int) -> int:
        for step in range(1, len(CHANNELS) + 1):
            candidate = (channel - 1 + step) % len(CHANNELS) + 1
            if self.inputs[candidate].enabled:
                return candidate
        return channel

    def set_scan(self, channel: int, autoscan: int) -> None:
        self.scan_channel, self.autoscan = channel, autoscan
        self._scan_since = self.clock()

    def kelvin(self, key) -> float:
        """A temperature reading of input ``key`` now (noise and drift included)."""
        base = self.inputs[key].kelvin
        slow = 1.0 + self.drift * math.sin(2 * math.pi * self.clock() / 600.0)
        return base * slow * (1.0 + self._rng.gauss(0.0, self.noise))

    def ohms(self, key) -> float:
        """A resistance reading of input ``key`` now."""
        return ruox_resistance(self.kelvin(key)) * (1.0 + self._rng.gauss(0.0, self.noise / 4))

    def describe(self) -> str:
        """Short summary for the control channel's ``status``."""
        ch = self.active_channel()
        return f'scan={ch:02d},{self.autoscan} T{ch}={self.inputs[ch].kelvin:.4g}K'


def _number(value: float) -> str:
    return f'{value:+.5E}'


def _input_key(text: str):
    text = text.strip().upper()
    if text == 'A':
        return 'A'
    channel = int(text)
    if channel not in CHANNELS:
        raise ValueError(f'no input {text}')
    return channel


def _heater(state: LS372State, text: str) -> Heater:
    return state.heaters[int(text)]


def _query(state: LS372State, word: str, args: list[str]) -> str | None:
    if word == '*IDN?':
        return state.identity
    if word == 'SCAN?':
        return f'{state.active_channel():02d},{state.autoscan}'
    if word in ('KRDG?', 'SRDG?', 'RDGST?', 'RDGPWR?', 'INSET?', 'INTYPE?', 'INNAME?', 'TLIMIT?'):
        key = _input_key(args[0])
        inp = state.inputs[key]
        if word == 'KRDG?':
            return _number(state.kelvin(key))
        if word == 'SRDG?':
            return _number(state.ohms(key))
        if word == 'RDGST?':
            return '000'
        if word == 'RDGPWR?':
            return _number(2e-15 * (1.0 + state._rng.gauss(0.0, 0.01)))
        if word == 'INSET?':
            return f'{inp.enabled},{inp.dwell:03d},{inp.pause:03d},{inp.curve:02d},{inp.tempco}'
        if word == 'INTYPE?':
            return (f'{inp.mode},{inp.excitation:02d},{inp.autorange},{inp.range:02d},'
                    f'{inp.csshunt},{inp.units}')
        if word == 'INNAME?':
            return inp.name
        return f'{inp.tlimit:+.3f}'
    if word in ('OUTMODE?', 'HTRSET?', 'RANGE?', 'MOUT?', 'SETP?'):
        htr = _heater(state, args[0])
        if word == 'OUTMODE?':
            return (f'{htr.mode},{htr.input},{htr.powerup},{htr.polarity},{htr.filter},'
                    f'{htr.delay:03d}')
        if word == 'HTRSET?':
            return (f'{htr.resistance:+08.3f},{htr.max_current},{htr.max_user_current:+08.2f},'
                    f'{htr.display}')
        if word == 'RANGE?':
            return str(htr.range)
        if word == 'MOUT?':
            return _number(htr.manual_out)
        return _number(htr.setpoint)
    if word == 'STILL?':
        return f'{state.heaters[2].manual_out:+06.2f}'
    if word == 'HTR?':
        sample = state.heaters[0]
        return _number(sample.manual_out if sample.range else 0.0)
    if word == 'PID?':
        return ','.join(f'{v:+.1f}' for v in state.pid)
    return None


def _setting(state: LS372State, word: str, args: list[str]) -> None:
    if word == 'SCAN':
        state.set_scan(_input_key(args[0]), int(args[1]))
    elif word in ('INSET', 'INTYPE', 'INNAME', 'TLIMIT'):
        inp = state.inputs[_input_key(args[0])]
        if word == 'INSET':
            inp.enabled, inp.dwell, inp.pause, inp.curve, inp.tempco = map(int, args[1:6])
        elif word == 'INTYPE':
            (inp.mode, inp.excitation, inp.autorange, inp.range, inp.csshunt,
             inp.units) = map(int, args[1:7])
        elif word == 'INNAME':
            inp.name = args[1].strip().strip('"')[:15]
        else:
            inp.tlimit = float(args[1])
    elif word in ('OUTMODE', 'HTRSET', 'RANGE', 'MOUT', 'SETP'):
        htr = _heater(state, args[0])
        if word == 'OUTMODE':
            htr.mode, htr.input = int(args[1]), args[2].strip()
            htr.powerup, htr.polarity, htr.filter, htr.delay = map(int, args[3:7])
        elif word == 'HTRSET':
            htr.resistance, htr.max_current = float(args[1]), int(args[2])
            htr.max_user_current, htr.display = float(args[3]), int(args[4])
        elif word == 'RANGE':
            htr.range = int(args[1])
        elif word == 'MOUT':
            htr.manual_out = float(args[1])
        else:
            htr.setpoint = float(args[1])
    elif word == 'STILL':
        state.heaters[2].manual_out = float(args[0])
    elif word == 'PID':
        state.pid = tuple(float(v) for v in args[1:4])
    else:
        raise ValueError(f'unknown command {word}')


def _split(command: str) -> tuple[str, list[str]]:
    """``'INSET 1,1,7,3,21,1'`` -> ``('INSET', ['1', '1', '7', '3', '21', '1'])``.

    The 372 takes a space or a comma between parameters (SOCS sends ``RANGE 0 3``).
    """
    head, _, rest = command.strip().partition(' ')
    if ',' in head:               # 'SCAN?1,0'-style: no space after the word
        head, _, more = head.partition(',')
        rest = more + (',' + rest if rest else '')
    rest = rest.strip()
    if not rest:
        return head.upper(), []
    if rest.count('"') >= 2:      # INNAME 1,"a name, with commas" keeps its text whole
        channel, _, name = rest.partition(',')
        return head.upper(), [channel, name]
    return head.upper(), [a for a in rest.replace(',', ' ').split()]


def answer(state: LS372State, line: str) -> str | None:
    """The 372's reply to one command line (without its terminator), or None.

    Commands separated by ``;`` run in order; the answers of the queries among
    them are joined with ``;`` into one reply. Settings change ``state`` and
    are not answered. A command the device does not know, or with bad
    parameters, is ignored (no answer), as the real device ignores it.
    """
    replies = []
    for command in line.split(';'):
        if not command.strip():
            continue
        word, args = _split(command)
        try:
            if word.endswith('?'):
                reply = _query(state, word, args)
                if reply is not None:
                    replies.append(reply)
            else:
                _setting(state, word, args)
        except (ValueError, IndexError, KeyError):
            continue
    return ';'.join(replies) if replies else None


class Lakeshore372Simulator(DeviceServer):
    """A Lakeshore 372 on a TCP port (the real one serves 7777), for SOCS's ``Lakeshore372Agent``.

    Parameters
    ----------
    host : str
        Interface to listen on. SOCS's agent always connects to port 7777
        (it has no port option): on socs_tcp, ``SOCS_TCP_REDIRECT`` points it
        at a simulator on any port (see `socs_tcp.compat`).
    port : int
        Port (0: pick a free one).
    state : LS372State, optional
        The bridge (kept as ``self.model``).
    """

    # Input: 1-16 or A (the control input); heater: 0 sample, 1 warm-up, 2 still.
    command_set = (
        ('*IDN?', 'identity: LSCI,MODEL372,serial,firmware'),
        ('SCAN?', 'scanned channel and autoscan: ch,autoscan'),
        ('SCAN 3,0', 'scan channel 3, autoscan off (1: on)'),
        ('KRDG? 1', 'temperature of an input (K)'),
        ('SRDG? 1', 'resistance of an input (ohm)'),
        ('RDGST? 1', 'reading status of an input (000: fine)'),
        ('RDGPWR? 1', 'excitation power of an input (W)'),
        ('INSET? 1', 'input setup: enabled,dwell,pause,curve,tempco'),
        ('INSET 1,1,7,3,21,1', 'set an input setup'),
        ('INTYPE? 1', 'input type: mode,excitation,autorange,range,cs shunt,units'),
        ('INTYPE 1,0,12,0,22,0,1', 'set an input type'),
        ('INNAME? 1', 'input name'),
        ('INNAME 1,"MXC"', 'set an input name (15 characters)'),
        ('TLIMIT? 1', 'temperature limit of an input (K)'),
        ('TLIMIT 1,10', 'set a temperature limit'),
        ('OUTMODE? 0', 'heater mode: mode,input,powerup,polarity,filter,delay'),
        ('OUTMODE 0,3,1,0,0,1,5', 'set a heater mode'),
        ('HTRSET? 0', 'heater setup: resistance,max current,max user current,display'),
        ('HTRSET 0,120,0,0,2', 'set a heater setup'),
        ('RANGE? 0', 'heater range'),
        ('RANGE 0 3', 'set a heater range'),
        ('MOUT? 0', 'heater manual output'),
        ('MOUT 0,10', 'set a heater manual output'),
        ('SETP? 0', 'heater set point'),
        ('SETP 0,0.1', 'set a heater set point'),
        ('STILL?', 'still heater output (%)'),
        ('STILL 10', 'set the still heater output (%)'),
        ('HTR?', 'sample heater output'),
        ('PID?', 'PID parameters: P,I,D'),
        ('PID 0,10,20,0', 'set the PID parameters'),
    )

    def __init__(self, host: str = '127.0.0.1', port: int = 0, state: LS372State | None = None):
        self.model = state if state is not None else LS372State()
        super().__init__(self.handle, terminator=TERMINATOR, host=host, port=port)

    def handle(self, request: bytes) -> str | None:
        """The `DeviceServer` handler: one command line -> its reply line."""
        return answer(self.model, request.decode('ascii', 'replace'))
