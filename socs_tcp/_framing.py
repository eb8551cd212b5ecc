"""Frames: how much of the input buffer makes one reply.

Each frame is a small value that answers two questions about a buffer:
``ready`` (is a complete frame there?) and ``extract`` (remove and return it).
The words follow pyvisa (``read_termination``) and pyserial (``read_until``).
"""

from __future__ import annotations


class Chunk:
    """Whatever is there, at least one byte and at most ``max_size`` (like ``socket.recv``)."""

    __slots__ = ('max_size',)

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size

    def ready(self, buf: bytearray) -> bool:
        return len(buf) > 0

    def extract(self, buf: bytearray) -> bytes | None:
        if not buf:
            return None
        data = bytes(buf[:self.max_size])
        del buf[:self.max_size]
        return data


class Exactly:
    """Exactly ``size`` bytes (a fixed-length binary reply)."""

    __slots__ = ('size',)

    def __init__(self, size: int) -> None:
        self.size = size

    def ready(self, buf: bytearray) -> bool:
        return len(buf) >= self.size

    def extract(self, buf: bytearray) -> bytes | None:
        if len(buf) < self.size:
            return None
        data = bytes(buf[:self.size])
        del buf[:self.size]
        return data


class Terminated:
    """Everything up to the first ``terminator``.

    With ``strip`` the terminator is removed from the returned frame (pyvisa's
    ``query``); without it the terminator is kept (pyserial's ``read_until``).
    """

    __slots__ = ('terminator', 'strip')

    def __init__(self, terminator: bytes, strip: bool) -> None:
        self.terminator = terminator
        self.strip = strip

    def ready(self, buf: bytearray) -> bool:
        return self.terminator in buf

    def extract(self, buf: bytearray) -> bytes | None:
        end = buf.find(self.terminator)
        if end < 0:
            return None
        stop = end + len(self.terminator)
        data = bytes(buf[:end] if self.strip else buf[:stop])
        del buf[:stop]
        return data


Frame = Chunk | Exactly | Terminated


def reply_frame(terminator: bytes | None, size: int | None) -> Frame:
    """The frame a reply is read with: ``size`` bytes, up to ``terminator`` (removed), or any bytes."""
    if size is not None:
        return Exactly(size)
    if terminator:
        return Terminated(terminator, strip=True)
    return Chunk(1 << 30)
