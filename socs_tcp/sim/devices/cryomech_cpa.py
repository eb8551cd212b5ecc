"""A simulated Cryomech CPA compressor, as SOCS's ``PTC`` driver reads it.

The PTC driver (``socs.agents.cryomech_cpa.drivers``) sends one Modbus-TCP
request, "read 0x35 input registers from register 1" (function 0x04), and
decodes the 106-byte block it gets back; ``power(state)`` writes 1 (on) or
0xFF (off) to register 1 (function 0x06) and discards the echo.

The compressor itself (operating states, helium and oil temperatures, the
pressure split, motor current, hours) is
`socs_tcp.agents.compressor.simulator.CompressorModel`, which models the same
CPA register map for this project's sample compressor agent: registers 1-33
carry it, the CPA's registers 34-53 read as zeros. `modbus_reply` is the pure
request -> reply function; `CryomechCPASimulator` serves it on a
`socs_tcp.sim.DeviceServer` (so every fault of the control channel applies).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from socs_tcp.agents.compressor.simulator import CompressorModel
from socs_tcp.sim import DeviceServer, mbap_framer

__all__ = ['REGISTER_COUNT', 'modbus_reply', 'CryomechCPASimulator']

MBAP = struct.Struct('>HHHB')      # transaction id, protocol id, length, unit id
READ_INPUT_REGISTERS = 0x04
WRITE_SINGLE_REGISTER = 0x06
FIRST_REGISTER = 1
#: Input registers the CPA serves from register 1 (the PTC reads all of them).
REGISTER_COUNT = 53
POWER_REGISTER = 1
POWER_ON, POWER_OFF = 0x0001, 0x00FF
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3


def modbus_reply(frame: bytes, read_registers: Callable[[], Sequence[int]],
                 set_power: Callable[[bool], None]) -> bytes | None:
    """Answer one Modbus-TCP request frame as the CPA does.

    Parameters
    ----------
    frame : bytes
        The whole request, MBAP header included.
    read_registers : callable
        Returns the ``REGISTER_COUNT`` input registers (16-bit ints) as they are now.
    set_power : callable
        Called with True or False for a write of 1 or 0xFF to the power register.

    Returns
    -------
    bytes or None
        The reply frame (same transaction and unit id): the registers asked
        for, the echo of a write, or a Modbus exception (illegal function,
        address or value). None, as a Modbus server discards them, for frames
        that are too short or whose protocol id is not 0.
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
