"""A simulated Omega CNi16D PID controller driving the half-wave plate rotor.

The controller's Ethernet module takes ASCII commands ending in CR LF, each
``*`` + a letter + a two-digit target (+ a value), and answers with the
command's letter and target (+ a value), ending in CR:

================  ===============================  ================================
command           meaning                          reply
================  ===============================  ================================
``*W014VVVVV``    frequency set point (X.XXX Hz,   ``W01``
                  hex)
``*W024VVVVV``    direction set point (0 or 5.0)   ``W02``
``*W0C8x``        action type (81 reverse, 83      ``W0C``
                  direct)
``*W17/18/19``    P, I, D                          ``W17`` ...
``*W14 / *W03``   feedback scale / offset          ``W14`` / ``W03``
``*R01``          frequency set point              ``R014VVVVV``
``*R02``          direction set point              ``R024VVVVV``
``*X01``          rotation frequency now           ``X01<decimal>``
``*Z02``          reset: apply the set points      ``Z02``
other             -                                ``?43`` (command error)
================  ===============================  ================================

A written set point takes effect at the next ``*Z02`` reset, as on the
controller; the rotor then approaches it exponentially (``time_constant``).
`PIDController.answer` is the pure command -> reply function;
`HWPPIDSimulator` serves it for ``socs.agents.hwp_pid``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from socs_tcp.sim.devices._bridge import BridgeServer

__all__ = ['PIDController', 'HWPPIDSimulator']

_HEX = set('0123456789ABCDEF')


@dataclass
class PIDController:
    """The controller's registers and the rotor it drives.

    Parameters
    ----------
    clock : callable
        Monotonic seconds (injectable for tests).
    time_constant : float
        Seconds for the rotor to cover 1/e of the way to the set point.
    """

    clock: Callable[[], float] = time.monotonic
    time_constant: float = 5.0
    registers: dict = field(default_factory=lambda: {'01': '00000', '02': '00000'})
    frequency_setpoint: float = 0.0     # in effect (after a reset)
    frequency: float = 0.0

    def __post_init__(self) -> None:
        self._since = self.clock()

    def _advance(self) -> None:
        now = self.clock()
        elapsed, self._since = now - self._since, now
        gap = self.frequency_setpoint - self.frequency
        self.frequency += gap * (1.0 - math.exp(-elapsed / self.time_constant))

    def answer(self, command: str) -> str:
        """The reply (without CR) to one command (without CR LF)."""
        command = command.strip()
        if len(command) < 4 or command[0] != '*':
            return '?43'
        letter, target, value = command[1], command[2:4], command[4:]
        self._advance()
        if letter == 'W' and value and set(value.upper()) <= _HEX:
            if target in ('01', '02'):
                if len(value) != 6 or value[0] != '4':        # X.XXX format, 5 hex digits
                    return '?46'
                self.registers[target] = value[1:].upper()
            else:
                self.registers[target] = value.upper()
            return f'W{target}'
        if letter == 'R' and not value and target in ('01', '02'):
            return f'R{target}4{self.registers[target]}'
        if letter == 'X' and not value and target == '01':
            return f'X01{self.frequency:.3f}'
        if letter == 'Z' and not value and target == '02':
            self.frequency_setpoint = int(self.registers['01'], 16) / 1000.0
            return 'Z02'
        return '?43'

    @property
    def direction(self) -> int:
        """0 forward, 1 reverse (the direction set point above 2.5)."""
        return int(int(self.registers['02'], 16) / 1000.0 > 2.5)

    def describe(self) -> str:
        self._advance()
        return (f'freq={self.frequency:.3f}Hz setpoint={self.frequency_setpoint:g}Hz '
                f'direction={self.direction}')


class HWPPIDSimulator(BridgeServer):
    """The HWP PID controller on a TCP port, for ``socs.agents.hwp_pid``.

    Parameters
    ----------
    host, port : str, int
        Where to listen (port 0: a free one).
    controller : PIDController, optional
        The controller (kept as ``self.model``).
    one_client : bool
        Take one TCP client at a time.
    """

    # Commands end in CR LF, replies in CR.
    command_set = (
        ('*W01400BB8', 'frequency set point 3.000 Hz (hex X.XXX); applied at *Z02'),
        ('*W02401388', 'direction reverse (*W02400000: forward)'),
        ('*W0C81', 'action type reverse (83: direct)'),
        ('*W1700C8', 'P parameter (W18: I, W19: D; W14/W03: feedback scale/offset)'),
        ('*R01', 'frequency set point: R014VVVVV'),
        ('*R02', 'direction set point: R024VVVVV'),
        ('*X01', 'rotation frequency now: X01<Hz>'),
        ('*Z02', 'reset: apply the set points'),
    )

    def __init__(self, host: str = '127.0.0.1', port: int = 0,
                 controller: PIDController | None = None, one_client: bool = False):
        self.model = controller if controller is not None else PIDController()
        super().__init__(self.handle, terminator=b'\r\n', reply_terminator=b'\r',
                         host=host, port=port, one_client=one_client)

    def handle(self, request: bytes) -> str:
        """One command -> the controller's reply."""
        return self.model.answer(request.decode('ascii', 'replace'))
