"""A simulated CPA-style compressor on the socs_tcp device server.

`CompressorModel` is the device: an operating state machine (idling ->
starting -> running -> stopping -> idling) switched by writing the power
register, and readings that relax towards the values of the current state
(warm helium and a pressure split while running, equalized pressures and no
motor current when off) with a little noise. Time advances by the clock each
time the registers are read, so a long pause moves the readings as far as the
same time spent polling.

`CompressorSimulator` serves it over Modbus-TCP: function 0x04 reads the
status block, 0x06 writes the power register; anything else gets the Modbus
exception a real device sends. It is a `socs_tcp.sim.DeviceServer`, so every
fault injection of the server (drop, silent, delay, garbage, stop/start)
works on it.
"""

from __future__ import annotations

import math
import random
import struct
import threading
import time
from collections.abc import Callable

from socs_tcp.sim import DeviceServer, mbap_framer

# The device's own view of its register map (the same layout as the CPA).
MBAP = struct.Struct('>HHHB')
READ_INPUT_REGISTERS = 0x04
WRITE_SINGLE_REGISTER = 0x06
FIRST_REGISTER = 1
REGISTER_COUNT = 33
POWER_REGISTER = 1
POWER_ON, POWER_OFF = 0x0001, 0x00FF

IDLING, STARTING, RUNNING, STOPPING = 0, 2, 3, 5
STATE_NAMES = {IDLING: 'idling', STARTING: 'starting', RUNNING: 'running', STOPPING: 'stopping'}

ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3

# Readings the model relaxes towards: (off, running). Celsius and psi.
TARGETS = {
    'coolant_in_temp': (18.0, 18.5),
    'coolant_out_temp': (18.0, 27.0),
    'oil_temp': (20.0, 38.0),
    'helium_temp': (20.0, 72.0),
    'low_pressure': (185.0, 95.0),
    'high_pressure': (185.0, 290.0),
    'motor_current': (0.0, 12.5),
}
NOISE = {'coolant_in_temp': 0.02, 'coolant_out_temp': 0.03, 'oil_temp': 0.03,
         'helium_temp': 0.05, 'low_pressure': 0.2, 'high_pressure': 0.3, 'motor_current': 0.02}


def _float_registers(value: float) -> tuple[int, int]:
    """A 32-bit float as two registers, low word first (the CPA's order)."""
    hi, lo = struct.unpack('>HH', struct.pack('>f', value))
    return lo, hi


class CompressorModel:
    """The compressor's state and readings.

    Parameters
    ----------
    serial : int
        Serial number (16 bits).
    model : (int, int)
        Model code, major and minor.
    software_revision : (int, int)
        Firmware version, major and minor.
    start_duration, stop_duration : float
        Seconds spent in the starting and stopping states.
    time_constant : float
        Seconds for readings to get ~63 % of the way to a new state's values.
    hours : float
        Hours of operation at start.
    clock : callable
        Monotonic time in seconds (injectable for tests).
    seed : int, optional
        Seed of the noise generator.
    """

    def __init__(self, serial: int = 4242, model: tuple[int, int] = (20, 5),
                 software_revision: tuple[int, int] = (1, 4), start_duration: float = 2.0,
                 stop_duration: float = 1.0, time_constant: float = 6.0,
                 hours: float = 12345.0, clock: Callable[[], float] = time.monotonic,
                 seed: int | None = None):
        self.serial = serial & 0xFFFF
        self.model = model
        self.software_revision = software_revision
        self.start_duration = start_duration
        self.stop_duration = stop_duration
        self.time_constant = time_constant
        self.hours = hours
        self._clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.state = IDLING
        self._state_since = clock()
        self._last = clock()
        self.values = {name: off for name, (off, _on) in TARGETS.items()}
        self.averages = {'low_pressure': self.values['low_pressure'],
                         'high_pressure': self.values['high_pressure']}
        self.warning_state = 0
        self.alarm_state = 0

    @property
    def running(self) -> bool:
        """True while the compressor motor is energized (starting or running)."""
        return self.state in (STARTING, RUNNING)

    def power(self, on: bool) -> None:
        """Switch on (idling -> starting) or off (starting/running -> stopping)."""
        with self._lock:
            self._advance()
            if on and self.state in (IDLING, STOPPING):
                self._enter(STARTING)
            elif not on and self.state in (STARTING, RUNNING):
                self._enter(STOPPING)

    def _enter(self, state: int) -> None:
        self.state = state
        self._state_since = self._clock()

    def _advance(self) -> None:
        now = self._clock()
        dt = max(now - self._last, 0.0)
        self._last = now
        # State timers first, so a long gap ends "starting" before the readings move.
        in_state = now - self._state_since
        if self.state == STARTING and in_state >= self.start_duration:
            self._enter(RUNNING)
        elif self.state == STOPPING and in_state >= self.stop_duration:
            self._enter(IDLING)
        if self.running:
            self.hours += dt / 3600.0
        k = 1.0 - math.exp(-dt / self.time_constant) if dt > 0 else 0.0
        k_avg = 1.0 - math.exp(-dt / (4 * self.time_constant)) if dt > 0 else 0.0
        for name, (off, on) in TARGETS.items():
            target = on if self.running else off
            value = self.values[name] + (target - self.values[name]) * k
            value += self._rng.gauss(0.0, NOISE[name])
            self.values[name] = max(value, 0.0)
        if not self.running:   # no motor, no current (noise would make it negative)
            self.values['motor_current'] = 0.0
        for name in self.averages:
            self.averages[name] += (self.values[name] - self.averages[name]) * k_avg

    def registers(self) -> list[int]:
        """The 33-register status block as the device serves it now."""
        with self._lock:
            self._advance()
            v, avg = self.values, self.averages
            regs = [0] * REGISTER_COUNT
            regs[0] = self.state
            regs[1] = 1 if self.running else 0
            floats = [
                (2, float(self.warning_state)), (4, float(self.alarm_state)),
                (6, v['coolant_in_temp']), (8, v['coolant_out_temp']), (10, v['oil_temp']),
                (12, v['helium_temp']), (14, v['low_pressure']), (16, avg['low_pressure']),
                (18, v['high_pressure']), (20, avg['high_pressure']),
                (22, avg['high_pressure'] - avg['low_pressure']), (24, v['motor_current']),
                (26, self.hours),
            ]
            for offset, value in floats:
                regs[offset], regs[offset + 1] = _float_registers(value)
            regs[28] = 0                    # pressure unit: psi
            regs[29] = 1                    # temperature unit: Celsius
            regs[30] = self.serial
            regs[31] = (self.model[0] << 8) | self.model[1]
            regs[32] = (self.software_revision[0] << 8) | self.software_revision[1]
            return regs

    def describe(self) -> str:
        """Short state summary for the control channel's ``status``."""
        with self._lock:
            self._advance()
            return (f'state={STATE_NAMES.get(self.state, self.state)} '
                    f'helium_temp={self.values["helium_temp"]:.1f} '
                    f'motor_current={self.values["motor_current"]:.2f}')

    # -- Modbus-TCP ------------------------------------------------------------
    def handle(self, frame: bytes) -> bytes | None:
        """Answer one Modbus-TCP request frame (MBAP header included).

        Returns None (no reply) for frames that aren't Modbus-TCP (protocol id
        not 0, too short), as a Modbus server discards them.
        """
        if len(frame) < MBAP.size + 1:
            return None
        tid, protocol, _length, unit = MBAP.unpack_from(frame)
        if protocol != 0:
            return None
        pdu = frame[MBAP.size:]
        function = pdu[0]

        def reply(body: bytes) -> bytes:
            return MBAP.pack(tid, 0, len(body) + 1, unit) + body

        def exception(code: int) -> bytes:
            return reply(bytes([function | 0x80, code]))

        if function == READ_INPUT_REGISTERS:
            if len(pdu) != 5:
                return exception(ILLEGAL_VALUE)
            start, count = struct.unpack('>HH', pdu[1:])
            if not 1 <= count <= 125:
                return exception(ILLEGAL_VALUE)
            first = start - FIRST_REGISTER
            if first < 0 or first + count > REGISTER_COUNT:
                return exception(ILLEGAL_ADDRESS)
            regs = self.registers()[first:first + count]
            return reply(bytes([READ_INPUT_REGISTERS, 2 * count]) + struct.pack(f'>{count}H', *regs))
        if function == WRITE_SINGLE_REGISTER:
            if len(pdu) != 5:
                return exception(ILLEGAL_VALUE)
            address, value = struct.unpack('>HH', pdu[1:])
            if address != POWER_REGISTER:
                return exception(ILLEGAL_ADDRESS)
            if value not in (POWER_ON, POWER_OFF):
                return exception(ILLEGAL_VALUE)
            self.power(value == POWER_ON)
            return reply(pdu)          # a write is acknowledged by its echo
        return exception(ILLEGAL_FUNCTION)


class CompressorSimulator(DeviceServer):
    """A `DeviceServer` serving a `CompressorModel` over Modbus-TCP.

    Parameters
    ----------
    host : str
        Interface to listen on.
    port : int
        Port (0: pick a free one at `start`).
    model : CompressorModel, optional
        The device state (a default one if not given), kept as ``self.model``.
    """

    def __init__(self, host: str = '127.0.0.1', port: int = 0,
                 model: CompressorModel | None = None):
        self.model = model if model is not None else CompressorModel()
        super().__init__(self.model.handle, framer=mbap_framer, host=host, port=port)
