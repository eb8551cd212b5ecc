"""A waiting caller reads its own reply; the reactor owns the connection between calls.

Real TCP on 127.0.0.1 and the real reactor (pytest-twisted, main thread);
the device is a plain socket in a thread here, so that each test decides
exactly what arrives when. The bridge-level tests (``test_bridge.py``)
force the interleavings of the hand-over itself.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from contextlib import contextmanager

import psutil
import pytest
import pytest_twisted

from socs_tcp import DeviceClientFactory, DeviceDisconnected, DeviceTimeout, TCPInterface
from tests.conftest import RecordingTap, in_worker


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    sock.listen(2)
    sock.settimeout(5)
    yield sock
    sock.close()


def accept_in_thread(listener):
    """Accept one connection in a thread; return (event set once accepted, holder list)."""
    accepted, holder = threading.Event(), []

    def run():
        peer, _ = listener.accept()
        peer.settimeout(5)
        holder.append(peer)
        accepted.set()
    threading.Thread(target=run, daemon=True).start()
    return accepted, holder


@contextmanager
def line_link(listener, timeout: float):
    """A line interface (``\\n`` both ways) connected to ``listener``, and the device's end: (dev, peer)."""
    accepted, peers = accept_in_thread(listener)
    dev = TCPInterface('127.0.0.1', listener.getsockname()[1], timeout, read_termination=b'\n',
                       write_termination=b'\n')
    try:
        assert accepted.wait(5)
        yield dev, peers[0]
    finally:
        dev.close()
        peers[0].close()


def answer(peer, reply: bytes) -> bytes:
    """Read one line from the client, send ``reply``; return the line."""
    line = b''
    while not line.endswith(b'\n'):
        line += peer.recv(100)
    peer.sendall(reply)
    return line


def answer_on(peer, reply: bytes) -> threading.Thread:
    """``answer`` in a thread of its own (the device answering while the test's call waits)."""
    thread = threading.Thread(target=answer, args=(peer, reply), daemon=True)
    thread.start()
    return thread


def wait_until(condition, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.005)
    return time.monotonic() - start


@pytest_twisted.inlineCallbacks
def test_one_descriptor_per_connected_interface(listener):
    def body():
        with line_link(listener, 2) as (dev, peer):
            answer_on(peer, b'ok\n')
            assert dev.query('q') == b'ok'
            port = listener.getsockname()[1]
            ours = [c for c in psutil.Process().net_connections(kind='tcp')
                    if c.raddr and c.raddr.port == port]
            assert len(ours) == 1, ours        # the connection's own socket, no duplicate
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_a_peer_close_between_calls_is_noticed_without_a_call(listener):
    def body():
        with line_link(listener, 2) as (dev, peer):
            for _ in range(5):   # calls in a row: the reactor stops watching the socket
                answer_on(peer, b'ok\n')
                assert dev.query('q') == b'ok'
            peer.close()      # the device hangs up while no call runs
            took = wait_until(lambda: not dev.connected, 2.0, 'the link to notice the close')
            assert took < 1.0, took   # the reactor took the input back within its idle delay
            assert dev.stats['disconnects'] == 1
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_a_peer_close_during_a_call_fails_it_at_once(listener):
    def body():
        with line_link(listener, 10) as (dev, peer):

            def hang_up():
                line = b''
                while not line.endswith(b'\n'):
                    line += peer.recv(100)
                peer.close()
            threading.Thread(target=hang_up, daemon=True).start()
            start = time.monotonic()
            with pytest.raises(DeviceDisconnected, match='closed'):
                dev.query('q')
            assert time.monotonic() - start < 1.0
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_unsolicited_input_between_calls_never_answers_a_query(listener):
    def body():
        with line_link(listener, 2) as (dev, peer):
            peer = peer
            answer_on(peer, b'one\n')
            assert dev.query('one') == b'one'
            peer.sendall(b'NOISE\n')            # while no call runs (nobody may be watching)
            time.sleep(0.02)
            answer_on(peer, b'two\n')
            assert dev.query('two') == b'two'
            assert dev.stats['stale_bytes_dropped'] >= len(b'NOISE\n')
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_select_on_comm_sees_input_that_came_after_a_call(listener):
    def body():
        with line_link(listener, 2) as (dev, peer):
            peer = peer
            assert select.select([dev.comm], [], [], 0)[0] == []
            for _ in range(3):
                answer_on(peer, b'ok\n')
                assert dev.query('q') == b'ok'
            peer.sendall(b'PROMPT>')
            assert select.select([dev.comm], [], [], 1.0)[0] == [dev.comm]
            assert dev.recv() == b'PROMPT>'
            assert select.select([dev.comm], [], [], 0)[0] == []
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_reactor_code_queries_on_a_link_that_callers_just_used(listener):
    """The Deferred API after blocking calls: the reactor takes the input back for it at once."""
    accepted, peers = accept_in_thread(listener)
    dev = TCPInterface('127.0.0.1', listener.getsockname()[1], 2, read_termination=b'\n',
                       write_termination=b'\n', backoff=None, reactor=None)

    def callers():
        assert accepted.wait(5)
        for _ in range(3):
            answer_on(peers[0], b'ok\n')
            assert dev.query('q') == b'ok'
    yield in_worker(callers)
    factory: DeviceClientFactory = dev._link._factory
    answer_on(peers[0], b'from the reactor\n')
    start = time.monotonic()
    reply = yield factory.query(b'r\n', terminator=b'\n', timeout=2)
    assert reply == b'from the reactor' and time.monotonic() - start < 0.3
    yield in_worker(dev.close)
    peers[0].close()


@pytest_twisted.inlineCallbacks
def test_input_the_reactor_buffered_is_read_before_what_waits_in_the_socket(listener):
    def body():
        accepted, peers = accept_in_thread(listener)
        dev = TCPInterface('127.0.0.1', listener.getsockname()[1], 2)
        try:
            assert accepted.wait(5)
            peers[0].sendall(b'first|')            # while no call runs: the reactor reads it
            wait_until(lambda: dev.stats['buffered'] == 6, 2.0, 'the reactor to buffer it')
            start = threading.Event()

            def later():
                start.wait(5)
                time.sleep(0.05)
                peers[0].sendall(b'second\n')      # while the caller owns the input
            threading.Thread(target=later, daemon=True).start()
            start.set()
            assert dev.read_until(b'\n') == b'first|second\n'
        finally:
            dev.close()
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_a_query_on_a_ready_connection_is_the_bridges_query(listener, monkeypatch):
    """The usual query writes and reads under the bridge's lock, without the general write path."""
    from socs_tcp._bridge import Bridge
    writes: list = []
    real_write = Bridge.write

    def counting_write(self, *args, **kwargs):
        writes.append(args[1])
        return real_write(self, *args, **kwargs)
    monkeypatch.setattr(Bridge, 'write', counting_write)

    def body():
        with line_link(listener, 2) as (dev, peer):
            for n in range(3):
                answer_on(peer, b'%d\n' % n)
                assert dev.query(f'q{n}') == str(n).encode()
            assert writes == []          # each the bridge's query (the interface connected when made)
            assert dev.stats['queries'] == 3
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_a_tap_is_told_a_usual_querys_request_then_its_reply(listener, monkeypatch):
    """With a tap installed the usual query stays the bridge's own, and the tap hears both ways, in order."""
    from socs_tcp import _tap
    from socs_tcp._bridge import Bridge
    general: list = []
    monkeypatch.setattr(Bridge, 'write', lambda self, *args, **kwargs: general.append(args))
    tap = RecordingTap()

    def body():
        with line_link(listener, 2) as (dev, peer):
            _tap.add_tap(tap)
            try:
                for n in range(2):
                    answer_on(peer, b'%d\n' % n)
                    assert dev.query(f'q{n}') == str(n).encode()
            finally:
                _tap.remove_tap(tap)
            assert general == []
            assert tap.told == [('sent', b'q0\n'), ('received', b'0\n'),
                                ('sent', b'q1\n'), ('received', b'1\n')]
    yield in_worker(body)


def test_a_query_in_the_reactor_thread_raises_even_on_a_ready_connection(listener):
    """Under pytest-twisted this test body runs in the reactor thread; the connection is made in a worker."""
    accepted, peers = accept_in_thread(listener)
    dev = TCPInterface('127.0.0.1', listener.getsockname()[1], 2, read_termination=b'\n',
                       write_termination=b'\n', reactor=None)
    from twisted.internet import reactor, threads

    from socs_tcp import ReactorThreadError

    def ready():
        assert accepted.wait(5)
        answer_on(peers[0], b'ok\n')
        assert dev.query('q') == b'ok'

    @pytest_twisted.inlineCallbacks
    def run():
        yield threads.deferToThreadPool(reactor, reactor.getThreadPool(), ready)
        with pytest.raises(ReactorThreadError, match='reactor thread'):
            dev.query('q')
        yield threads.deferToThreadPool(reactor, reactor.getThreadPool(), dev.close)
    return run()


@pytest_twisted.inlineCallbacks
def test_a_device_that_reset_the_connection_between_calls_gets_the_next_query_on_a_new_one(listener):
    """Its reset waits unseen in the socket (the reactor was not watching): the query still succeeds."""
    def body():
        with line_link(listener, 5) as (dev, peer):
            bridge = dev._link._bridge
            while not bridge._reactor_stopped:    # calls in a row: the reactor stops watching the socket
                answer_on(peer, b'ok\n')
                assert dev.query('q') == b'ok'
                assert bridge.stats.bytes_in < 1000, 'the reactor never stopped watching'
            again, more = accept_in_thread(listener)
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            peer.close()      # a reset, not a close: a send on our side now fails
            time.sleep(0.05)      # the reset reaches our socket; the link does not look yet

            def second():
                assert again.wait(5)
                answer(more[0], b'on a new one\n')
            threading.Thread(target=second, daemon=True).start()
            assert dev.query('q') == b'on a new one'
            assert dev.stats['connects'] == 2
    yield in_worker(body)


@pytest.fixture(params=['usual', 'usual with a tap', 'general way'])
def query_way(request, monkeypatch):
    """Which way a query goes: the bridge's query (with a tap installed, or not), or the general way.

    The general way is forced by a bridge whose query declines, as it does when
    it cannot start (a replaced connection, a refused send).
    """
    from socs_tcp import _tap
    from socs_tcp._bridge import Bridge
    if request.param == 'general way':
        monkeypatch.setattr(Bridge, 'query', lambda *args: None)
    if request.param == 'usual with a tap':
        tap = RecordingTap()
        _tap.add_tap(tap)
        yield request.param
        _tap.remove_tap(tap)
    else:
        yield request.param


@pytest_twisted.inlineCallbacks
def test_unsolicited_input_the_busy_reactor_has_not_read_yet_is_no_reply(listener, query_way):
    """The reactor watches the socket but is busy elsewhere: what came before the request is stale."""
    from twisted.internet import reactor

    def body():
        accepted, peers = accept_in_thread(listener)
        dev = TCPInterface('127.0.0.1', listener.getsockname()[1], 2, read_termination=b'\n',
                           write_termination=b'\n')
        busy, free = threading.Event(), threading.Event()
        try:
            assert accepted.wait(5)
            bridge = dev._link._bridge
            assert not bridge._reactor_stopped and not bridge._owned   # the reactor watches the socket

            def occupied():  # another agent's work keeps the reactor thread for a while
                busy.set()
                free.wait(5)
            reactor.callFromThread(occupied)
            assert busy.wait(5)
            peers[0].sendall(b'unsolicited\n')                         # before the request
            wait_until(lambda: select.select([bridge._sock], [], [], 0)[0], 2.0, 'the input to arrive')
            answer_on(peers[0], b'reply\n')
            assert dev.query('q') == b'reply'
            assert bridge.stats.stale_bytes_dropped == len(b'unsolicited\n')
        finally:
            free.set()
            dev.close()
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_unsolicited_input_the_reactor_was_reading_when_a_query_came_is_no_reply(listener, monkeypatch,
                                                                                  query_way):
    """The reactor's read of stale input is under way as a query starts: it lands first, and is dropped."""
    from socs_tcp._bridge import Bridge
    real_feed = Bridge.feed
    reading = threading.Event()

    def slow_feed(self, generation, data):   # the reactor thread, between its recv and the buffer
        if data == b'unsolicited\n':
            reading.set()
            wait_until(lambda: self._read_awaited, 2.0, 'the query to wait for this read')
        return real_feed(self, generation, data)
    monkeypatch.setattr(Bridge, 'feed', slow_feed)

    def body():
        with line_link(listener, 2) as (dev, peer):
            peer.sendall(b'unsolicited\n')
            assert reading.wait(2)
            assert dev._link._bridge._reactor_reading                  # its read is under way
            answer_on(peer, b'reply\n')
            assert dev.query('q') == b'reply'
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_a_query_whose_request_fails_part_way_is_written_once_more_on_a_new_connection(listener):
    """The socket took part of a long request, then the device reset the connection: as any failed write."""
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # the device's end fills up soon
    request = b'x' * (16 << 20)

    def body():
        with line_link(listener, 5) as (dev, peer):
            again, more = accept_in_thread(listener)

            def device():  # reads nothing on the first connection: resets it once the write is stuck
                wait_until(lambda: dev.stats['bytes_out'] > 0, 5.0, 'part of the request to leave')
                peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
                peer.close()
                assert again.wait(5)
                got = bytearray()
                while not got.endswith(b'\n'):
                    got += more[0].recv(1 << 20)
                assert got == request + b'\n'                  # the whole request, once
                more[0].sendall(b'on a new one\n')
            threading.Thread(target=device, daemon=True).start()
            assert dev.query(request) == b'on a new one'
            assert dev.stats['connects'] == 2
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_a_query_after_a_read_timed_out_does_not_take_the_usual_way_on_that_connection(listener):
    """Its late reply may still come: the next query goes on a fresh connection, never gets that reply."""
    accepted, peers = accept_in_thread(listener)

    def reply_late(peer):
        line = b''
        while not line.endswith(b'\n'):
            line += peer.recv(100)
        select.select([peer], [], [], 0.3)             # the next request, if it comes here
        try:
            peer.sendall(b'slow reply\n')
        except OSError:
            pass                                       # the connection was dropped: as it should be

    def body():
        dev = TCPInterface('127.0.0.1', listener.getsockname()[1], 0.15, read_termination=b'\n',
                           write_termination=b'\n')
        try:
            assert accepted.wait(5)
            for n in range(2):                         # the usual way is ready on this connection
                answer_on(peers[0], b'%d\n' % n)
                assert dev.query(f'q{n}') == str(n).encode()
            dev.send(b'slow\n')
            with pytest.raises(DeviceTimeout):
                dev.recv()
            # The late reply comes on the old connection after the next request left (if it
            # left there), or a moment later.
            late = threading.Thread(target=reply_late, args=(peers[0],), daemon=True)
            late.start()
            second, more = accept_in_thread(listener)
            threading.Thread(target=lambda: second.wait(5) and answer(more[0], b'second reply\n'),
                             daemon=True).start()
            assert dev.query('second', timeout=2) == b'second reply'
            late.join(2)
        finally:
            dev.close()
            for peer in peers:
                peer.close()
    yield in_worker(body)
