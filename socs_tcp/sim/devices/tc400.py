"""A simulated Pfeiffer TC400 turbo-pump controller behind a serial server.

The TC400 speaks Pfeiffer's RS-485 telegram protocol, ASCII, one telegram per
line ending in CR::

    AAA AC PPP LL DATA CCC \\r
    address (3 digits), action (00 read request / 10 write or reply),
    parameter number (3), data length (2), data, checksum (3 digits: the sum
    of the bytes before it, modulo 256)

A read request carries the data ``=?``. The controller answers requests for
its own address (others are on the same bus: ignored), with its address,
action 10, the parameter number and the value; a telegram whose checksum is
wrong is ignored, as on the bus. ``socs.agents.pfeiffer_tc400`` reaches it
with pyserial's ``socket://`` through a Moxa port.

`telegram`, `parse` and `TC400.answer` are pure; `PfeifferTC400Simulator`
serves them on a bridge (`socs_tcp.sim.devices._bridge.BridgeServer`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from socs_tcp.sim.devices._bridge import BridgeServer

__all__ = ['checksum', 'telegram', 'parse', 'TC400', 'PfeifferTC400Simulator', 'ON', 'OFF']

ON, OFF = '111111', '000000'     # Pfeiffer's boolean_old data type
READ, WRITE = 0, 10


def checksum(text: str) -> str:
    """The three-digit checksum of a telegram's body."""
    return f'{sum(text.encode("ascii")) % 256:03d}'


def telegram(address: int, action: int, parameter: int, data: str) -> str:
    """A whole telegram without its CR (e.g. a reply: action 10)."""
    body = f'{address:03d}{action:02d}{parameter:03d}{len(data):02d}{data}'
    return body + checksum(body)


def parse(text: str) -> tuple[int, int, int, str]:
    """(address, action, parameter, data) of one telegram (without its CR).

    Raises
    ------
    ValueError
        If it is not a telegram: too short, not digits where digits belong,
        a data length that does not match, or a wrong checksum (named).
    """
    if len(text) < 13:
        raise ValueError(f'telegram too short ({len(text)} characters): {text!r}')
    body, given = text[:-3], text[-3:]
    head = body[:10]
    if not (head.isdigit() and given.isdigit()):
        raise ValueError(f'telegram header or checksum not digits: {text!r}')
    if checksum(body) != given:
        raise ValueError(f'telegram checksum {given} != {checksum(body)}: {text!r}')
    length, data = int(head[8:10]), body[10:]
    if len(data) != length:
        raise ValueError(f'telegram data length {len(data)} != {length}: {text!r}')
    return int(head[:3]), int(head[3:5]), int(head[5:8]), data


@dataclass
class TC400:
    """The controller and its pump: switches, speeds, temperatures.

    The rotor runs up at ``acceleration`` Hz/s towards the set speed while
    the pumping station (parameter 10) and the motor (23) are on, and runs
    down as fast when either is off.

    Parameters
    ----------
    address : int
        RS-485 address (SOCS's site configs use e.g. 1 or 94).
    clock : callable
        Monotonic seconds (injectable for tests).
    """

    address: int = 1
    clock: Callable[[], float] = time.monotonic
    set_speed: int = 820          # Hz (parameter 308)
    acceleration: float = 20.0    # Hz/s
    station_on: bool = False      # parameter 10
    motor_on: bool = False        # parameter 23
    error: str = 'no Err'         # parameter 303
    speed: float = 0.0

    def __post_init__(self) -> None:
        self._since = self.clock()

    def _advance(self) -> None:
        now = self.clock()
        step, self._since = self.acceleration * (now - self._since), now
        target = self.set_speed if (self.station_on and self.motor_on) else 0
        if self.speed < target:
            self.speed = min(self.speed + step, target)
        else:
            self.speed = max(self.speed - step, target)

    def _running_up(self) -> bool:
        return self.station_on and self.motor_on and self.speed < self.set_speed

    def value(self, parameter: int) -> str | None:
        """The 6-character data of a read of ``parameter`` (None: not a parameter here)."""
        self._advance()
        running = self.speed / max(self.set_speed, 1)
        values = {
            10: ON if self.station_on else OFF, 23: ON if self.motor_on else OFF,
            303: self.error, 308: self.set_speed, 309: round(self.speed),
            310: round(100 * (0.3 + 1.2 * running)),        # drive current, 0.01 A
            313: 2400,                                      # drive voltage, 0.01 V
            316: round(10 + 40 * running),                  # drive power, W
            324: 32, 326: 35, 330: 28, 342: 30, 346: round(30 + 8 * running),   # deg C
            336: round(self.acceleration * 60) if self._running_up() else 0,   # rpm/s
        }
        if parameter not in values:
            return None
        value = values[parameter]
        return value if isinstance(value, str) else f'{value:06d}'

    def write(self, parameter: int, data: str) -> str:
        """Apply a control command; the data the controller echoes (or an error word)."""
        if parameter in (9, 10, 23):
            if data not in (ON, OFF):
                return '_RANGE'
            if parameter == 9:
                if data == ON:
                    self.error = 'no Err'
            else:
                self._advance()
                setattr(self, 'station_on' if parameter == 10 else 'motor_on', data == ON)
            return data
        if parameter == 308:
            if not data.isdigit() or not 0 < int(data) <= 1500:
                return '_RANGE'
            self._advance()
            self.set_speed = int(data)
            return f'{self.set_speed:06d}'
        return 'NO_DEF'

    def answer(self, request: bytes) -> bytes | None:
        """The reply telegram (without CR) to one request, or None (not ours, or corrupt)."""
        try:
            address, action, parameter, data = parse(request.decode('ascii'))
        except (UnicodeDecodeError, ValueError):
            return None
        if address != self.address:
            return None
        if action == READ and data == '=?':
            reply = self.value(parameter)
            reply = 'NO_DEF' if reply is None else reply
        elif action == WRITE:
            reply = self.write(parameter, data)
        else:
            return None
        return telegram(self.address, WRITE, parameter, reply).encode('ascii')

    def describe(self) -> str:
        self._advance()
        return (f'address={self.address} station={int(self.station_on)} '
                f'motor={int(self.motor_on)} speed={self.speed:.0f}Hz')


class PfeifferTC400Simulator(BridgeServer):
    """A TC400 behind a Moxa port (TCP), for ``socs.agents.pfeiffer_tc400``.

    Parameters
    ----------
    host, port : str, int
        Where to listen (port 0: a free one).
    controller : TC400, optional
        The controller (kept as ``self.model``).
    one_client : bool
        Take one TCP client at a time.
    """

    # Telegrams for address 1, each ending in its checksum and CR.
    command_set = (
        ('0010030902=?107', 'read parameter 309, rotation speed now (Hz)'),
        ('0010030802=?106', 'read 308, set rotation speed (Hz); 303 error, 310 current, '
                            '313 voltage, 316 power, 324-346 temperatures'),
        ('0011001006111111015', 'write 10, pumping station on (000000: off)'),
        ('0011002306111111019', 'write 23, motor on (000000: off)'),
        ('0011000906111111023', 'write 9, acknowledge errors'),
    )

    def __init__(self, host: str = '127.0.0.1', port: int = 0, controller: TC400 | None = None,
                 one_client: bool = False):
        self.model = controller if controller is not None else TC400()
        super().__init__(self.model.answer, terminator=b'\r', reply_terminator=b'\r',
                         host=host, port=port, one_client=one_client)
