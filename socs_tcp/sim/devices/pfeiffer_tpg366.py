"""A simulated Pfeiffer TPG 366 (MaxiGauge) six-channel gauge controller.

The TPG 366 speaks Pfeiffer's two-step protocol: the host sends a mnemonic
(``PRX``, ``PR1``..``PR6``, ``SEN``, ...) terminated by CR (CR LF is accepted
too), and the controller acknowledges it with ACK (``\\x06\\r\\n``), or NAK
(``\\x15\\r\\n``) for a mnemonic it does not know. The host then sends ENQ
(the single byte ``\\x05``, no terminator), and the controller transmits the
data of the last mnemonic, terminated by CR LF. An ENQ before any mnemonic
returns the pressures of all channels (``PRX``), which is what SOCS's
``TPG366`` driver gets back from the ENQ it sends in its constructor.

Three gauges are connected, as on a cryostat: a cold-cathode gauge on the
vacuum space (~2e-6 mbar, slowly pumping down), one on the pump's fore line
(~4e-2 mbar) and a capacitance gauge on the gas handling (~6 mbar).
Channels 4-6 report status 5 (no sensor). Readings carry ~1 % noise.

`tpg_framer` frames requests, `TPG366State` is the controller, `answer` the
pure request -> reply function; `PfeifferTPG366Simulator` serves them on a
`socs_tcp.sim.DeviceServer`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from socs_tcp.sim import DeviceServer

__all__ = ['ENQ', 'ACK', 'NAK', 'tpg_framer', 'Gauge', 'TPG366State', 'answer',
           'PfeifferTPG366Simulator']

ENQ, ACK, NAK = b'\x05', b'\x06', b'\x15'
CR, LF = b'\r', b'\n'
MAX_REQUEST = 64          # longer than any mnemonic: the controller drops the link

# Gauge status codes of the protocol.
OK, UNDERRANGE, OVERRANGE, SENSOR_ERROR, SENSOR_OFF, NO_SENSOR, ID_ERROR = range(7)


def tpg_framer(buf: bytearray) -> bytes | None:
    """Remove one request from ``buf``: an ENQ byte, or a mnemonic up to CR.

    The LF of a CR LF pair is dropped (before the next request). Returns the
    request without its terminator (``b'\\x05'`` for ENQ), or None while it is
    incomplete.

    Raises
    ------
    ValueError
        If more than ``MAX_REQUEST`` bytes come without a CR (not this protocol).
    """
    while buf[:1] == LF:
        del buf[:1]
    if buf[:1] == ENQ:
        del buf[:1]
        return ENQ
    end = buf.find(CR)
    if end < 0:
        if len(buf) > MAX_REQUEST:
            raise ValueError(f'{len(buf)} bytes without CR: not a TPG 366 mnemonic')
        return None
    request = bytes(buf[:end])
    del buf[:end + 1]
    return request


@dataclass
class Gauge:
    """One channel: what is connected and the pressure it sits at."""

    kind: str                   # gauge identification (TID)
    pressure: float = 0.0       # mbar
    status: int = OK
    pumping_time: float = 0.0   # s for the pressure to fall by 1/e (0: steady)
    floor: float = 0.0          # mbar the pressure settles to while pumping


def _default_gauges() -> list[Gauge]:
    return [Gauge('PKR', 2.3e-6, pumping_time=3600.0, floor=8e-7),
            Gauge('PKR', 4.1e-2), Gauge('CMR', 5.6),
            Gauge('noSen', status=NO_SENSOR), Gauge('noSen', status=NO_SENSOR),
            Gauge('noSen', status=NO_SENSOR)]


@dataclass
class TPG366State:
    """The controller: six channels, the last mnemonic, and how readings vary.

    Parameters
    ----------
    clock : callable
        Seconds, monotonic (injectable for tests).
    seed : int, optional
        Seed of the reading noise.
    noise : float
        Relative standard deviation of each pressure reading.
    """

    clock: Callable[[], float] = time.monotonic
    seed: int | None = None
    noise: float = 0.01
    gauges: list = field(default_factory=_default_gauges)
    last_mnemonic: str = 'PRX'
    sensors_on: list = field(default_factory=lambda: [2, 2, 2, 0, 0, 0])

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._since = self.clock()

    def reading(self, channel: int) -> tuple[int, float]:
        """(status, mbar) of channel 1-6 now."""
        gauge = self.gauges[channel - 1]
        if gauge.status != OK:
            return gauge.status, 0.0
        pressure = gauge.pressure
        if gauge.pumping_time:
            elapsed = self.clock() - self._since
            excess = max(pressure - gauge.floor, 0.0)
            pressure = gauge.floor + excess * math.exp(-elapsed / gauge.pumping_time)
        return OK, pressure * (1.0 + self._rng.gauss(0.0, self.noise))

    def data(self, mnemonic: str) -> str | None:
        """What ENQ transmits after ``mnemonic`` (None: nothing to transmit)."""
        word, _, args = mnemonic.partition(',')
        if word == 'PRX':
            return ','.join(f'{s},{p:+.4E}' for s, p in map(self.reading, range(1, 7)))
        if len(word) == 3 and word[:2] == 'PR' and word[2] in '123456':
            status, pressure = self.reading(int(word[2]))
            return f'{status},{pressure:+.4E}'
        if word == 'SEN':
            if args:
                for i, value in enumerate(args.split(',')[:6]):
                    if value in ('1', '2') and self.sensors_on[i]:
                        self.sensors_on[i] = int(value)
            return ','.join(str(v) for v in self.sensors_on)
        if word == 'TID':
            return ','.join(g.kind for g in self.gauges)
        if word == 'UNI':
            return '0'                                    # mbar
        if word == 'ERR':
            return '0000'
        if word == 'AYT':
            return 'TPG366,PTG28290,44990000,010100,010100'
        return None

    def describe(self) -> str:
        """Short summary for the control channel's ``status``."""
        return f'last={self.last_mnemonic} p1={self.reading(1)[1]:.3g}mbar'


def answer(state: TPG366State, request: bytes) -> bytes | None:
    """The controller's reply to one framed request (without terminator), or None.

    A known mnemonic is acknowledged with ACK and remembered; an unknown one
    gets NAK and is forgotten. ENQ returns the data of the remembered
    mnemonic. Both without the CR LF the server appends.
    """
    if request == ENQ:
        data = state.data(state.last_mnemonic)
        return data.encode('ascii') if data is not None else NAK
    mnemonic = request.decode('ascii', 'replace').strip().upper()
    if not mnemonic or state.data(mnemonic) is None:
        return NAK
    state.last_mnemonic = mnemonic
    return ACK


class PfeifferTPG366Simulator(DeviceServer):
    """A TPG 366 on a TCP port (the real one serves 8000), for SOCS's ``PfeifferAgent``.

    Parameters
    ----------
    host : str
        Interface to listen on.
    port : int
        Port (0: pick a free one).
    state : TPG366State, optional
        The controller (kept as ``self.model``).
    """

    # Each mnemonic (ending in CR) is acknowledged (ACK, or NAK if unknown);
    # ENQ then transmits its data.
    command_set = (
        ('PRX', 'status and pressure (mbar) of all six channels'),
        ('PR1', 'status and pressure of one channel (PR1..PR6)'),
        ('SEN', 'sensor on/off state of the six channels (SEN,1,2,... switches)'),
        ('TID', 'gauge types of the six channels'),
        ('UNI', 'pressure unit (0: mbar)'),
        ('ERR', 'error status (0000: none)'),
        ('AYT', 'identity: type, model, serial, firmware'),
        ('\\x05 (ENQ)', 'transmit the data of the last mnemonic (PRX before any)'),
    )

    def __init__(self, host: str = '127.0.0.1', port: int = 0, state: TPG366State | None = None):
        self.model = state if state is not None else TPG366State()
        super().__init__(self.handle, framer=tpg_framer, reply_terminator=CR + LF,
                         host=host, port=port)

    def handle(self, request: bytes) -> bytes | None:
        """The `DeviceServer` handler: one framed request -> its reply."""
        return answer(self.model, request)
