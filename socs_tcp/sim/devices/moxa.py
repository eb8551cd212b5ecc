"""A simulated Moxa serial server with a wire-grid instrument on its serial port.

A Moxa NPort in TCP-server mode forwards the bytes of one TCP connection to
a serial line and back. Two instruments of the wire-grid calibrator sit
behind Moxa ports, driven by SOCS through ``socs.common.moxa_serial``:

- the DWL-5000XY tilt sensor (``socs.agents.wiregrid_tiltsensor``'s DWL
  driver): binary, 12-byte requests and replies (`DWL`, `dwl_framer`);
- the Kikusui PMX power supply (``socs.common.pmx``, used by
  ``socs.agents.wiregrid_kikusui``): SCPI lines that end in ``\\n\\r``,
  replies that end in ``\\n`` (`PMX`).

`MoxaDWLSimulator` and `MoxaPMXSimulator` serve them on a bridge
(`socs_tcp.sim.devices._bridge.BridgeServer`: late replies held for the next
connection, one client).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from socs_tcp.sim.devices._bridge import BridgeServer
from socs_tcp.sim.devices._scpi import header_and_argument, number, on_off

__all__ = ['DWL_FRAME', 'DWL_READ_XY', 'DWL_READ_X', 'DWL_INIT', 'dwl_framer', 'encode_xy',
           'encode_x', 'DWL', 'PMX', 'MoxaDWLSimulator', 'MoxaPMXSimulator']

DWL_FRAME = 12
DWL_READ_XY = b'\x06\x01\x02\xaa' + bytes(8)     # two-axis angle request
DWL_READ_X = b'\x06\x01\x01\xaa' + bytes(8)      # single-axis angle request
DWL_INIT = b'\x06\x24' + bytes(10)               # initialisation (no reply)
_XY_OFFSET, _X_OFFSET, _SCALE = 300000, 1800000, 10000


def dwl_framer(buf: bytearray) -> bytes | None:
    """Remove one 12-byte DWL request from ``buf`` (None while incomplete).

    Bytes before a request's 0x06 start byte are dropped, as the sensor
    resynchronises on it.
    """
    start = buf.find(b'\x06')
    if start < 0:
        del buf[:]
        return None
    del buf[:start]
    if len(buf) < DWL_FRAME:
        return None
    request = bytes(buf[:DWL_FRAME])
    del buf[:DWL_FRAME]
    return request


def encode_xy(x: float, y: float) -> bytes:
    """The two-axis reply: header 61 22, Y then X in 3 little-endian bytes each (0.0001 deg)."""
    def raw(angle: float) -> bytes:
        return struct.pack('<I', round(angle * _SCALE) + _XY_OFFSET)[:3]
    return b'\x61\x22' + raw(y) + raw(x) + bytes(4)


def encode_x(x: float) -> bytes:
    """The single-axis reply: header 61 11, X in 4 little-endian bytes (0.0001 deg)."""
    return b'\x61\x11' + struct.pack('<I', round(x * _SCALE) + _X_OFFSET) + bytes(6)


@dataclass
class DWL:
    """The DWL-5000XY tilt sensor: two angles (degrees) and their noise.

    Parameters
    ----------
    x, y : float
        The tilt (degrees, within +-30).
    noise : float
        Standard deviation of each reading (degrees).
    seed : int, optional
        Seed of the noise.
    """

    x: float = 0.1234
    y: float = -0.0567
    noise: float = 0.0
    seed: int | None = None
    initialised: bool = False

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _read(self, angle: float) -> float:
        return angle + (self._rng.gauss(0.0, self.noise) if self.noise else 0.0)

    def answer(self, request: bytes) -> bytes | None:
        """The sensor's reply to one 12-byte request (None: no reply)."""
        if request == DWL_INIT:
            self.initialised = True
            return None
        if request == DWL_READ_XY:
            return encode_xy(self._read(self.x), self._read(self.y))
        if request == DWL_READ_X:
            return encode_x(self._read(self.x))
        return None

    def describe(self) -> str:
        return f'x={self.x:g}deg y={self.y:g}deg'


@dataclass
class PMX:
    """The Kikusui PMX power supply (remote control over RS-232).

    Measured values follow the set points into a resistive load, limited by
    the current set point (constant current beyond it).
    """

    idn: str = 'KIKUSUI,PMX35-1A,AB123456,IFC01.52.0011 IOC01.10.0070'
    volts: float = 0.0
    amps: float = 1.0
    volt_limit: float = 38.5
    curr_limit: float = 1.1
    output: bool = False
    remote: bool = False
    external: str = 'NONE'
    load_ohms: float = 12.0

    def measured(self) -> tuple[float, float]:
        if not self.output:
            return 0.0, 0.0
        amps = self.volts / self.load_ohms
        if amps <= self.amps:
            return self.volts, amps
        return self.amps * self.load_ohms, self.amps

    def answer(self, line: str) -> str | None:
        """The reply to one command line (None: a setting, nothing to send)."""
        header, argument = header_and_argument(line.strip('\r\n '))
        value = number(argument)
        switch = on_off(argument)
        queries = {'*IDN?': lambda: self.idn, 'OUTP?': lambda: str(int(self.output)),
                   'MEAS:VOLT?': lambda: f'{self.measured()[0]:+.4E}',
                   'MEAS:CURR?': lambda: f'{self.measured()[1]:+.4E}',
                   'VOLT?': lambda: f'{self.volts:+.4E}', 'CURR?': lambda: f'{self.amps:+.4E}',
                   'VOLT:PROT?': lambda: f'{self.volt_limit:+.4E}',
                   'CURR:PROT?': lambda: f'{self.curr_limit:+.4E}',
                   'VOLT:EXT:SOUR?': lambda: self.external}
        if header in queries:
            return queries[header]()
        if header == 'SYST:REM':
            self.remote = True
        elif header == 'SYST:LOC':
            self.remote = False
        elif header == 'OUTP' and switch is not None:
            self.output = switch
        elif header == 'VOLT' and value is not None:
            self.volts = min(max(value, 0.0), self.volt_limit)
        elif header == 'CURR' and value is not None:
            self.amps = min(max(value, 0.0), self.curr_limit)
        elif header == 'VOLT:PROT' and value is not None:
            self.volt_limit = max(value, 0.0)
        elif header == 'CURR:PROT' and value is not None:
            self.curr_limit = max(value, 0.0)
        elif header == 'VOLT:EXT:SOUR' and argument.upper() in ('VOLT', 'NONE'):
            self.external = argument.upper()
        return None

    def describe(self) -> str:
        volts, amps = self.measured()
        return f'output={int(self.output)} {volts:g}V {amps:g}A'


class MoxaDWLSimulator(BridgeServer):
    """A Moxa serial port (TCP server mode) with the DWL tilt sensor behind it.

    Parameters
    ----------
    host, port : str, int
        Where to listen (port 0: a free one).
    sensor : DWL, optional
        The sensor (kept as ``self.model``).
    one_client : bool
        Take one TCP client at a time.
    """

    # 12-byte binary requests, written here in hex.
    command_set = (
        ('06 24 00 00 00 00 00 00 00 00 00 00', 'initialise (no reply)'),
        ('06 01 02 AA 00 00 00 00 00 00 00 00', 'two-axis angle: 12 bytes, 61 22, Y and X'),
        ('06 01 01 AA 00 00 00 00 00 00 00 00', 'single-axis angle: 12 bytes, 61 11, X'),
    )

    def __init__(self, host: str = '127.0.0.1', port: int = 0, sensor: DWL | None = None,
                 one_client: bool = False):
        self.model = sensor if sensor is not None else DWL()
        super().__init__(self.model.answer, framer=dwl_framer, host=host, port=port,
                         one_client=one_client)


class MoxaPMXSimulator(BridgeServer):
    """A Moxa serial port (TCP server mode) with the Kikusui PMX behind it.

    Parameters
    ----------
    host, port : str, int
        Where to listen (port 0: a free one).
    supply : PMX, optional
        The supply (kept as ``self.model``).
    one_client : bool
        Take one TCP client at a time.
    """

    # Lines end in LF CR as the driver writes them; replies end in LF.
    command_set = (
        ('SYST:REM', 'remote control'),
        ('*IDN?', 'identity'),
        ('OUTP ON', 'output on/off (OUTP? reads it: 1/0)'),
        ('VOLT 12', 'voltage set point (VOLT? reads it)'),
        ('CURR 0.5', 'current set point (CURR? reads it)'),
        ('VOLT:PROT 30', 'voltage limit (VOLT:PROT? reads it)'),
        ('CURR:PROT 1', 'current limit (CURR:PROT? reads it)'),
        ('MEAS:VOLT?', 'measured volts (MEAS:CURR?: amps)'),
        ('VOLT:EXT:SOUR VOLT', 'external voltage control, VOLT or NONE (VOLT:EXT:SOUR? reads it)'),
    )

    def __init__(self, host: str = '127.0.0.1', port: int = 0, supply: PMX | None = None,
                 one_client: bool = False):
        self.model = supply if supply is not None else PMX()
        # The driver ends commands with '\n\r': split on LF, the CR goes with the next line.
        super().__init__(self.handle, terminator=b'\n', reply_terminator=b'\n',
                         host=host, port=port, one_client=one_client)

    def handle(self, request: bytes) -> str | None:
        """One command line -> the supply's reply."""
        return self.model.answer(request.decode('ascii', 'replace'))
