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
