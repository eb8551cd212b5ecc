"""Frames: how much of an input buffer makes one message, for the client and the simulators.

One small class per framing job, as in ``twisted.protocols.basic``:
`Chunk` (whatever is there), `Exactly` (a fixed length), `Terminated`
(up to a terminator, as ``LineReceiver``) and `Mbap` (Modbus-TCP, by its
header's length field). Each answers two questions about a buffer:
``ready(buf)`` (is a complete frame at its front?) and ``extract(buf)``
(remove that frame and return it, or return None and leave ``buf`` as it is).

Every frame has a maximum length. A complete frame longer than that, or a
buffer that holds more than that and still no complete frame, makes both
raise `FrameTooLong` (Twisted's ``LineReceiver`` calls ``lineLengthExceeded``
in both cases and drops the connection): whoever feeds the buffer then
stops, so memory stays bounded, and a reply is never longer than its limit
because of how it happened to arrive.

A frame is also a callable (``frame(buf)`` is ``frame.extract(buf)``): the
form the simulated-device server takes as ``framer``.
"""

from __future__ import annotations

from collections.abc import Callable

from socs_tcp._mbap import LENGTH_PREFIX

#: Longest frame accepted unless a larger ``max_length`` is given (1 MiB).
DEFAULT_MAX_LENGTH = 1 << 20

#: What the simulated-device server calls to cut requests from its input.
Framer = Callable[[bytearray], bytes | None]

#: Modbus-TCP MBAP header up to its length field (the one definition is in `socs_tcp._mbap`).
MBAP_HEADER = LENGTH_PREFIX


class FrameTooLong(ValueError):
    """A frame is longer than its maximum length: complete, or not yet complete past the limit."""

    def __init__(self, max_length: int, buffered: int, what: str, length: int | None = None) -> None:
        if length is None:
            why = f'without {what}: {buffered} bytes buffered'
        else:
            why = f'({length} bytes up to {what})'
        super().__init__(f'frame longer than {max_length} bytes (max_length) {why}')
        self.max_length = max_length


class Frame:
    """What every frame has: a maximum length, ``ready``, ``extract``, and calling it.

    Subclasses implement ``_end(buf)``: where the frame at the front of
    ``buf`` ends, or -1 while it is incomplete; and ``_cut``, what of
    ``buf[:end]`` is returned (all of it, by default). Those on a query's
    path (`Terminated`, `Chunk`) implement ``ready`` and ``extract``
    instead, in one step each: they run for every reply.
    """

    __slots__ = ('max_length',)

    #: What a complete frame is waiting for, for the too-long message.
    _missing = 'a complete frame'

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            raise TypeError(f'max_length must be an int, got {type(max_length).__name__}')
        if max_length <= 0:
            raise ValueError(f'max_length must be positive, got {max_length!r}')
        self.max_length = max_length

    def ready(self, buf: bytearray) -> bool:
        """Whether a complete frame is at the front of ``buf``.

        Raises
        ------
        FrameTooLong
            ``buf`` holds more than ``max_length`` bytes and no complete frame.
        """
        return self._checked_end(buf) >= 0

    def extract(self, buf: bytearray) -> bytes | None:
        """Remove the frame at the front of ``buf`` and return it; None while it is incomplete.

        Raises
        ------
        FrameTooLong
            ``buf`` holds more than ``max_length`` bytes and no complete frame.
        """
        end = self._checked_end(buf)
        if end < 0:
            return None
        data = self._cut(buf, end)
        del buf[:end]
        return data

    def whole(self, chunk: bytes) -> bytes | None:
        """The frame, when ``chunk`` (input read into an empty buffer) is exactly one whole frame.

        None otherwise: ``chunk`` then goes through the buffer and
        ``extract``. Most replies arrive whole, in one read, and this spares
        them the copy through the buffer.
        """
        return None

    def __call__(self, buf: bytearray) -> bytes | None:
        return self.extract(buf)

    def _checked_end(self, buf: bytearray) -> int:
        end = self._end(buf)
        if end > self.max_length:
            raise FrameTooLong(self.max_length, len(buf), self._missing, length=end)
        if end < 0 and len(buf) > self.max_length:
            raise FrameTooLong(self.max_length, len(buf), self._missing)
        return end

    def _end(self, buf: bytearray) -> int:
        raise NotImplementedError

    def _cut(self, buf: bytearray, end: int) -> bytes:
        return bytes(buf[:end])


class Chunk(Frame):
    """Whatever is there, at least one byte and at most ``max_length`` (like ``socket.recv``)."""

    __slots__ = ()

    def ready(self, buf: bytearray) -> bool:
        return len(buf) > 0

    def extract(self, buf: bytearray) -> bytes | None:
        if not buf:
            return None
        data = bytes(buf[:self.max_length])
        del buf[:self.max_length]
        return data

    def whole(self, chunk: bytes) -> bytes | None:
        return chunk if len(chunk) <= self.max_length else None


class Exactly(Frame):
    """Exactly ``size`` bytes (a fixed-length binary reply).

    Raises
    ------
    ValueError
        ``size`` is not positive, or above ``max_length``.
    """

    __slots__ = ('size',)
    _missing = 'all its bytes'

    def __init__(self, size: int, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        super().__init__(max_length)
        if size <= 0 or size > max_length:
            raise ValueError(f'size must be 1..{max_length} (max_length), got {size!r}')
        self.size = size

    def _end(self, buf: bytearray) -> int:
        return self.size if len(buf) >= self.size else -1

    def whole(self, chunk: bytes) -> bytes | None:
        return chunk if len(chunk) == self.size else None


class Terminated(Frame):
    """Everything up to the first ``terminator`` (``LineReceiver``'s line).

    With ``strip`` (the default) the terminator is removed from the returned
    frame (pyvisa's ``query``, the simulators' requests); without it the
    terminator is kept (pyserial's ``read_until``).

    Raises
    ------
    TypeError
        ``terminator`` is not bytes.
    ValueError
        ``terminator`` is empty, or ``max_length`` is not positive.
    """

    __slots__ = ('terminator', 'strip')

    def __init__(self, terminator: bytes, max_length: int = DEFAULT_MAX_LENGTH, *,
                 strip: bool = True) -> None:
        super().__init__(max_length)
        if not isinstance(terminator, (bytes, bytearray)):
            raise TypeError(f'terminator must be bytes, got {type(terminator).__name__}')
        if not terminator:
            raise ValueError('terminator must not be empty')
        self.terminator = bytes(terminator)
        self.strip = strip

    @property
    def _missing(self) -> str:  # type: ignore[override]
        return f'the terminator {self.terminator!r}'

    def ready(self, buf: bytearray) -> bool:
        found = buf.find(self.terminator)
        if found > self.max_length:
            raise FrameTooLong(self.max_length, len(buf), self._missing, length=found)
        if found < 0 and len(buf) > self.max_length:
            raise FrameTooLong(self.max_length, len(buf), self._missing)
        return found >= 0

    def extract(self, buf: bytearray) -> bytes | None:
        terminator = self.terminator
        found = buf.find(terminator)
        if found > self.max_length:   # complete, but longer than allowed (as LineReceiver)
            raise FrameTooLong(self.max_length, len(buf), self._missing, length=found)
        if found < 0:
            if len(buf) > self.max_length:
                raise FrameTooLong(self.max_length, len(buf), self._missing)
            return None
        end = found + len(terminator)
        data = bytes(buf[:found] if self.strip else buf[:end])
        del buf[:end]
        return data

    def whole(self, chunk: bytes) -> bytes | None:
        found = len(chunk) - len(self.terminator)  # where its only terminator must start
        if found < 0 or found > self.max_length or chunk.find(self.terminator) != found:
            return None
        return chunk[:found] if self.strip else chunk

    def __repr__(self) -> str:
        return f'Terminated({self.terminator!r})'


class Mbap(Frame):
    """A Modbus-TCP frame: the 6-byte MBAP header plus the ``length`` bytes it announces.

    The whole frame, header included, is returned, so that a reply can echo
    its transaction id.

    Raises
    ------
    ValueError
        From ``ready``/``extract``: the header's length field is 0 (a frame
        holds at least the unit id); a Modbus device drops such a connection.
    """

    __slots__ = ()
    _missing = 'the length its MBAP header announces'

    def _end(self, buf: bytearray) -> int:
        if len(buf) < MBAP_HEADER.size:
            return -1
        _tid, _pid, length = MBAP_HEADER.unpack_from(buf)
        if length == 0:
            raise ValueError('MBAP length field is 0')
        end = MBAP_HEADER.size + length
        return end if len(buf) >= end else -1


#: The simulators' names: a request framer splitting on a terminator, and one for Modbus-TCP.
TerminatorFramer = Terminated
mbap_framer = Mbap()


def reply_frame(terminator: bytes | None, size: int | None,
                max_length: int = DEFAULT_MAX_LENGTH) -> Frame:
    """The frame a reply is read with: ``size`` bytes, up to ``terminator`` (removed), or any bytes."""
    if size is not None:
        return Exactly(size, max_length)
    if terminator:
        return Terminated(terminator, max_length)
    return Chunk(max_length)
