"""The bridge between worker threads and the reactor, without a reactor.

The reactor side is played by the test thread. The dangerous interleavings
(a timeout racing a wake-up, a close racing a wait, a drop racing a write)
are forced, not hoped for: ``ScriptedWaits`` replaces the bridge's condition
so that a caller's wait runs the reactor's next move, exactly where a real
thread switch could put it, and then reports a timeout.
"""

from __future__ import annotations

import _thread
import os
import select
import signal
import socket
import threading
import time
from contextlib import contextmanager

import pytest

from socs_tcp._bridge import Bridge
from socs_tcp._errors import DeviceDisconnected, DeviceTimeout, NotConnected
from socs_tcp._framing import Chunk, Exactly, Terminated
from tests.conftest import RecordingTap

LINE = Terminated(b'\n', strip=True)


class Posts:
    """Stands in for the reactor: keeps what callers posted, runs it on request."""

    def __init__(self) -> None:
        self.calls: list = []
        self.timers: list = []

    def callFromThread(self, fn, *args) -> None:
        self.calls.append((fn, args))

    def callLater(self, delay, fn, *args):
        self.timers.append((delay, fn, args))

    def run_timers(self) -> None:
        timers, self.timers = self.timers, []
        for _, fn, args in timers:
            fn(*args)

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for fn, args in calls:
            fn(*args)


class ScriptedWaits:
    """A condition whose every wait lets one scripted "reactor" move happen, then times out.

    Like a real ``Condition.wait``, it releases the bridge's lock for the
    move and takes it back before returning.
    """

    def __init__(self, bridge: Bridge, *moves) -> None:
        self._bridge, self._moves, self.waits = bridge, list(moves), 0
        self._real = bridge._changed

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        self._bridge._lock.release()
        try:
            if self._moves:
                self._moves.pop(0)()
        finally:
            self._bridge._lock.acquire()
        return False

    def notify_all(self) -> None:
        self._real.notify_all()


@pytest.fixture
def posts():
    return Posts()


@pytest.fixture
def pair():
    """A connected socket pair: (the connection's socket, the device's end)."""
    ours, device = socket.socketpair()
    ours.setblocking(False)
    yield ours, device
    ours.close()
    device.close()


class FakeLink:
    """The reactor side a bridge talks to: records what it was asked to do."""

    address = 'device:1'

    def __init__(self) -> None:
        self.resumed: list = []
        self.reconnected: list = []

    def resume_reading(self, generation) -> None:
        self.resumed.append(generation)

    def reconnect(self, generation, why) -> None:
        self.reconnected.append((generation, why))


def connected_bridge(posts, sock, input_limit=1 << 20) -> Bridge:
    link = FakeLink()
    bridge = Bridge(posts, link, input_limit)
    bridge.connection_up(1, sock)
    return bridge


def soon(seconds: float = 2.0) -> float:
    return time.monotonic() + seconds


# -- input, frames and errors ----------------------------------------------------

def test_take_waits_for_a_complete_frame_fed_from_another_thread(posts, pair):
    bridge = connected_bridge(posts, pair[0])
    bridge.feed(1, b'par')
    threading.Timer(0.05, bridge.feed, (1, b'tial\n')).start()
    assert bridge.take(LINE, soon(), None) == b'partial'


def test_take_times_out_and_keeps_partial_input(posts, pair):
    bridge = connected_bridge(posts, pair[0])
    bridge.feed(1, b'par')
    start = time.monotonic()
    with pytest.raises(DeviceTimeout, match='3 bytes buffered'):
        bridge.take(LINE, start + 0.1, None)
    assert 0.09 <= time.monotonic() - start < 1.0
    assert len(bridge) == 3


def test_input_from_a_discarded_connection_is_refused(posts, pair):
    bridge = connected_bridge(posts, pair[0])
    bridge.discard(1, DeviceDisconnected('dropped after a timeout'))
    assert bridge.feed(1, b'late reply\n') is False
    assert len(bridge) == 0 and bridge.stats.stale_bytes_dropped == len(b'late reply\n')
    with pytest.raises(DeviceDisconnected, match='dropped after a timeout'):
        bridge.take(Chunk(10), soon(), None)


def test_buffered_input_is_read_before_the_disconnect_error(posts, pair):
    bridge = connected_bridge(posts, pair[0])
    bridge.feed(1, b'last words')
    bridge.connection_down(1, DeviceDisconnected('peer closed'))
    assert bridge.take(Chunk(100), soon(), None) == b'last words'
    with pytest.raises(DeviceDisconnected, match='peer closed'):
        bridge.take(Chunk(100), soon(), None)


def test_a_new_connection_drops_the_old_connections_leftovers(posts, pair):
    bridge = connected_bridge(posts, pair[0])
    bridge.feed(1, b'pre-disconnect reply')
    bridge.connection_down(1, DeviceDisconnected('lost'))
    bridge.connection_up(2, pair[0])
    assert bridge.stats.stale_bytes_dropped == len(b'pre-disconnect reply')
    assert len(bridge) == 0 and bridge.generation == 2
    assert bridge.feed(1, b'news from the old connection') is False
    assert len(bridge) == 0


def test_a_bridge_that_never_connected_says_so(posts):
    bridge = Bridge(posts, FakeLink(), 1024)
    with pytest.raises(NotConnected):
        bridge.take(Chunk(1), soon(), None)


def test_a_stored_error_raised_again_and_again_does_not_grow(posts):
    bridge = Bridge(posts, FakeLink(), 1024)
    errors = []
    for _ in range(3):
        with pytest.raises(NotConnected) as info:
            bridge.take(Chunk(1), soon(), None)
        errors.append(info.value)
    assert len({id(e) for e in errors}) == 3  # fresh each time: no traceback chain kept


def test_fileno_is_readable_while_input_waits_and_while_the_connection_is_gone(posts, pair):
    bridge = connected_bridge(posts, pair[0])
    fd = bridge.fileno()
    assert select.select([fd], [], [], 0)[0] == []
    bridge.feed(1, b'abc')
    assert select.select([fd], [], [], 0)[0] == [fd]
    bridge.take(Chunk(2), soon(), None)
    assert select.select([fd], [], [], 0)[0] == [fd]  # one byte still waits
    bridge.take(Chunk(2), soon(), None)
    assert select.select([fd], [], [], 0)[0] == []
    bridge.feed(1, b'x')
    bridge.clear()
    assert select.select([fd], [], [], 0)[0] == []
    bridge.connection_down(1, DeviceDisconnected('peer closed'))
    assert select.select([fd], [], [], 0)[0] == [fd]  # as a dead socket: the next recv raises
    bridge.connection_up(2, pair[0])
    assert select.select([fd], [], [], 0)[0] == []
    bridge.close(NotConnected('closed'))
    with pytest.raises(NotConnected):
        bridge.fileno()


# -- input limit -------------------------------------------------------------------

def test_above_the_input_limit_the_reactor_is_told_to_pause_and_resume_once_drained(posts, pair):
    bridge = connected_bridge(posts, pair[0], input_limit=10)
    assert bridge.feed(1, b'x' * 10) is False
    assert bridge.feed(1, b'y' * 5) is True        # over the limit: pause reading
    assert bridge.feed(1, b'z' * 5) is False       # said once; input is never dropped
    assert bridge.snapshot()['reading_paused'] and len(bridge) == 20
    assert bridge.take(Exactly(8), soon(), None) == b'x' * 8
    assert posts.calls == []                       # 12 left: still above half the limit
    assert bridge.take(Exactly(8), soon(), None) == b'xxyyyyyz'
    posts.run()
    assert bridge._link.resumed == [1] and not bridge.snapshot()['reading_paused']


def test_a_frame_larger_than_the_limit_can_still_complete(posts, pair):
    bridge = connected_bridge(posts, pair[0], input_limit=10)
    got = []
    reader = threading.Thread(target=lambda: got.append(bridge.take(Exactly(30), soon(), None)))
    reader.start()
    deadline = soon()
    while bridge._waiting_frame is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert bridge.feed(1, b'a' * 25) is False      # the waiting frame needs 30: no pause yet
    bridge.feed(1, b'b' * 5)
    reader.join(2)
    assert got == [b'a' * 25 + b'b' * 5]


# -- forced interleavings ------------------------------------------------------------

def test_a_timeout_racing_the_wake_up_loses_nothing_and_breaks_nothing(posts, pair):
    """Reader 1 times out just as its frame completes; reader 2 then waits.

    With a lock used as a semaphore this left a release behind, and the
    next completed frame raised 'release unlocked lock' in the reactor,
    dropping a healthy connection.
    """
    bridge = connected_bridge(posts, pair[0])
    bridge._changed = ScriptedWaits(bridge, lambda: bridge.feed(1, b'a\n'))
    assert bridge.take(LINE, time.monotonic() + 0.01, None) == b'a'  # the frame won the race
    bridge._changed = ScriptedWaits(bridge, lambda: bridge.feed(1, b'b'), lambda: bridge.feed(1, b'\n'))
    assert bridge.take(LINE, soon(), None) == b'b'
    assert bridge.connected


def test_a_timeout_that_wins_the_race_leaves_the_input_for_the_next_read(posts, pair):
    bridge = connected_bridge(posts, pair[0])
    bridge._changed = ScriptedWaits(bridge, lambda: bridge.feed(1, b'par'))
    with pytest.raises(DeviceTimeout):
        bridge.take(LINE, time.monotonic() + 0.01, None)
    bridge._changed = bridge._changed._real
    bridge.feed(1, b'tial\n')
    assert bridge.take(LINE, soon(), None) == b'partial'


def test_a_close_racing_a_wait_ends_it_at_once(posts, pair):
    bridge = connected_bridge(posts, pair[0])
    waits = ScriptedWaits(bridge, lambda: bridge.close(NotConnected('link closed')))
    bridge._changed = waits
    with pytest.raises(NotConnected, match='link closed'):
        bridge.take(LINE, soon(60), None)
    assert waits.waits == 1                       # not a wait until the 60 s deadline


def test_the_reactor_stopping_during_a_wait_for_a_connection_ends_it(posts):
    bridge = Bridge(posts, FakeLink(), 1024)
    failures = bridge.failures()
    bridge._changed = ScriptedWaits(bridge, lambda: bridge.close(NotConnected('the reactor is stopping')))
    with pytest.raises(NotConnected, match='reactor is stopping'):
        bridge.wait_connected(failures, soon(60), None)


def test_a_failed_attempt_ends_a_wait_for_a_connection_only_if_it_came_after_the_request(posts):
    bridge = Bridge(posts, FakeLink(), 1024)
    bridge.attempt_failed(NotConnected('refused, before the request'))
    failures = bridge.failures()
    bridge._changed = ScriptedWaits(bridge, lambda: bridge.attempt_failed(NotConnected('refused')))
    with pytest.raises(NotConnected, match='^refused$'):
        bridge.wait_connected(failures, soon(60), None)


_SPARE_FD = os.open(os.devnull, os.O_RDONLY)  # for poll to register; never read


class SlowSocket:
    """A socket whose ``send`` takes its time: the reactor acts while a write is under way."""

    def __init__(self, events: list) -> None:
        self.events = events
        self.sending = threading.Event()
        self.finish = threading.Event()

    def dup(self):
        return self

    def fileno(self) -> int:
        return _SPARE_FD

    def send(self, data) -> int:
        self.events.append('send')
        if self.sending.is_set():
            raise BlockingIOError  # the device stopped reading: the writer waits and comes back
        self.sending.set()
        self.finish.wait(5)     # the reactor acts while this send is under way
        self.events.append('first send returned')
        return 1

    def close(self) -> None:
        self.events.append('closed')


class FakeTransport:
    """What a bridge needs of an ``OwnedClient``: a gate slot, and reading resumed on request."""

    gate = None
    connected, disconnecting = True, False

    def __init__(self) -> None:
        self.resumed = 0

    def resumeProducing(self) -> None:
        self.resumed += 1

    def startReading(self) -> None:
        self.resumed += 1


def test_a_close_racing_a_write_never_closes_the_socket_under_it_nor_writes_after(posts):
    events: list = []
    sock = SlowSocket(events)
    transport = FakeTransport()
    bridge = Bridge(posts, FakeLink(), 1024)
    bridge.connection_up(1, sock, transport)
    outcome = []

    def write():
        try:
            bridge.write(1, b'four', soon())
        except ConnectionError as exc:
            outcome.append(exc)

    def close_as_the_transport_does():  # OwnedClient._closeSocket, then the link's news
        with bridge.socket_closing(transport):
            sock.close()
        bridge.connection_down(1, DeviceDisconnected('peer reset'))
    writer = threading.Thread(target=write)
    writer.start()
    assert sock.sending.wait(2)
    reactor = threading.Thread(target=close_as_the_transport_does)
    reactor.start()
    reactor.join(0.2)
    assert reactor.is_alive()                     # held off until the send is done
    sock.finish.set()
    writer.join(2)
    reactor.join(2)
    assert events[:2] == ['send', 'first send returned']  # the close waited for the send
    assert events[-1] == 'closed'                       # and no send came after it
    assert len(outcome) == 1 and isinstance(outcome[0], DeviceDisconnected)


def test_a_write_to_a_replaced_connection_fails_instead_of_reaching_the_new_one(posts, pair):
    bridge = connected_bridge(posts, pair[0])
    bridge.connection_down(1, DeviceDisconnected('lost'))
    bridge.connection_up(2, pair[0])
    with pytest.raises(DeviceDisconnected):
        bridge.write(1, b'for the old connection', soon())
    pair[1].setblocking(False)
    with pytest.raises(BlockingIOError):
        pair[1].recv(100)                         # nothing reached the device


def test_reactor_code_readers_get_their_frame_or_the_error(posts, pair):
    bridge = connected_bridge(posts, pair[0])
    got = []
    bridge.when_frame(LINE).addCallbacks(got.append, got.append)
    bridge.feed(1, b'one\ntwo')
    assert got == [b'one']
    bridge.when_frame(LINE).addCallbacks(got.append, got.append)
    bridge.connection_down(1, DeviceDisconnected('lost'))
    assert got[1].check(DeviceDisconnected)
    bridge.connection_up(2, pair[0])
    bridge.when_frame(LINE)
    with pytest.raises(RuntimeError, match='already waiting'):
        bridge.when_frame(LINE)


def test_a_caller_that_starts_waiting_resumes_reading_the_limit_paused(posts, pair):
    bridge = connected_bridge(posts, pair[0], input_limit=10)
    assert bridge.feed(1, b'x' * 11) is True       # nobody reading: pause
    bridge._changed = ScriptedWaits(bridge, posts.run, lambda: bridge.feed(1, b'\n'))
    assert bridge.take(LINE, soon(), None) == b'x' * 11
    assert bridge._link.resumed == [1]                   # the reply went on arriving


# -- frames' maximum length ------------------------------------------------------------

def test_a_reply_that_never_ends_drops_the_connection_naming_the_limit(posts, pair):
    """A device streams a line with no terminator at a waiting reader: memory stays bounded."""
    bridge = connected_bridge(posts, pair[0])
    frame = Terminated(b'\n', max_length=100)
    errors = []

    def reader():
        try:
            bridge.take(frame, soon(), None)
        except ConnectionError as exc:
            errors.append(exc)
    thread = threading.Thread(target=reader)
    thread.start()
    deadline = soon()
    while bridge._waiting_frame is None and time.monotonic() < deadline:
        time.sleep(0.001)
    fed = 0
    while bridge.connected and fed < 10_000:
        bridge.feed(1, b'x' * 30)                   # the endless line, as the reactor reads it
        fed += 30
    thread.join(2)
    assert fed == 120                               # cut off at the first read past 100 bytes
    assert len(errors) == 1 and isinstance(errors[0], DeviceDisconnected)
    assert 'max_frame_length=100' in str(errors[0])
    assert len(bridge) == 0 and not bridge.connected
    posts.run()
    assert [g for g, _ in bridge._link.reconnected] == [1]   # the reactor is told to abort it
    assert bridge.feed(1, b'x' * 30) is False and len(bridge) == 0  # the rest is refused


def test_input_already_past_the_limit_fails_a_read_at_once(posts, pair):
    bridge = connected_bridge(posts, pair[0])
    bridge.feed(1, b'y' * 200)                      # arrived while nobody read
    start = time.monotonic()
    with pytest.raises(DeviceDisconnected, match='max_frame_length=100'):
        bridge.take(Terminated(b'\n', max_length=100), soon(60), None)
    assert time.monotonic() - start < 1.0
    assert not bridge.connected and bridge.stats.stale_bytes_dropped == 200


def test_reactor_code_readers_fail_too_when_a_frame_goes_over_its_limit(posts, pair):
    bridge = connected_bridge(posts, pair[0])
    results = []
    d = bridge.when_frame(Terminated(b'\n', max_length=10))
    d.addBoth(results.append)
    bridge.feed(1, b'z' * 11)
    assert len(results) == 1 and 'max_frame_length=10' in str(results[0].value)
    assert not bridge.connected


def test_counters_written_by_both_threads_are_taken_under_the_bridges_lock(posts, pair):
    bridge = connected_bridge(posts, pair[0])
    assert bridge.stats.lock is bridge._lock
    bridge.feed(1, b'abc')
    bridge.write(1, b'12345', soon())
    assert pair[1].recv(10) == b'12345'
    stats = bridge.snapshot()
    assert stats['bytes_in'] == 3 and stats['bytes_out'] == 5 and 'lock' not in stats


# -- a waiting caller reads its own reply ------------------------------------------------

@pytest.fixture
def owned(posts, pair):
    """A bridge whose connection's input callers may own: (bridge, transport, device end)."""
    transport = FakeTransport()
    bridge = Bridge(posts, FakeLink(), 1 << 20)
    bridge.connection_up(1, pair[0], transport)
    return bridge, transport, pair[1]


def wait_for(condition, what: str) -> None:
    deadline = soon()
    while not condition():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.001)


def take_in_thread(bridge, frame, seconds=5.0):
    """Start ``bridge.take`` in another thread; return (thread, outcome list)."""
    outcome: list = []

    def run():
        try:
            outcome.append(bridge.take(frame, time.monotonic() + seconds, None))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)
    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_a_caller_reads_its_reply_from_the_socket_itself(owned):
    bridge, transport, device = owned
    device.sendall(b'reply\n')
    assert bridge.take(LINE, soon(), None) == b'reply'
    assert bridge.stats.bytes_in == 6 and transport.gate is bridge


def test_the_reactors_read_under_way_lands_before_the_callers_own_reads(owned):
    """The reactor took 'first' off the socket just as a caller wanted the input: 'first' comes first."""
    bridge, transport, device = owned
    assert bridge.reactor_may_read(transport)          # the reactor's recv is under way ...
    thread, got = take_in_thread(bridge, LINE)
    time.sleep(0.05)
    assert not bridge._owned and not got               # ... so the caller waits for it
    device.sendall(b'second\n')                        # behind it in the socket
    bridge.feed(1, b'first\n')                          # what that recv returned
    bridge.reactor_read_done()
    thread.join(2)
    assert got == [b'first']
    assert bridge.take(LINE, soon(), None) == b'second'


def test_a_reply_split_across_the_hand_over_arrives_whole(owned):
    bridge, transport, device = owned
    assert bridge.reactor_may_read(transport)
    bridge.feed(1, b'hal')                              # read by the reactor between calls
    bridge.reactor_read_done()
    thread, got = take_in_thread(bridge, LINE)
    wait_for(lambda: bridge._owned, 'the caller to own the input')
    device.sendall(b'f\n')                              # the rest, read by the caller
    thread.join(2)
    assert got == [b'half']


def test_the_reactor_stops_reading_while_a_caller_owns_the_input_and_takes_it_back_when_idle(posts, owned):
    bridge, transport, device = owned
    thread, got = take_in_thread(bridge, LINE)
    wait_for(lambda: bridge._owned, 'the caller to own the input')
    assert not bridge.reactor_may_read(transport)       # doRead finds the input owned: reading stops
    assert len(posts.timers) == 1                       # and the take-back is scheduled
    device.sendall(b'mine\n')
    thread.join(2)
    assert got == [b'mine'] and transport.resumed == 0
    bridge._released_at -= 10                          # the link has been idle long enough
    posts.run_timers()
    assert transport.resumed == 1 and not bridge._reactor_stopped


def test_a_take_back_waits_while_the_link_is_busy(posts, owned):
    bridge, transport, device = owned
    thread, got = take_in_thread(bridge, LINE)
    wait_for(lambda: bridge._owned, 'the caller to own the input')
    assert not bridge.reactor_may_read(transport)
    posts.run_timers()                                  # due while the caller still owns it
    assert transport.resumed == 0 and len(posts.timers) == 1   # re-armed, not taken
    device.sendall(b'x\n')
    thread.join(2)
    posts.run_timers()                                  # just released: not idle yet
    assert transport.resumed == 0 and len(posts.timers) == 1
    assert posts.timers[0][0] >= 0.04                   # and the checks come less often while busy


def test_stale_input_that_nobody_watched_is_dropped_before_a_request(posts, owned):
    bridge, transport, device = owned
    thread, got = take_in_thread(bridge, LINE)
    wait_for(lambda: bridge._owned, 'the caller to own the input')
    assert not bridge.reactor_may_read(transport)       # the reactor no longer watches the socket
    device.sendall(b'reply\n')
    thread.join(2)
    device.sendall(b'unsolicited\n')                    # between calls, in the kernel only
    wait_for(lambda: select.select([pair_fd(bridge)], [], [], 0)[0], 'the input to arrive')
    assert bridge.clear() == len(b'unsolicited\n')
    with pytest.raises(DeviceTimeout):
        bridge.take(LINE, time.monotonic() + 0.05, None)


def pair_fd(bridge) -> int:
    return bridge._sock.fileno()


def test_a_peer_close_during_a_call_fails_it_at_once_and_the_reactor_is_told(posts, owned):
    bridge, transport, device = owned
    thread, got = take_in_thread(bridge, LINE, seconds=30)
    wait_for(lambda: bridge._owned, 'the caller to own the input')
    start = time.monotonic()
    device.sendall(b'partial')
    device.close()
    thread.join(5)
    assert time.monotonic() - start < 1.0
    assert isinstance(got[0], DeviceDisconnected) and 'closed' in str(got[0])
    posts.run()
    assert transport.resumed == 1                      # the reactor reads again and sees the end itself
    assert bridge.take(Chunk(100), soon(), None) == b'partial'   # what came before the close


def test_the_link_closing_while_a_caller_polls_wakes_it_at_once(owned):
    """The reactor stopping (or close()) during a call: the caller's poll must not sleep on."""
    bridge, transport, device = owned
    thread, got = take_in_thread(bridge, LINE, seconds=30)
    wait_for(lambda: bridge._owned, 'the caller to own the input')
    start = time.monotonic()
    bridge.close(NotConnected('the reactor is stopping'))
    thread.join(5)
    assert time.monotonic() - start < 1.0
    assert isinstance(got[0], NotConnected) and 'stopping' in str(got[0])


def test_the_transport_closing_its_socket_wakes_a_polling_caller_and_it_gets_the_links_news(owned):
    bridge, transport, device = owned
    thread, got = take_in_thread(bridge, LINE, seconds=30)
    wait_for(lambda: bridge._owned, 'the caller to own the input')
    with bridge.socket_closing(transport):             # OwnedClient._closeSocket, abort
        pass
    time.sleep(0.05)
    assert not got                                     # it waits for the reason ...
    bridge.connection_down(1, DeviceDisconnected('connection lost: reset by peer'))
    thread.join(5)
    assert isinstance(got[0], DeviceDisconnected) and 'reset by peer' in str(got[0])  # ... and gets it


def test_a_frame_over_its_limit_ends_the_connection_while_the_caller_reads_too(posts, owned):
    bridge, transport, device = owned
    thread, got = take_in_thread(bridge, Terminated(b'\n', max_length=1000))
    wait_for(lambda: bridge._owned, 'the caller to own the input')
    device.sendall(b'z' * 5000)
    thread.join(5)
    assert isinstance(got[0], DeviceDisconnected) and 'max_frame_length=1000' in str(got[0])
    posts.run()
    assert [g for g, _ in bridge._link.reconnected] == [1]


def test_select_on_comm_or_a_reactor_reader_takes_the_input_back_at_once(posts, owned):
    bridge, transport, device = owned
    thread, got = take_in_thread(bridge, LINE)
    wait_for(lambda: bridge._owned, 'the caller to own the input')
    assert not bridge.reactor_may_read(transport)
    bridge.fileno()                                    # a driver selects on comm meanwhile
    device.sendall(b'x\n')
    thread.join(2)
    posts.run()                                        # released: taken back without waiting idle
    assert transport.resumed == 1


# -- a query's request and reply, read by the caller --------------------------------------

def device_answers(device, reply: bytes):
    """Start a device thread that reads one line and sends ``reply``; return (thread, lines read)."""
    lines: list = []

    def run():
        line = b''
        while not line.endswith(b'\n'):
            more = device.recv(1 << 16)
            if not more:
                return
            line += more
        lines.append(line)
        device.sendall(reply)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, lines


def nothing_arrives(device, seconds: float = 0.05) -> bool:
    return select.select([device], [], [], seconds)[0] == []


def test_a_query_sends_the_request_and_reads_its_reply(owned):
    bridge, transport, device = owned
    thread, lines = device_answers(device, b'reply\n')
    assert bridge.query(b'ask\n', LINE, soon(), 1) == b'reply'
    thread.join(2)
    assert lines == [b'ask\n']
    assert bridge.stats.bytes_out == 4 and bridge.stats.bytes_in == 6 and not bridge._owned


def test_a_query_drops_what_waits_unwatched_in_the_socket_before_its_request(posts, owned):
    """Between calls the reactor may not watch the socket: what came meanwhile is no reply."""
    bridge, transport, device = owned
    thread, got = take_in_thread(bridge, LINE)
    wait_for(lambda: bridge._owned, 'the caller to own the input')
    assert not bridge.reactor_may_read(transport)       # the reactor stops watching the socket
    device.sendall(b'first\n')
    thread.join(2)
    assert got == [b'first']
    device.sendall(b'unsolicited\n')                    # between calls, in the kernel only
    wait_for(lambda: select.select([pair_fd(bridge)], [], [], 0)[0], 'the input to arrive')
    thread, lines = device_answers(device, b'reply\n')
    assert bridge.query(b'ask\n', LINE, soon(), 1) == b'reply'
    assert bridge.stats.stale_bytes_dropped == len(b'unsolicited\n')


def test_a_query_drops_buffered_input_before_its_request(owned):
    bridge, transport, device = owned
    assert bridge.reactor_may_read(transport)
    bridge.feed(1, b'late reply\n')                     # the reactor read it between calls
    bridge.reactor_read_done()
    thread, lines = device_answers(device, b'reply\n')
    assert bridge.query(b'ask\n', LINE, soon(), 1) == b'reply'
    assert bridge.stats.stale_bytes_dropped == len(b'late reply\n')


@pytest.mark.parametrize('why', ['a replaced connection', 'a plain transport'])
def test_a_query_that_cannot_start_sends_nothing_and_says_so(posts, pair, why):
    """None, and not a byte sent: the caller then writes the general way (which reconnects)."""
    bridge = Bridge(posts, FakeLink(), 1 << 20)
    transport = FakeTransport()
    if why == 'a plain transport':
        bridge.connection_up(1, pair[0])                # no transport whose input callers may own
    else:
        bridge.connection_up(1, pair[0], transport)
    generation = 2 if why == 'a replaced connection' else 1
    assert bridge.query(b'ask\n', LINE, soon(), generation) is None
    assert nothing_arrives(pair[1]) and bridge.stats.bytes_out == 0 and not bridge._owned


def test_a_query_on_a_socket_that_refuses_the_request_sends_nothing(posts, owned):
    bridge, transport, device = owned
    device.close()                                      # the device is gone: send fails (EPIPE)
    assert bridge.query(b'ask\n', LINE, soon(), 1) is None
    assert bridge.stats.bytes_out == 0 and not bridge._owned


def test_a_query_whose_request_the_socket_takes_in_part_writes_the_rest(owned):
    bridge, transport, device = owned
    request = b'x' * (8 << 20) + b'\n'                  # far more than the socket buffers hold
    thread, lines = device_answers(device, b'got it\n')
    assert bridge.query(request, LINE, soon(5), 1) == b'got it'
    thread.join(5)
    assert lines == [request] and bridge.stats.bytes_out == len(request)


def test_a_query_that_times_out_gives_the_input_up(owned):
    bridge, transport, device = owned
    with pytest.raises(DeviceTimeout):
        bridge.query(b'ask\n', LINE, time.monotonic() + 0.05, 1)
    assert not bridge._owned and device.recv(100) == b'ask\n'


def test_a_query_whose_read_holds_more_than_its_reply_keeps_the_rest(owned):
    bridge, transport, device = owned
    thread, lines = device_answers(device, b'reply\nmore\n')   # one read brings both
    assert bridge.query(b'ask\n', LINE, soon(), 1) == b'reply'
    assert len(bridge) == len(b'more\n') and bridge.take(LINE, soon(), None) == b'more'


def test_a_query_lets_the_reactors_read_under_way_land_then_drops_it_before_its_request(owned):
    """What that read holds came before the request: it is no reply, and goes before the request leaves."""
    bridge, transport, device = owned
    assert bridge.reactor_may_read(transport)           # the reactor's recv is under way
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(bridge.query(b'ask\n', LINE, soon(), 1)))
    thread.start()
    wait_for(lambda: bridge._read_awaited, 'the query to wait for that read')
    assert nothing_arrives(device, 0.01)                # nothing sent meanwhile
    answering, lines = device_answers(device, b'reply\n')
    bridge.feed(1, b'stale\n')                          # what that recv returned
    bridge.reactor_read_done()
    thread.join(2)
    assert outcome == [b'reply'] and lines == [b'ask\n']
    assert bridge.stats.stale_bytes_dropped == len(b'stale\n')


def test_a_query_drops_what_waits_in_the_socket_while_the_reactor_watches_it(owned):
    """The reactor watches the socket but has not read yet (busy): that input came before the request."""
    bridge, transport, device = owned
    device.sendall(b'unsolicited\n')
    wait_for(lambda: select.select([pair_fd(bridge)], [], [], 0)[0], 'the input to arrive')
    assert not bridge._reactor_stopped
    answering, lines = device_answers(device, b'reply\n')
    assert bridge.query(b'ask\n', LINE, soon(), 1) == b'reply'
    assert bridge.stats.stale_bytes_dropped == len(b'unsolicited\n')



def test_select_on_comm_takes_the_input_back_once_a_query_has_its_whole_reply(posts, owned):
    """The usual query's own read (a whole reply at once) hands the input back too, without waiting idle."""
    bridge, transport, device = owned
    go = threading.Event()

    def device_side():
        assert device.recv(100) == b'ask\n'
        assert go.wait(2)
        device.sendall(b'reply\n')
    thread = threading.Thread(target=device_side, daemon=True)
    thread.start()
    outcome: list = []
    caller = threading.Thread(target=lambda: outcome.append(bridge.query(b'ask\n', LINE, soon(), 1)))
    caller.start()
    wait_for(lambda: bridge._owned, 'the query to own the input')
    assert not bridge.reactor_may_read(transport)
    bridge.fileno()                                    # a driver selects on comm meanwhile
    go.set()
    caller.join(2)
    assert outcome == [b'reply']
    posts.run()
    assert transport.resumed == 1

# -- Ctrl-C while a query waits (the main thread of a plain script or the shell) -----------

@contextmanager
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt in the main thread meanwhile (Python's default handler).

    Set inside the test body: the test session's reactor installs its own handler when it starts.
    """
    assert threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def query_interrupted(bridge, device_side) -> None:
    """``bridge.query`` in the main thread while ``device_side`` runs in another; it must end in Ctrl-C."""
    with ctrl_c_raises():
        thread = threading.Thread(target=device_side, daemon=True)
        thread.start()
        with pytest.raises(KeyboardInterrupt):
            bridge.query(b'ask\n', LINE, soon(), 1)
        thread.join(2)


def test_ctrl_c_while_a_query_waits_for_its_reply_gives_the_input_up(owned):
    """Else the reactor never reads the link again: select on comm, reactor code and a peer close go unseen."""
    bridge, transport, device = owned

    def user():
        assert device.recv(100) == b'ask\n'
        time.sleep(0.05)                               # the caller waits in poll for its reply
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)   # Ctrl-C
    query_interrupted(bridge, user)
    assert not bridge._owned


def test_ctrl_c_as_a_query_takes_the_lock_back_leaves_the_lock_free(owned):
    """An interrupt that lands as the lock is granted (the reactor held it) must not keep the lock."""
    bridge, transport, device = owned

    def reactor_busy():
        assert device.recv(100) == b'ask\n'
        with bridge._lock:                             # the reactor thread in a bridge call
            device.sendall(b'reply\n')                 # the caller's poll returns; it waits for the lock
            time.sleep(0.1)
            _thread.interrupt_main()                   # Ctrl-C, pending when the lock is granted
    query_interrupted(bridge, reactor_busy)
    free = bridge._lock.acquire(timeout=1)
    if free:
        bridge._lock.release()
    assert free, 'the bridge lock stayed held: every later call and the reactor thread would hang'


# -- a tap installed while a query waits ---------------------------------------------------

def test_a_tap_installed_while_a_query_waits_hears_every_byte_read_after(owned):
    """Tracing switched on while an agent polls: the reply read after it must reach the tap whole, not a tail."""
    from socs_tcp import _tap
    bridge, transport, device = owned
    tap = RecordingTap()

    def device_side():
        assert device.recv(100) == b'ask\n'
        _tap.add_tap(tap)                              # the user starts tracing now
        device.sendall(b'rep')
        time.sleep(0.1)                                # the caller read that part
        device.sendall(b'ly\n')
    thread = threading.Thread(target=device_side, daemon=True)
    thread.start()
    try:
        assert bridge.query(b'ask\n', LINE, soon(), 1) == b'reply'
    finally:
        thread.join(2)
        _tap.remove_tap(tap)
    assert b''.join(data for what, data in tap.told if what == 'received') == b'reply\n', tap.told


class _CtrlCOnRelease:
    """The bridge's lock, with a Ctrl-C that arrives as it is released while a caller owns the input.

    Python runs a signal's handler where it next checks for one: after the
    call that releases a ``with`` block's lock is such a place. A Ctrl-C that
    comes during the last steps of that block (or the release itself) is
    raised there, after the block and before whatever follows it.
    """

    def __init__(self, bridge: Bridge) -> None:
        self._real, self._bridge, self.fired = bridge._lock, bridge, False

    def acquire(self, *args, **kwargs) -> bool:
        return self._real.acquire(*args, **kwargs)

    def release(self) -> None:
        self._real.release()

    def __enter__(self) -> None:
        self._real.acquire()

    def __exit__(self, *exc) -> bool:
        self._real.release()
        if not self.fired and self._bridge._owned:
            self.fired = True
            _thread.interrupt_main()    # Ctrl-C: its handler runs at the next check, here
        return False


def test_ctrl_c_as_a_query_releases_the_lock_it_sent_under_gives_the_input_up(owned):
    """The request is out and the input owned when the first lock is released: the input must be given up."""
    bridge, transport, device = owned
    lock = bridge._lock = _CtrlCOnRelease(bridge)
    with ctrl_c_raises():
        with pytest.raises(KeyboardInterrupt):
            bridge.query(b'ask\n', LINE, soon(), 1)
    assert lock.fired
    assert not bridge._owned, 'the input stays owned: the reactor never reads the link again'


def test_ctrl_c_as_take_takes_the_input_over_gives_it_up(owned, monkeypatch):
    """A Ctrl-C handled where take notes its call (the input just taken over) must give the input up."""
    bridge, transport, device = owned
    note_call = Bridge._note_call

    def interrupted_note_call(self):
        _thread.interrupt_main()        # Ctrl-C, handled at the first check after the input was taken
        return note_call(self)
    monkeypatch.setattr(Bridge, '_note_call', interrupted_note_call)
    with ctrl_c_raises():
        with pytest.raises(KeyboardInterrupt):
            bridge.take(LINE, soon(), None)
    assert not bridge._owned, 'the input stays owned: the reactor never reads the link again'


def test_ctrl_c_as_a_query_reads_on_for_the_rest_of_its_reply_gives_the_input_up(owned, monkeypatch):
    """A reply in parts: Ctrl-C handled on entry to the read that waits for the rest must give the input up."""
    bridge, transport, device = owned
    read_owned = Bridge._read_owned

    def interrupted_read_owned(*args, **kwargs):
        _thread.interrupt_main()        # Ctrl-C, handled at the read's first check
        return read_owned(*args, **kwargs)
    monkeypatch.setattr(Bridge, '_read_owned', interrupted_read_owned)

    def device_sends_a_part():
        assert device.recv(100) == b'ask\n'
        device.sendall(b'rep')                         # the query reads on for the rest
    thread = threading.Thread(target=device_sends_a_part, daemon=True)
    with ctrl_c_raises():
        thread.start()
        with pytest.raises(KeyboardInterrupt):
            bridge.query(b'ask\n', LINE, soon(), 1)
        thread.join(2)
    assert not bridge._owned, 'the input stays owned: the reactor never reads the link again'


class _ReactorReadsOnGiveUp:
    """The bridge's lock; as it is released with the input just given up, the reactor reads (once).

    A thread switch may come there: the reactor, still watching the socket,
    reads what followed the reply and tells the taps (as ``dataReceived``
    does) before the caller tells them the reply it read.
    """

    def __init__(self, bridge: Bridge, transport, data: bytes) -> None:
        self._real, self._bridge, self._transport, self._data = bridge._lock, bridge, transport, data
        self.read = False

    def acquire(self, *args, **kwargs) -> bool:
        return self._real.acquire(*args, **kwargs)

    def release(self) -> None:
        self._real.release()

    def __enter__(self) -> None:
        self._real.acquire()

    def __exit__(self, *exc) -> bool:
        self._real.release()
        bridge = self._bridge
        if not self.read and not bridge._owned and bridge.stats.bytes_in:
            from socs_tcp import _tap
            self.read = True
            assert bridge.reactor_may_read(self._transport)
            _tap.notify_received('device:1', self._data)
            bridge.feed(1, self._data)
            bridge.reactor_read_done()
        return False


def test_a_tap_hears_a_query_reply_before_what_the_reactor_reads_after_it(owned):
    """A trace must show the link's input in the order it came: the reply, then what followed it."""
    from socs_tcp import _tap
    bridge, transport, device = owned
    lock = bridge._lock = _ReactorReadsOnGiveUp(bridge, transport, b'unsolicited\n')
    tap = RecordingTap()
    answering, lines = device_answers(device, b'reply\n')
    _tap.add_tap(tap)
    try:
        assert bridge.query(b'ask\n', LINE, soon(), 1) == b'reply'
    finally:
        answering.join(2)
        _tap.remove_tap(tap)
    assert lock.read
    assert [data for what, data in tap.told if what == 'received'] == [b'reply\n', b'unsolicited\n'], tap.told


def test_ctrl_c_as_a_timed_out_read_gives_the_input_up_still_gives_it_up(owned, monkeypatch):
    """A Ctrl-C handled on entry to the give-up's bookkeeping (its first check) must not leave the input owned."""
    bridge, transport, device = owned
    gave_up, fired = Bridge._gave_up, []

    def interrupted_gave_up(self):
        if not fired:
            fired.append(True)
            _thread.interrupt_main()    # Ctrl-C, handled at the bookkeeping's first check
        gave_up(self)
    monkeypatch.setattr(Bridge, '_gave_up', interrupted_gave_up)
    with ctrl_c_raises():
        with pytest.raises(KeyboardInterrupt):
            bridge.take(LINE, soon(0.05), None)        # no reply: the read times out, then gives up
    assert fired
    assert not bridge._owned, 'the input stays owned: the reactor never reads the link again'
