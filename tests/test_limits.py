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
            assert dev._bridge._writer.fileno() > 1024  # where select.select() gives up
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
