"""A simulated Cryomech CPA compressor: the device model and its Modbus-TCP server.

`CompressorModel` is the compressor: an operating state machine (idling ->
starting -> running -> stopping -> idling) switched by writing the power
register, and readings that relax towards the values of the current state
(warm helium and a pressure split while running, equalized pressures and no
motor current when off) with a little noise. Time advances by the clock each
time the registers are read, so a long pause moves the readings as far as the
same time spent polling. Its registers 1-33 hold the CPA's status block.

`modbus_reply` is the pure request -> reply function of the CPA's Modbus-TCP
server: function 0x04 reads input registers, 0x06 writes the power register,
anything else gets the Modbus exception a real device sends.
`CryomechCPASimulator` serves a model as SOCS's ``PTC`` driver
(``socs.agents.cryomech_cpa.drivers``) reads it: it asks for 0x35 registers
from register 1, so registers 34-53 read as zeros. It is a
`socs_tcp.sim.DeviceServer`, so every fault of the control channel applies.
This project's sample compressor agent talks to the same model
(``socs_tcp.agents.compressor.simulator``).
"""

from __future__ import annotations

import math
import random
import struct
import threading
import time
from collections.abc import Callable, Sequence

from socs_tcp import _mbap
from socs_tcp.sim import DeviceServer, mbap_framer

__all__ = ['COMMAND_SET', 'REGISTER_COUNT', 'MODEL_REGISTERS', 'STATE_NAMES', 'TARGETS', 'CompressorModel',
           'modbus_reply', 'CryomechCPASimulator']

READ_INPUT_REGISTERS = 0x04
WRITE_SINGLE_REGISTER = 0x06
FIRST_REGISTER = 1
#: Input registers the CPA serves from register 1 (the PTC reads all of them).
REGISTER_COUNT = 53
#: The status block the model fills (registers 1-33); the rest read as zeros.
MODEL_REGISTERS = 33
POWER_REGISTER = 1
POWER_ON, POWER_OFF = 0x0001, 0x00FF
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3

#: The Modbus requests the CPA serves (``socs-tcp simulate --help`` lists them).
COMMAND_SET = (
    ('0x04 read input registers', 'registers 1-53 (1-33: the status block; 34-53 read 0)'),
    ('0x06 write register 1 = 0x0001', 'power on (idling -> starting -> running)'),
    ('0x06 write register 1 = 0x00FF', 'power off (running -> stopping -> idling)'),
    ('any other function', 'Modbus exception 1 (illegal function)'),
)

IDLING, STARTING, RUNNING, STOPPING = 0, 2, 3, 5
STATE_NAMES = {IDLING: 'idling', STARTING: 'starting', RUNNING: 'running', STOPPING: 'stopping'}

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
        """The model's ``MODEL_REGISTERS`` status registers (from register 1) as they are now."""
        with self._lock:
            self._advance()
            v, avg = self.values, self.averages
            regs = [0] * MODEL_REGISTERS
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

    def handle(self, frame: bytes) -> bytes | None:
        """Answer one Modbus-TCP request frame on the model's own registers (see `modbus_reply`)."""
        return modbus_reply(frame, self.registers, self.power, MODEL_REGISTERS)


def modbus_reply(frame: bytes, read_registers: Callable[[], Sequence[int]],
                 set_power: Callable[[bool], None], register_count: int = REGISTER_COUNT) -> bytes | None:
    """Answer one Modbus-TCP request frame as the CPA does.

    Parameters
    ----------
    frame : bytes
        The whole request, MBAP header included.
    read_registers : callable
        Returns the ``register_count`` input registers (16-bit ints) as they are now.
    set_power : callable
        Called with True or False for a write of 1 or 0xFF to the power register.
    register_count : int
        How many input registers the server has, from register 1.

    Returns
    -------
    bytes or None
        The reply frame (same transaction and unit id): the registers asked
        for, the echo of a write, or a Modbus exception (illegal function,
        address or value). None, as a Modbus server discards them, for frames
        that are too short or whose protocol id is not 0.
    """
    if len(frame) < _mbap.HEADER_SIZE + 1:
        return None
    tid, protocol, _length, unit = _mbap.unpack_header(frame)
    if protocol != _mbap.PROTOCOL_ID:
        return None
    pdu = frame[_mbap.HEADER_SIZE:]
    function = pdu[0]

    def reply(body: bytes) -> bytes:
        return _mbap.pack_frame(tid, unit, body)

    def exception(code: int) -> bytes:
        return reply(bytes([function | 0x80, code]))

    if function == READ_INPUT_REGISTERS:
        if len(pdu) != 5:
            return exception(ILLEGAL_VALUE)
        start, count = struct.unpack('>HH', pdu[1:])
        if not 1 <= count <= 125:
            return exception(ILLEGAL_VALUE)
        first = start - FIRST_REGISTER
        if first < 0 or first + count > register_count:
            return exception(ILLEGAL_ADDRESS)
        regs = list(read_registers())[first:first + count]
        return reply(bytes([READ_INPUT_REGISTERS, 2 * count]) + struct.pack(f'>{count}H', *regs))
    if function == WRITE_SINGLE_REGISTER:
        if len(pdu) != 5:
            return exception(ILLEGAL_VALUE)
        address, value = struct.unpack('>HH', pdu[1:])
        if address != POWER_REGISTER:
            return exception(ILLEGAL_ADDRESS)
        if value not in (POWER_ON, POWER_OFF):
            return exception(ILLEGAL_VALUE)
        set_power(value == POWER_ON)
        return reply(pdu)          # a write is acknowledged by its echo
    return exception(ILLEGAL_FUNCTION)


class CryomechCPASimulator(DeviceServer):
    """A CPA compressor on a TCP port, for SOCS's ``CryomechCPAAgent``.

    Parameters
    ----------
    host : str
        Interface to listen on.
    port : int
        Port (0: pick a free one at `start`; a real CPA serves 502).
    model : CompressorModel, optional
        The compressor (kept as ``self.model``). Default: one that is switched
        on at once, so its readings head for the running values (helium
        ~72 C, ~290/95 psi) as a compressor's do after a start.
    """

    command_set = COMMAND_SET

    def __init__(self, host: str = '127.0.0.1', port: int = 0,
                 model: CompressorModel | None = None):
        if model is None:
            model = CompressorModel(start_duration=1.0)
            model.power(True)
        self.model = model
        super().__init__(self.handle, framer=mbap_framer, host=host, port=port)

    def registers(self) -> list[int]:
        """The CPA's 53 input registers now: the model's 33, then zeros."""
        regs = self.model.registers()
        return regs + [0] * (REGISTER_COUNT - len(regs))

    def handle(self, frame: bytes) -> bytes | None:
        """The `DeviceServer` handler: one Modbus request frame -> its reply."""
        return modbus_reply(frame, self.registers, self.model.power)
