"""Driver for a pulse-tube compressor with a Cryomech CPA style register map.

The compressor speaks Modbus-TCP: each frame starts with a 7-byte MBAP header
(transaction id, protocol id 0, length of what follows, unit id; see
`socs_tcp._mbap`), then the PDU. This driver uses two functions:

- 0x04 *read input registers*: ``[fc, start_hi, start_lo, count_hi, count_lo]``,
  answered by ``[fc, byte_count, reg0_hi, reg0_lo, ...]``;
- 0x06 *write single register*: ``[fc, addr_hi, addr_lo, value_hi, value_lo]``,
  answered by an echo of the request.

A device that refuses a request answers ``[fc | 0x80, exception_code]``.

The pure functions (``build_*``, ``parse_*``, `decode_status`) hold the
protocol and are tested against byte strings; `Compressor` adds the I/O.
Every reply is checked (transaction id, protocol, unit, function, lengths)
before a value is decoded: a garbage or truncated reply raises `ReplyError`,
never returns junk.
"""

from __future__ import annotations

import math
import struct
import threading
import time

from socs_tcp import DeviceTimeout, TCPInterface, _mbap
from socs_tcp.agents.errors import DeviceReportedError, ReplyError

READ_INPUT_REGISTERS = 0x04
WRITE_SINGLE_REGISTER = 0x06
EXCEPTION_FLAG = 0x80

#: Status block, as on the CPA: registers 1..33 read in one request.
FIRST_REGISTER = 1
REGISTER_COUNT = 33
#: Holding register that switches the compressor (CPA: 0x0001 on, 0x00FF off).
POWER_REGISTER = 1
POWER_VALUES = {'on': 0x0001, 'off': 0x00FF}

# Offsets into the status block. 16-bit fields take one register; 32-bit IEEE
# floats take two, low word first (the CPA's word order).
UINT16_FIELDS = {
    'operating_state': 0,
    'compressor_state': 1,
    'pressure_unit': 28,
    'temperature_unit': 29,
    'serial_number': 30,
}
#: Warning and alarm bit fields are integers the CPA stores as floats.
FLOAT_AS_INT_FIELDS = {
    'warning_state': 2,
    'alarm_state': 4,
}
FLOAT_FIELDS = {
    'coolant_in_temp': 6,
    'coolant_out_temp': 8,
    'oil_temp': 10,
    'helium_temp': 12,
    'low_pressure': 14,
    'low_pressure_avg': 16,
    'high_pressure': 18,
    'high_pressure_avg': 20,
    'delta_pressure_avg': 22,
    'motor_current': 24,
    'hours_of_operation': 26,
}
MODEL_REGISTER = 31             # two 8-bit codes: major, minor
SOFTWARE_REVISION_REGISTER = 32  # two 8-bit numbers: major, minor

OPERATING_STATES = {
    0: 'idling',
    2: 'starting',
    3: 'running',
    5: 'stopping',
    6: 'error lockout',
    7: 'error',
    8: 'helium overtemp cooldown',
    9: 'power related error',
    15: 'recovered from error',
}

MODBUS_EXCEPTIONS = {
    1: 'illegal function',
    2: 'illegal data address',
    3: 'illegal data value',
    4: 'server device failure',
}


class ModbusExceptionReply(DeviceReportedError):
    """The device answered with a Modbus exception (it refused the request)."""

    def __init__(self, function: int, code: int):
        self.function = function
        self.code = code
        super().__init__([(code, f'function 0x{function:02x}: '
                                 f'{MODBUS_EXCEPTIONS.get(code, "unknown exception")}')])


# -- requests ---------------------------------------------------------------
def build_read_request(transaction_id: int, unit_id: int, start: int, count: int) -> bytes:
    """Return the frame reading ``count`` input registers from ``start``.

    Raises
    ------
    ValueError
        If ``count`` is not in 1..125 or an id/address is out of range.
    """
    if not 1 <= count <= 125:
        raise ValueError(f'count must be in 1..125, got {count!r}')
    return _mbap.pack_frame(transaction_id, unit_id,
                            struct.pack('>BHH', READ_INPUT_REGISTERS, start, count))


def build_write_request(transaction_id: int, unit_id: int, address: int, value: int) -> bytes:
    """Return the frame writing ``value`` to the single register ``address``.

    Raises
    ------
    ValueError
        If ``value`` or ``address`` does not fit in 16 bits.
    """
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f'value must be in 0..65535, got {value!r}')
    return _mbap.pack_frame(transaction_id, unit_id,
                            struct.pack('>BHH', WRITE_SINGLE_REGISTER, address, value))


# -- replies ------------------------------------------------------------------
def parse_header(header: bytes, transaction_id: int, unit_id: int) -> int:
    """Check a reply's MBAP header against its request; return its ``length`` field.

    Raises
    ------
    ReplyError
        If the header is short, the protocol id is not 0, the length is out of
        range, or the transaction id or unit id is not the request's.
    """
    if len(header) < _mbap.HEADER_SIZE:
        raise ReplyError(f'truncated reply: {len(header)} bytes, a Modbus header has '
                         f'{_mbap.HEADER_SIZE}: {bytes(header)!r}')
    tid, protocol, length, unit = _mbap.unpack_header(header)
    if protocol != _mbap.PROTOCOL_ID:
        raise ReplyError(f'not a Modbus-TCP reply (protocol id {protocol}, expected '
                         f'{_mbap.PROTOCOL_ID}): {bytes(header)!r}')
    if not 2 <= length <= _mbap.MAX_LENGTH:
        raise ReplyError(f'reply length field {length} out of range 2..{_mbap.MAX_LENGTH}')
    if tid != transaction_id:
        raise ReplyError(f'reply transaction id {tid} does not match request {transaction_id}')
    if unit != unit_id:
        raise ReplyError(f'reply unit id {unit} does not match request {unit_id}')
    return length


def _parse_pdu(frame: bytes, transaction_id: int, unit_id: int, function: int) -> bytes:
    """Check a whole reply frame; return its PDU after the function code."""
    length = parse_header(frame, transaction_id, unit_id)
    pdu = frame[_mbap.HEADER_SIZE:]
    if len(pdu) != length - 1:
        raise ReplyError(f'truncated or overlong reply: header announces {length - 1} bytes '
                         f'after the unit id, got {len(pdu)}')
    fc = pdu[0]
    if fc == function | EXCEPTION_FLAG:
        if len(pdu) != 2:
            raise ReplyError(f'malformed exception reply: {bytes(frame)!r}')
        raise ModbusExceptionReply(function, pdu[1])
    if fc != function:
        raise ReplyError(f'reply function code 0x{fc:02x} does not match request '
                         f'0x{function:02x}')
    return pdu[1:]


def parse_read_reply(frame: bytes, transaction_id: int, unit_id: int, count: int) -> list[int]:
    """Return the ``count`` register values of a read-input-registers reply.

    Raises
    ------
    ReplyError
        If the frame fails any check of `parse_header`, has the wrong function
        code, or its byte count is not ``2 * count`` and consistent with its length.
    ModbusExceptionReply
        If the device answered with a Modbus exception.
    """
    body = _parse_pdu(frame, transaction_id, unit_id, READ_INPUT_REGISTERS)
    if not body:
        raise ReplyError('read reply has no byte count')
    byte_count = body[0]
    if byte_count != 2 * count:
        raise ReplyError(f'reply byte count {byte_count}, expected {2 * count} '
                         f'for {count} registers')
    if len(body) - 1 != byte_count:
        raise ReplyError(f'reply carries {len(body) - 1} data bytes, its byte count says '
                         f'{byte_count}')
    return list(struct.unpack(f'>{count}H', body[1:]))


def parse_write_reply(frame: bytes, transaction_id: int, unit_id: int,
                      address: int, value: int) -> None:
    """Check that a write-single-register reply echoes its request.

    Raises
    ------
    ReplyError
        If the frame fails any header check or the echo differs.
    ModbusExceptionReply
        If the device refused the write.
    """
    body = _parse_pdu(frame, transaction_id, unit_id, WRITE_SINGLE_REGISTER)
    if len(body) != 4:
        raise ReplyError(f'write reply has {len(body)} bytes after the function code, expected 4')
    echo = struct.unpack('>HH', body)
    if echo != (address, value):
        raise ReplyError(f'write reply echoes register {echo[0]}={echo[1]}, '
                         f'expected {address}={value}')


def _float(registers: list[int], offset: int) -> float:
    # Low word first: the value's high word is the second register.
    value = struct.unpack('>f', struct.pack('>HH', registers[offset + 1], registers[offset]))[0]
    # A non-finite reading can't be published (OCS rejects inf); NaN reads as "unknown".
    return value if math.isfinite(value) else math.nan


def decode_status(registers: list[int]) -> dict:
    """Decode the 33-register status block into named readings.

    Returns
    -------
    dict
        Numeric fields (``operating_state``, ``compressor_state``,
        ``warning_state``, ``alarm_state``, temperatures, pressures,
        ``motor_current``, ``hours_of_operation``, units, ``serial_number``)
        plus ``model`` and ``software_revision`` strings.

    Raises
    ------
    ReplyError
        If fewer than `REGISTER_COUNT` registers are given.
    """
    if len(registers) < REGISTER_COUNT:
        raise ReplyError(f'status block has {len(registers)} registers, '
                         f'expected {REGISTER_COUNT}')
    data: dict[str, int | float | str] = {name: registers[i] for name, i in UINT16_FIELDS.items()}
    for name, i in FLOAT_AS_INT_FIELDS.items():
        value = _float(registers, i)
        data[name] = int(value) if not math.isnan(value) else -1
    for name, i in FLOAT_FIELDS.items():
        data[name] = _float(registers, i)
    model = registers[MODEL_REGISTER]
    data['model'] = f'{model >> 8}_{model & 0xFF}'
    rev = registers[SOFTWARE_REVISION_REGISTER]
    data['software_revision'] = f'{rev >> 8}.{rev & 0xFF}'
    return data


# -- the device -----------------------------------------------------------------
class Compressor(TCPInterface):
    """A CPA-style compressor on Modbus-TCP.

    Parameters
    ----------
    ip_address : str
        IP address of the compressor.
    port : int
        Modbus-TCP port (502 on the CPA).
    timeout : float
        Seconds one exchange may take before it fails.
    unit_id : int
        Modbus unit id of the compressor.

    Attributes
    ----------
    model, serial, software_revision
        Identity read with the last status block (None before the first one).
    """

    def __init__(self, ip_address: str, port: int = 502, timeout: float = 10,
                 unit_id: int = 1):
        self.unit_id = unit_id
        self.model = None
        self.serial = None
        self.software_revision = None
        self._tid = 0
        self._tid_lock = threading.Lock()
        super().__init__(ip_address, port, timeout)

    def _next_transaction_id(self) -> int:
        with self._tid_lock:
            self._tid = (self._tid + 1) & 0xFFFF
            return self._tid

    def _exchange(self, request: bytes, transaction_id: int) -> bytes:
        """Send ``request``; return the whole reply frame once its header checks out."""
        deadline = time.monotonic() + self.timeout
        header = self.query(request, size=_mbap.HEADER_SIZE)
        length = parse_header(header, transaction_id, self.unit_id)
        # The header's unit id is counted by ``length``: read the rest of the PDU,
        # within what is left of this exchange's timeout.
        remaining = max(deadline - time.monotonic(), 0.05)
        try:
            body = self.read_exactly(length - 1, timeout=remaining)
        except DeviceTimeout as exc:
            raise ReplyError(f'truncated reply: header announced {length - 1} more bytes, '
                             f'they did not arrive within {self.timeout} s') from exc
        return header + body

    def read_input_registers(self, start: int, count: int) -> list[int]:
        """Read ``count`` input registers from ``start``.

        Raises
        ------
        ConnectionError
            If the device can't be reached or doesn't answer in time.
        ReplyError
            If the reply is garbage, truncated or mismatched.
        ModbusExceptionReply
            If the device refuses the request.
        """
        tid = self._next_transaction_id()
        frame = self._exchange(build_read_request(tid, self.unit_id, start, count), tid)
        return parse_read_reply(frame, tid, self.unit_id, count)

    def write_register(self, address: int, value: int) -> None:
        """Write ``value`` to the holding register ``address`` (checks the echo).

        Raises
        ------
        ConnectionError, ReplyError, ModbusExceptionReply
            As `read_input_registers`.
        """
        tid = self._next_transaction_id()
        frame = self._exchange(build_write_request(tid, self.unit_id, address, value), tid)
        parse_write_reply(frame, tid, self.unit_id, address, value)

    def get_data(self) -> dict:
        """Read and decode the status block (see `decode_status`).

        Also updates `model`, `serial` and `software_revision`.

        Raises
        ------
        ConnectionError, ReplyError, ModbusExceptionReply
            As `read_input_registers`.
        """
        data = decode_status(self.read_input_registers(FIRST_REGISTER, REGISTER_COUNT))
        self.model = data['model']
        self.serial = data['serial_number']
        self.software_revision = data['software_revision']
        return data

    def identify(self) -> dict:
        """Return ``{'model', 'serial', 'software_revision'}`` read from the device.

        Raises
        ------
        ConnectionError, ReplyError, ModbusExceptionReply
            As `read_input_registers`.
        """
        self.get_data()
        return {'model': self.model, 'serial': self.serial,
                'software_revision': self.software_revision}

    def power(self, state: str) -> None:
        """Switch the compressor ``'on'`` or ``'off'``.

        Raises
        ------
        ValueError
            If ``state`` is not 'on' or 'off'.
        ConnectionError, ReplyError, ModbusExceptionReply
            As `write_register`.
        """
        key = state.lower() if isinstance(state, str) else state
        if key not in POWER_VALUES:
            raise ValueError(f"state must be 'on' or 'off', got {state!r}")
        self.write_register(POWER_REGISTER, POWER_VALUES[key])
