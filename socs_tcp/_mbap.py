"""The Modbus-TCP frame header (MBAP), defined once for drivers and simulators.

A Modbus-TCP frame is a 7-byte header, then the PDU (function code and data)::

    transaction id  u16   the client's; the reply carries it back
    protocol id     u16   always 0 (Modbus)
    length          u16   bytes that follow this field: the unit id and the PDU
    unit id         u8    the addressed unit behind a gateway (1 for a lone device)

All big-endian. The length field counts the unit id, so a frame is
``LENGTH_PREFIX.size + length`` bytes long, which is all a framer needs to
read (`LENGTH_PREFIX`); a driver or a device reads the whole `HEADER`.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = ['HEADER', 'HEADER_SIZE', 'LENGTH_PREFIX', 'MAX_LENGTH', 'PROTOCOL_ID', 'Header',
           'pack_frame', 'unpack_header']

#: Transaction id, protocol id and length: the header up to the length field.
LENGTH_PREFIX = struct.Struct('>HHH')
#: The whole header: `LENGTH_PREFIX`, then the unit id.
HEADER = struct.Struct(LENGTH_PREFIX.format + 'B')
HEADER_SIZE = HEADER.size                  # 7
#: The protocol id of every Modbus frame.
PROTOCOL_ID = 0
#: Largest length field a frame can carry: the unit id and a 253-byte PDU.
MAX_LENGTH = 254


class Header(NamedTuple):
    """The fields of one MBAP header."""

    transaction_id: int
    protocol_id: int
    length: int
    unit_id: int


def pack_frame(transaction_id: int, unit_id: int, pdu: bytes) -> bytes:
    """The frame carrying ``pdu``: its header (protocol id 0, length from the PDU), then the PDU.

    Raises
    ------
    struct.error
        If an id does not fit its field.
    ValueError
        If ``pdu`` is empty or longer than a frame can carry.
    """
    if not 1 <= len(pdu) <= MAX_LENGTH - 1:
        raise ValueError(f'a PDU has 1..{MAX_LENGTH - 1} bytes, got {len(pdu)}')
    return HEADER.pack(transaction_id, PROTOCOL_ID, len(pdu) + 1, unit_id) + pdu


def unpack_header(data: bytes) -> Header:
    """The header at the front of ``data`` (which holds at least `HEADER_SIZE` bytes).

    Raises
    ------
    struct.error
        If ``data`` is shorter than a header.
    """
    return Header(*HEADER.unpack_from(data))
