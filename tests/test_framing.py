"""Frames and the backoff policy, without a reactor."""

import pytest

from socs_tcp import Backoff
from socs_tcp._framing import Chunk, Exactly, Terminated, reply_frame


def test_terminated_strips_or_keeps_the_terminator():
    buf = bytearray(b'1.5\r\n2.5\r\npartial')
    assert Terminated(b'\r\n', strip=True).extract(buf) == b'1.5'
    assert Terminated(b'\r\n', strip=False).extract(buf) == b'2.5\r\n'
    assert Terminated(b'\r\n', strip=True).extract(buf) is None
    assert buf == bytearray(b'partial')


def test_exactly_and_chunk():
    buf = bytearray(b'abcdef')
    assert not Exactly(7).ready(buf) and Exactly(7).extract(buf) is None
    assert Exactly(4).extract(buf) == b'abcd'
    assert Chunk(1).extract(buf) == b'e'
    assert Chunk(10).extract(buf) == b'f'
    assert Chunk(10).extract(buf) is None


def test_reply_frames_for_query():
    buf = bytearray(b'12\r\n345')
    assert reply_frame(b'\r\n', None).extract(buf) == b'12'
    assert reply_frame(None, 2).extract(buf) == b'34'
    assert reply_frame(None, None).extract(buf) == b'5'


@pytest.mark.parametrize('kwargs, match', [
    (dict(initial=0), 'initial'), (dict(factor=0.5), 'factor'),
    (dict(initial=2, max_delay=1), 'max_delay'), (dict(jitter=1.5), 'jitter'),
    (dict(initial='1'), 'initial'),
])
def test_backoff_rejects_bad_values_naming_them(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        Backoff(**kwargs)


def test_every_frame_has_a_maximum_length_as_line_receiver():
    from socs_tcp._framing import FrameTooLong
    line = Terminated(b'\n', max_length=4)
    assert line.extract(bytearray(b'abcd\n')) == b'abcd'      # exactly the limit, then its terminator
    with pytest.raises(FrameTooLong, match='longer than 4 bytes'):
        line.ready(bytearray(b'abcde'))
    # A complete frame longer than the limit is refused too, however it arrived (in one read here).
    for check in (line.ready, line.extract):
        with pytest.raises(FrameTooLong, match='longer than 4 bytes'):
            check(bytearray(b'abcde\n'))
    from socs_tcp._framing import Mbap
    with pytest.raises(FrameTooLong, match='longer than 10 bytes'):   # announced: 6 + 5 bytes
        Mbap(max_length=10).extract(bytearray(b'\x00\x01\x00\x00\x00\x05\x01\x03\x02\x00\x01'))
    with pytest.raises(ValueError, match='size must be 1..8'):
        Exactly(9, max_length=8)
    assert Chunk(3).extract(bytearray(b'abcdef')) == b'abc'   # a chunk is never too long
    with pytest.raises(ValueError, match='max_length'):
        Terminated(b'\n', max_length=0)


def test_mbap_frames_by_the_header_length():
    from socs_tcp._framing import Mbap
    frame = Mbap(max_length=10)
    buf = bytearray(b'\x00\x01\x00\x00\x00\x03\x01\x03')
    assert frame.extract(buf) is None and len(buf) == 8
    buf += b'\x07tail'
    assert frame.extract(buf) == b'\x00\x01\x00\x00\x00\x03\x01\x03\x07' and buf == bytearray(b'tail')
    with pytest.raises(ValueError, match='MBAP length field is 0'):
        frame.extract(bytearray(b'\x00\x01\x00\x00\x00\x00\x01'))


def test_the_simulators_frame_with_the_clients_vocabulary():
    from socs_tcp import _framing, sim
    assert sim.TerminatorFramer is _framing.Terminated and isinstance(sim.mbap_framer, _framing.Mbap)
    assert sim.TerminatorFramer(b'\r\n')(bytearray(b'REQ\r\n')) == b'REQ'


@pytest.mark.parametrize('frame, chunk, expected', [
    (Terminated(b'\n'), b'reply\n', b'reply'),
    (Terminated(b'\n', strip=False), b'reply\n', b'reply\n'),
    (Terminated(b'\r\n'), b'\r\n', b''),
    (Terminated(b'\r\n'), b'\n', None),                 # shorter than its terminator
    (Terminated(b'\n'), b'one\ntwo\n', None),           # two frames: through the buffer
    (Terminated(b'\n'), b'partial', None),
    (Terminated(b'\n'), b'\nrest', None),
    (Terminated(b'\n', max_length=4), b'12345\n', None),  # too long: extract says so
    (Terminated(b'\n', max_length=5), b'12345\n', b'12345'),
    (Exactly(3), b'abc', b'abc'),
    (Exactly(3), b'abcd', None),
    (Chunk(4), b'abcd', b'abcd'),
    (Chunk(4), b'abcde', None),
])
def test_a_chunk_that_is_exactly_one_whole_frame_is_that_frame(frame, chunk, expected):
    assert frame.whole(chunk) == expected
    if expected is not None:  # the same frame as through the buffer, and nothing left
        buf = bytearray(chunk)
        assert frame.extract(buf) == expected and not buf
