"""Resources stay bounded: input memory, and CPU while a write waits, past descriptor 1024."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import threading
import time

import pytest
import pytest_twisted

from socs_tcp import DeviceTimeout, TCPInterface
from tests.conftest import in_worker

KIB = 1024


def wait_until(condition, timeout: float = 5.0, what: str = 'the condition') -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.005)


def pattern(n: int) -> bytes:
    """``n`` bytes in which every offset can be checked: nothing lost, nothing reordered."""
    block = bytes(range(251))  # a prime length: offsets do not line up with read sizes
    return (block * (n // len(block) + 1))[:n]


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    sock.listen(1)
    sock.settimeout(5)
    yield sock
    sock.close()


@pytest_twisted.inlineCallbacks
def test_a_device_that_streams_while_nobody_reads_is_held_back_and_nothing_is_lost(listener):
    """Like a TPG366 booting in continuous mode: the reactor stops reading, TCP holds the device."""
    total, limit = 8 * 1024 * KIB, 64 * KIB
    data = pattern(total)
    sent = []

    def stream():
        peer, _ = listener.accept()
        with peer:
            peer.settimeout(10)
            peer.sendall(data)
            sent.append(len(data))

    def body():
        device = threading.Thread(target=stream)
        device.start()
        dev = TCPInterface('127.0.0.1', listener.getsockname()[1], 2, input_limit=limit)
        try:
            wait_until(lambda: dev.stats['reading_paused'], what='reading to pause')
            assert dev.stats['buffered'] <= limit + 64 * KIB  # the limit plus one read of the reactor
            assert not sent                                  # the device is held back, not drained
            received = bytearray()
            while len(received) < total:
                received += dev.read_exactly(min(256 * KIB, total - len(received)), timeout=5)
            assert received == data
            assert dev.stats['input_pauses'] >= 1 and not dev.stats['reading_paused']
        finally:
            dev.close()
            device.join(10)
        assert sent == [total]
    yield in_worker(body)


@pytest.fixture
def high_descriptors():
    """Take every descriptor below 1100, so the interface's sockets get numbers above 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2048:
        pytest.skip(f'needs 2048 descriptors, the hard limit is {hard}')
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    fillers = []
    try:
        while True:
            fd = os.open(os.devnull, os.O_RDONLY)
            fillers.append(fd)
            if fd >= 1100:
                break
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest_twisted.inlineCallbacks
def test_a_writer_to_a_device_that_stopped_reading_waits_without_spinning(listener, high_descriptors):
    timeout = 0.5

    def body():
        dev = TCPInterface('127.0.0.1', listener.getsockname()[1], timeout)
        peer, _ = listener.accept()                  # accepted, and never read
        try:
            assert dev._link._bridge._sock.fileno() > 1024  # where select.select() gives up
            wall, cpu = time.monotonic(), time.thread_time()
            with pytest.raises(DeviceTimeout):
                dev.send(b'x' * (32 * 1024 * KIB))   # far more than the kernel buffers hold
            wall, cpu = time.monotonic() - wall, time.thread_time() - cpu
            assert timeout <= wall < timeout + 0.5
            assert cpu < 0.4 * wall, f'the writer burnt {cpu:.2f} s of CPU in {wall:.2f} s'
        finally:
            peer.close()
            dev.close()
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_a_reply_longer_than_the_input_limit_completes_for_the_caller_waiting_for_it(listener):
    """input_limit holds back input nobody waits for, never the reply a caller is reading."""
    dump = pattern(300 * KIB).replace(b'\n', b'.') + b'\n'    # one terminated line

    def device():
        peer, _ = listener.accept()
        with peer, contextlib.suppress(ConnectionResetError):  # close() aborts: a reset ends it
            peer.settimeout(5)
            while peer.recv(100):
                peer.sendall(dump)

    def body():
        serving = threading.Thread(target=device)
        serving.start()
        dev = TCPInterface('127.0.0.1', listener.getsockname()[1], 2, read_termination=b'\n',
                           input_limit=64 * KIB)
        try:
            assert dev.query(b'CURV?\n') == dump[:-1]
            assert dev.stats['timeouts'] == 0 and dev.stats['disconnects'] == 0
        finally:
            dev.close()
            serving.join(5)
    yield in_worker(body)


def rss_bytes() -> int:
    """This process's resident memory now (Linux)."""
    with open('/proc/self/statm') as statm:
        return int(statm.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def endless_line_device(listener, stop: threading.Event) -> None:
    """Answers a request with a line that never ends, as fast as the client takes it."""
    peer, _ = listener.accept()
    with peer, contextlib.suppress(OSError):  # the client drops us: reset or broken pipe
        peer.settimeout(5)
        peer.recv(100)
        chunk = b'x' * (64 * KIB)
        while not stop.is_set():
            peer.sendall(chunk)


@pytest_twisted.inlineCallbacks
def test_a_reply_that_never_ends_fails_the_waiting_query_at_once_with_memory_bounded(listener):
    """As LineReceiver.lineLengthExceeded: past max_frame_length the connection is dropped."""
    stop = threading.Event()
    serving = threading.Thread(target=endless_line_device, args=(listener, stop))
    serving.start()
    limit = 256 * KIB

    def body():
        dev = TCPInterface('127.0.0.1', listener.getsockname()[1], 5, read_termination=b'\n',
                           max_frame_length=limit)
        try:
            before = rss_bytes()
            start = time.monotonic()
            with pytest.raises(ConnectionError, match=f'max_frame_length={limit}') as info:
                dev.query(b'DUMP?\n')
            took = time.monotonic() - start
            grown = rss_bytes() - before
            assert not isinstance(info.value, TimeoutError)
            assert took < 1.0, f'the query waited {took:.2f} s for a reply that could never complete'
            stats = dev.stats
            # What was taken in: the frame's limit plus at most one read of the reactor (64 KiB).
            assert stats['bytes_in'] <= limit + 64 * KIB, stats
            assert stats['buffered'] == 0
            assert grown < 16 * 1024 * KIB, f'the process grew by {grown / 1e6:.0f} MB'
        finally:
            stop.set()
            dev.close()
            serving.join(5)
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_reactor_code_queries_have_the_same_maximum_frame_length(listener):
    from socs_tcp import DeviceClientFactory
    stop = threading.Event()
    serving = threading.Thread(target=endless_line_device, args=(listener, stop))
    serving.start()
    factory = DeviceClientFactory('127.0.0.1', listener.getsockname()[1], connect_timeout=1,
                                  max_frame_length=128 * KIB)
    try:
        start = time.monotonic()
        with pytest.raises(ConnectionError, match='max_frame_length=131072'):
            yield factory.query(b'DUMP?\n', terminator=b'\n', timeout=5)
        assert time.monotonic() - start < 1.0
        assert factory.stats.bytes_in <= 128 * KIB + 64 * KIB
    finally:
        stop.set()
        yield factory.close()
        yield in_worker(serving.join, 5)


def test_max_frame_length_is_checked_and_bounds_read_exactly():
    with pytest.raises(ValueError, match='max_frame_length'):
        TCPInterface('127.0.0.1', 1, 1, max_frame_length=0)
    with pytest.raises(TypeError, match='max_frame_length'):
        TCPInterface('127.0.0.1', 1, 1, max_frame_length='big')


@pytest_twisted.inlineCallbacks
def test_a_whole_reply_longer_than_max_frame_length_fails_even_when_it_arrives_in_one_read(listener):
    """The limit is the frame's length, not how much was buffered before its end (as LineReceiver)."""
    def device():
        peer, _ = listener.accept()
        with peer:
            peer.recv(64)
            peer.sendall(b'SOCS-TCP,SIM-PSU-3005,SN00042,1.2\n')   # 34 bytes and the terminator, one write
            peer.recv(64)   # until the client drops the connection

    serving = threading.Thread(target=device)
    serving.start()

    def body():
        dev = TCPInterface('127.0.0.1', listener.getsockname()[1], 5, read_termination=b'\n',
                           max_frame_length=8)
        try:
            with pytest.raises(ConnectionError, match='max_frame_length=8'):
                dev.query(b'*IDN?\n')
        finally:
            dev.close()
            serving.join(5)
    yield in_worker(body)
