"""A simulated Prologix GPIB-Ethernet controller with two instruments behind it.

The Prologix box listens on TCP port 1234 (SOCS's ``PrologixInterface``
connects there, hard-coded; the simulator's port is configurable). Lines
from the host end in LF (CR LF accepted). A line starting with ``++`` is for
the box itself: ``++mode``, ``++auto``, ``++addr``, ``++read``, ``++ver``,
``++eoi``, ``++eos``, ``++clr``, ``++rst``... ; any other line is sent to the
instrument at the current GPIB address. With ``++auto 1`` the box reads the
instrument's reply back at once after a query; with ``++auto 0`` the reply
waits in the instrument until ``++read``. The box keeps its settings across
TCP connections, as the real one does.

Instruments (GPIB address -> instrument):

- `ScpiPsu` at 5: a three-channel SCPI power supply (Keithley 2230G-30-1),
  as ``socs.agents.scpi_psu``'s ``PsuInterface`` drives it.
- `CG635` at 23: the SRS CG635 clock generator (the 122.88 MHz timing
  reference), as ``socs.agents.srs_cg635``'s ``SRSCG635Interface`` drives it.

`PrologixBox` is the controller, ``PrologixBox.answer`` its pure line ->
reply function; `PrologixSimulator` serves it on a bridge
(`socs_tcp.sim.devices._bridge.BridgeServer`: late replies, one client).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from socs_tcp.sim.devices._bridge import BridgeServer
from socs_tcp.sim.devices._scpi import answer_all, header_and_argument, number, on_off

__all__ = ['PROLOGIX_PORT', 'VERSION', 'PSU_ADDRESS', 'CG635_ADDRESS', 'PsuChannel', 'ScpiPsu',
           'CG635', 'PrologixBox', 'PrologixSimulator']

#: The port a Prologix GPIB-Ethernet controller listens on.
PROLOGIX_PORT = 1234
VERSION = 'Prologix GPIB-ETHERNET Controller version 01.06.06.00'
PSU_ADDRESS = 5
CG635_ADDRESS = 23


@dataclass
class PsuChannel:
    """One output of the supply: set points, switches and the load on it."""

    volts: float = 0.0
    amps: float = 1.0            # current limit
    enabled: bool = False        # OUTP:ENAB (master switch)
    on: bool = False             # CHAN:OUTP
    load_ohms: float = 10.0

    def measured(self) -> tuple[float, float]:
        """(volts, amps) at the terminals: constant voltage until the current limit."""
        if not (self.enabled and self.on):
            return 0.0, 0.0
        amps = self.volts / self.load_ohms
        if amps <= self.amps:
            return self.volts, amps
        return self.amps * self.load_ohms, self.amps       # constant current


@dataclass
class ScpiPsu:
    """A three-channel SCPI power supply (Keithley 2230G-30-1)."""

    idn: str = 'Keithley instruments, 2230G-30-1, 9203269, 1.16-1.04'
    max_volts: float = 30.0
    max_amps: float = 3.0
    channels: list = field(default_factory=lambda: [PsuChannel() for _ in range(3)])
    selected: int = 1

    def _channel(self, argument: str = '') -> PsuChannel:
        # 'CH2' in MEAS:VOLT? CH2 picks a channel; otherwise the selected one
        word = argument.strip().upper()
        if word.startswith('CH') and word[2:].isdigit() and 1 <= int(word[2:]) <= 3:
            return self.channels[int(word[2:]) - 1]
        return self.channels[self.selected - 1]

    def answer_one(self, command: str) -> str | None:
        header, argument = header_and_argument(command)
        header = header.replace('INSTRUMENT', 'INST').replace('NSELECT', 'NSEL')
        channel = self._channel(argument)
        value = number(argument)
        switch = on_off(argument)
        if header == '*IDN?':
            return self.idn
        if header == 'INST:NSEL' and value in (1, 2, 3):
            self.selected = int(value)
        elif header == 'INST:NSEL?':
            return str(self.selected)
        elif header == 'OUTP:ENAB' and switch is not None:
            for ch in self.channels:                 # the master switch of all outputs
                ch.enabled = switch
        elif header in ('CHAN:OUTP', 'OUTP') and switch is not None:
            targets = [channel] if header == 'CHAN:OUTP' else self.channels
            for ch in targets:
                ch.on = switch
                ch.enabled = ch.enabled or switch
        elif header in ('CHAN:OUTP:STAT?', 'CHAN:OUTP?'):
            return str(int(channel.on and channel.enabled))
        elif header in ('OUTP:STAT?', 'OUTP?'):
            return str(int(any(ch.on and ch.enabled for ch in self.channels)))
        elif header in ('VOLT', 'VOLTAGE') and value is not None:
            channel.volts = min(max(value, 0.0), self.max_volts)
        elif header in ('CURR', 'CURRENT') and value is not None:
            channel.amps = min(max(value, 0.0), self.max_amps)
        elif header in ('VOLT?', 'VOLTAGE?'):
            return f'{channel.volts:.4f}'
        elif header in ('CURR?', 'CURRENT?'):
            return f'{channel.amps:.4f}'
        elif header == 'MEAS:VOLT?':
            return f'{channel.measured()[0]:.4f}'
        elif header == 'MEAS:CURR?':
            return f'{channel.measured()[1]:.4f}'
        return None                                   # a setting, *CLS, or unknown

    def answer(self, message: str) -> str | None:
        """The reply to one GPIB message (None: nothing to read back)."""
        return answer_all(message, self.answer_one)

    def describe(self) -> str:
        return ' '.join(f'ch{i}={ch.measured()[0]:g}V/{ch.measured()[1]:g}A'
                        for i, ch in enumerate(self.channels, 1))


@dataclass
class CG635:
    """The SRS CG635 clock generator, set up as the telescope's timing reference."""

    idn: str = 'Stanford_Research_Systems,CG635,s/n004025,ver1.09'
    frequency: float = 122.88e6     # Hz
    stdc: int = 3                   # standard CMOS output: 3.3 V
    running: int = 1
    timebase: int = 0               # internal

    def answer_one(self, command: str) -> str | None:
        header, argument = header_and_argument(command)
        value = number(argument)
        if header == '*IDN?':
            return self.idn
        if header == 'FREQ?':
            return f'{self.frequency:.6f}'
        if header == 'STDC?':
            return str(self.stdc)
        if header == 'RUNS?':
            return str(self.running)
        if header == 'TIMB?':
            return str(self.timebase)
        if header == 'FREQ' and value is not None and 0 < value <= 2.05e9:
            self.frequency = value
        elif header == 'STDC' and value in (-1, 0, 1, 2, 3, 4):
            self.stdc = int(value)
        elif header == 'RUNS' and value in (0, 1):
            self.running = int(value)
        return None

    def answer(self, message: str) -> str | None:
        """The reply to one GPIB message; queries joined by ``;`` (``FREQ?;STDC?``)."""
        return answer_all(message, self.answer_one)

    def describe(self) -> str:
        return f'freq={self.frequency:g}Hz stdc={self.stdc} runs={self.running}'


def _default_instruments() -> dict:
    return {PSU_ADDRESS: ScpiPsu(), CG635_ADDRESS: CG635()}


@dataclass
class PrologixBox:
    """The GPIB controller: its settings and the instruments on its bus.

    Parameters
    ----------
    instruments : dict
        GPIB address (0-30) -> instrument (an object with ``answer(message)``).
    """

    instruments: dict = field(default_factory=_default_instruments)
    mode: int = 1                  # 1: controller
    auto: int = 0                  # read-after-write
    address: int = PSU_ADDRESS
    eoi: int = 1
    eos: int = 0
    pending: dict = field(default_factory=dict)     # address -> reply waiting for ++read

    def __post_init__(self) -> None:
        for address in self.instruments:
            if not (isinstance(address, int) and 0 <= address <= 30):
                raise ValueError(f'GPIB addresses must be ints 0-30, got {address!r}')

    def answer(self, line: str) -> str | None:
        """The box's reply to one line from the host (None: nothing is sent back)."""
        line = line.strip('\r\n')
        if line.startswith('++'):
            return self._command(line[2:].strip())
        instrument = self.instruments.get(self.address)
        if instrument is None or self.mode != 1:
            return None                 # no listener at that address: the line is lost
        reply = instrument.answer(line)
        if reply is None:
            return None
        if self.auto:
            return reply
        self.pending[self.address] = reply      # until ++read
        return None

    def _command(self, text: str) -> str | None:
        word, _, argument = text.partition(' ')
        word, argument = word.lower(), argument.strip()
        setting = {'mode': 'mode', 'auto': 'auto', 'eoi': 'eoi', 'eos': 'eos', 'addr': 'address'}
        if word == 'ver':
            return VERSION
        if word in setting:
            if not argument:
                return str(getattr(self, setting[word]))
            value = argument.split()[0]
            if value.isdigit():
                limit = 30 if word == 'addr' else (3 if word == 'eos' else 1)
                if int(value) <= limit:
                    setattr(self, setting[word], int(value))
            return None
        if word == 'read':
            return self.pending.pop(self.address, None)
        if word in ('clr', 'rst', 'ifc', 'loc', 'llo'):
            self.pending.pop(self.address, None)
        return None                       # unknown ++ commands are ignored, as the box does

    def describe(self) -> str:
        parts = [f'addr={self.address} auto={self.auto}']
        parts += [f'gpib{a}:[{i.describe()}]' for a, i in sorted(self.instruments.items())]
        return ' '.join(parts)


class PrologixSimulator(BridgeServer):
    """A Prologix GPIB-Ethernet box on a TCP port, with a power supply (GPIB 5) and a CG635 (GPIB 23).

    Parameters
    ----------
    host : str
        Interface to listen on.
    port : int
        Port (0: pick a free one; SOCS's drivers connect to `PROLOGIX_PORT`).
    box : PrologixBox, optional
        The controller and its instruments (kept as ``self.model``).
    one_client : bool
        Take one TCP client at a time.
    """

    # Lines end in LF; '++' lines are for the box, the others go to the instrument at ++addr.
    command_set = (
        ('++ver', 'the box: its version'),
        ('++mode 1', 'the box: controller mode (++mode: the mode now)'),
        ('++auto 1', 'the box: read the reply back after each query (0: wait for ++read)'),
        ('++addr 5', 'the box: talk to GPIB address 5 (the supply; 23: the CG635)'),
        ('++read eoi', 'the box: read the instrument\'s pending reply'),
        ('*IDN?', 'either instrument: its identity'),
        ('inst:nsel 2', 'supply: select channel 1-3'),
        ('volt 12.5', 'supply: voltage set point of the selected channel (VOLT? reads it)'),
        ('curr 1.5', 'supply: current limit of the selected channel (CURR? reads it)'),
        ('OUTP:ENAB ON', 'supply: master output enable (OFF)'),
        ('CHAN:OUTP ON', 'supply: selected channel on/off (CHAN:OUTP:STAT? reads it)'),
        ('MEAS:VOLT? CH2', 'supply: measured volts of a channel (MEAS:CURR? CH2: amps)'),
        ('*CLS', 'either instrument: clear status'),
        ('FREQ?', 'CG635: output frequency, Hz (FREQ 10e6 sets it)'),
        ('STDC?', 'CG635: standard CMOS level, -1..4 (STDC 3 sets it)'),
        ('RUNS?', 'CG635: running, 0/1'),
        ('TIMB?', 'CG635: timebase, 0-3'),
        ('FREQ?;STDC?;RUNS?;TIMB?', 'CG635: several queries, replies joined by ;'),
    )

    def __init__(self, host: str = '127.0.0.1', port: int = 0, box: PrologixBox | None = None,
                 one_client: bool = False):
        self.model = box if box is not None else PrologixBox()
        super().__init__(self.handle, terminator=b'\n', reply_terminator=b'\n',
                         host=host, port=port, one_client=one_client)

    def handle(self, request: bytes) -> str | None:
        """One line from the host -> the box's reply."""
        return self.model.answer(request.decode('ascii', 'replace'))
