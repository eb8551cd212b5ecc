"""Frames, the input buffer and the backoff policy, without a reactor."""

import select
import threading
import time

import pytest

from socs_tcp import Backoff, DeviceTimeout, NotConnected
from socs_tcp.buffer import InputBuffer
from socs_tcp.errors import DeviceDisconnected
from socs_tcp.framing import Chunk, Exactly, Terminated


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


def make_buffer():
    buf = InputBuffer(threading.Lock())
    source = object()
    buf.connection_up(source)
    return buf, source


def test_take_waits_for_a_complete_frame_fed_from_another_thread():
    buf, source = make_buffer()
    buf.feed(b'par', source)
    threading.Timer(0.05, buf.feed, (b'tial\n', source)).start()
    assert buf.take(Terminated(b'\n', strip=True), time.monotonic() + 2) == b'partial'


def test_take_times_out_and_keeps_partial_input():
    buf, source = make_buffer()
    buf.feed(b'par', source)
    start = time.monotonic()
    with pytest.raises(DeviceTimeout):
        buf.take(Terminated(b'\n', strip=True), start + 0.1)
    assert 0.09 <= time.monotonic() - start < 1.0
    assert len(buf) == 3


def test_input_from_a_discarded_connection_is_refused():
    buf, source = make_buffer()
    buf.discard(source, DeviceDisconnected('dropped'))
    assert buf.feed(b'late reply\n', source) is False
    assert len(buf) == 0
    with pytest.raises(DeviceDisconnected):
        buf.take(Chunk(10), time.monotonic() + 1)


def test_buffered_input_is_read_before_the_disconnect_error():
    buf, source = make_buffer()
    buf.feed(b'last words', source)
    buf.connection_down(source, DeviceDisconnected('peer closed'))
    assert buf.take(Chunk(100), time.monotonic() + 1) == b'last words'
    with pytest.raises(DeviceDisconnected):
        buf.take(Chunk(100), time.monotonic() + 1)


def test_a_new_connection_drops_the_old_connections_leftovers():
    buf, source = make_buffer()
    buf.feed(b'pre-disconnect reply', source)
    buf.connection_down(source, DeviceDisconnected('lost'))
    assert buf.connection_up(object()) == len(b'pre-disconnect reply')
    assert len(buf) == 0


def test_fileno_is_readable_exactly_while_input_waits():
    buf, source = make_buffer()
    fd = buf.fileno()
    assert select.select([fd], [], [], 0)[0] == []
    buf.feed(b'abc', source)
    assert select.select([fd], [], [], 0)[0] == [fd]
    buf.take(Chunk(2), time.monotonic() + 1)
    assert select.select([fd], [], [], 0)[0] == [fd]  # one byte still waits
    buf.take(Chunk(2), time.monotonic() + 1)
    assert select.select([fd], [], [], 0)[0] == []
    buf.feed(b'x', source)
    buf.clear()
    assert select.select([fd], [], [], 0)[0] == []
    buf.close()


def test_a_buffer_that_never_connected_says_so():
    buf = InputBuffer(threading.Lock())
    with pytest.raises(NotConnected):
        buf.take(Chunk(1), time.monotonic() + 1)


@pytest.mark.parametrize('kwargs, match', [
    (dict(initial=0), 'initial'), (dict(factor=0.5), 'factor'),
    (dict(initial=2, max_delay=1), 'max_delay'), (dict(jitter=1.5), 'jitter'),
    (dict(initial='1'), 'initial'),
])
def test_backoff_rejects_bad_values_naming_them(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        Backoff(**kwargs)
