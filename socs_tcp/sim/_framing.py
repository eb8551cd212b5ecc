"""Request framers for the simulated-device server.

A framer is a callable ``framer(buf: bytearray) -> bytes | None`` that removes
one complete request from the front of ``buf`` and returns it, or returns
``None`` (leaving ``buf`` untouched) while the request is still incomplete.
`DeviceServer` calls it repeatedly until it returns ``None``, so one TCP
segment may carry several requests and one request may span several segments.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

Framer = Callable[[bytearray], bytes | None]

#: Modbus-TCP MBAP header: transaction id, protocol id, length, all big-endian
#: unsigned 16-bit; the unit id byte that follows is counted by ``length``.
MBAP_HEADER = struct.Struct('>HHH')


class TerminatorFramer:
    """Split requests on a terminator (the server's default framing).

    Parameters
    ----------
    terminator : bytes
        Non-empty byte string ending each request. It is removed from the
        returned request.
    max_length : int
        Longest request (without terminator) accepted. A buffer that grows
        past it without a terminator makes the framer raise, which the server
        treats as a protocol error and drops that connection: a real device's
        input buffer is finite too.

    Raises
    ------
    TypeError
        If ``terminator`` is not bytes.
    ValueError
        If ``terminator`` is empty or ``max_length`` is not positive.
    """

    def __init__(self, terminator: bytes, max_length: int = 1 << 20):
        if not isinstance(terminator, (bytes, bytearray)):
            raise TypeError(f'terminator must be bytes, got {type(terminator).__name__}')
        if not terminator:
            raise ValueError('terminator must not be empty')
        if max_length <= 0:
            raise ValueError(f'max_length must be positive, got {max_length!r}')
        self.terminator = bytes(terminator)
        self.max_length = max_length

    def __call__(self, buf: bytearray) -> bytes | None:
        """Remove and return the first terminated request, or ``None``.

        Raises
        ------
        ValueError
            If ``buf`` holds more than ``max_length`` bytes and no terminator.
        """
        i = buf.find(self.terminator)
        if i < 0:
            if len(buf) > self.max_length:
                raise ValueError(f'request longer than {self.max_length} bytes without terminator')
            return None
        request = bytes(buf[:i])
        del buf[:i + len(self.terminator)]
        return request

    def __repr__(self) -> str:
        return f'TerminatorFramer({self.terminator!r})'


def mbap_framer(buf: bytearray) -> bytes | None:
    """Frame Modbus-TCP requests by their MBAP header.

    A frame is the 6-byte header (transaction id, protocol id, length) plus
    ``length`` more bytes (unit id and PDU). The whole frame, header included,
    is returned so a handler can echo the transaction id in its reply.

    Raises
    ------
    ValueError
        If the header's length field is 0 (a frame must hold at least the
        unit id); the server drops that connection, as a Modbus device would.
    """
    if len(buf) < MBAP_HEADER.size:
        return None
    _tid, _pid, length = MBAP_HEADER.unpack_from(buf)
    if length == 0:
        raise ValueError('MBAP length field is 0')
    end = MBAP_HEADER.size + length
    if len(buf) < end:
        return None
    frame = bytes(buf[:end])
    del buf[:end]
    return frame
