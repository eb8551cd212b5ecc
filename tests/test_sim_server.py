"""Tests of the simulated-device server (socs_tcp.sim) and its echo script.

Most tests use real TCP clients on 127.0.0.1 against a server in the test's
reactor (pytest-twisted runs it in the main thread); the timing of delays and
fragments is also checked exactly on a MemoryReactorClock.
"""

import itertools
import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport

from socs_tcp.sim import DeviceServer, TerminatorFramer, mbap_framer

WAIT = 3.0   # bound on every wait for something that should happen


class Client(Protocol):
    """A test client that records what it receives, and when."""

    def __init__(self):
        self.data = b''
        self.arrivals = []          # (reactor time, chunk)
        self.lost = defer.Deferred()
        self._waiters = []

    def dataReceived(self, data):
        self.data += data
        self.arrivals.append((reactor.seconds(), data))
        self._check()

    def connectionLost(self, reason):
        # Fire with the exception itself (not a Failure), so tests can check
        # a reset (ConnectionLost) apart from a clean close (ConnectionDone).
        self.lost.callback(reason.value)

    def _check(self):
        keep = []
        for n, d in self._waiters:
            if d.called:
                continue
            if len(self.data) >= n:
                d.callback(self.data)
            else:
                keep.append((n, d))
        self._waiters = keep

    def wait_bytes(self, n, timeout=WAIT):
        """Deferred firing with all data once at least ``n`` bytes arrived."""
        d = defer.Deferred()
        self._waiters.append((n, d))
        self._check()
        return d.addTimeout(timeout, reactor)

    def wait_lost(self, timeout=WAIT):
        """Deferred firing with the exception that ended the connection."""
        d = defer.Deferred()
        self.lost.addBoth(lambda r: (d.callback(r) if not d.called else None, r)[1])
        return d.addTimeout(timeout, reactor)

    def send(self, data):
        self.transport.write(data)


def connect(port):
    endpoint = TCP4ClientEndpoint(reactor, '127.0.0.1', port, timeout=WAIT)
    return connectProtocol(endpoint, Client())


@defer.inlineCallbacks
def answered(port, line: bytes):
    """Connect a new client, send ``line``; return what came back (the terminated reply)."""
    c = yield connect(port)
    c.send(line + b'\n')
    return (yield c.wait_bytes(len(line) + 1))


@pytest.fixture
def make_server():
    """Build DeviceServers that are stopped (and their clients gone) after the test."""
    servers = []

    def make(handler=lambda r: r, **kw):
        srv = DeviceServer(handler, **kw)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        # Bounded, so a broken stop() fails the test instead of hanging the run.
        pytest_twisted.blockon(srv.stop().addTimeout(WAIT, reactor))


def upper(request):
    return request.upper()


# -- request / response --------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_handler_answers_and_requests_are_recorded(make_server):
    srv = make_server(upper)
    port = yield srv.start()
    assert port == srv.port and port > 0 and srv.listening
    c = yield connect(port)
    c.send(b'*idn?\nmeas?\n')
    data = yield c.wait_bytes(len(b'*IDN?\nMEAS?\n'))
    assert data == b'*IDN?\nMEAS?\n'
    assert srv.requests == [b'*idn?', b'meas?']


@pytest_twisted.inlineCallbacks
def test_dict_table_str_and_bytes_unknown_gets_no_reply(make_server):
    srv = make_server({'A?': '1', b'B?': b'2', 'C?': None})
    c = yield connect((yield srv.start()))
    c.send(b'X?\nC?\nB?\nA?\n')
    yield srv.when_requests(4, timeout=WAIT)
    data = yield c.wait_bytes(4)
    # X? (unknown) and C? (None) get nothing; the rest answer in order.
    assert data == b'2\n1\n'


@pytest_twisted.inlineCallbacks
def test_terminators_and_requests_split_across_segments(make_server):
    srv = make_server(upper, terminator='\r', reply_terminator=b'\r\n')
    c = yield connect((yield srv.start()))
    c.send(b'ab')
    yield srv.when_connections(1, timeout=WAIT)
    c.send(b'c\rde\r')
    data = yield c.wait_bytes(len(b'ABC\r\nDE\r\n'))
    assert data == b'ABC\r\nDE\r\n'
    assert srv.requests == [b'abc', b'de']


@pytest_twisted.inlineCallbacks
def test_binary_framer_mbap(make_server):
    def handler(frame):
        # Echo the transaction id with a one-register reply.
        return frame[:2] + b'\x00\x00\x00\x05' + frame[6:8] + b'\x02\x12\x34'

    srv = make_server(handler, framer=mbap_framer)
    c = yield connect((yield srv.start()))
    read_req = b'\x00\x07\x00\x00\x00\x06\x01\x03\x00\x10\x00\x01'
    c.send(read_req[:4])            # header split across two segments
    c.send(read_req[4:] + read_req.replace(b'\x00\x07', b'\x00\x08', 1))
    data = yield c.wait_bytes(22)
    # No reply_terminator with a framer: exactly two 11-byte replies.
    assert data == (b'\x00\x07\x00\x00\x00\x05\x01\x03\x02\x12\x34'
                    b'\x00\x08\x00\x00\x00\x05\x01\x03\x02\x12\x34')
    assert srv.requests[0] == read_req


@pytest_twisted.inlineCallbacks
def test_framing_error_drops_only_that_connection(make_server):
    srv = make_server(lambda frame: frame, framer=mbap_framer)
    port = yield srv.start()
    bad, good = yield defer.gatherResults([connect(port), connect(port)])
    bad.send(b'\x00\x01\x00\x00\x00\x00\x01')          # MBAP length 0: invalid
    assert isinstance((yield bad.wait_lost()), ConnectionLost)
    good.send(b'\x00\x02\x00\x00\x00\x02\x01\x03')
    assert (yield good.wait_bytes(8)) == b'\x00\x02\x00\x00\x00\x02\x01\x03'


def test_framers_alone():
    buf = bytearray(b'\x00\x01\x00\x00\x00\x02\x01')
    assert mbap_framer(buf) is None and len(buf) == 7
    buf += b'\x03rest'
    assert mbap_framer(buf) == b'\x00\x01\x00\x00\x00\x02\x01\x03'
    assert buf == bytearray(b'rest')
    with pytest.raises(ValueError, match='length'):
        mbap_framer(bytearray(b'\x00\x01\x00\x00\x00\x00\x01'))
    framer = TerminatorFramer(b'\r\n', max_length=4)
    buf = bytearray(b'ab\r\ncd')
    assert framer(buf) == b'ab' and framer(buf) is None and buf == bytearray(b'cd')
    with pytest.raises(ValueError, match='longer than 4'):
        framer(bytearray(b'abcdef'))


@pytest_twisted.inlineCallbacks
def test_handler_errors_send_nothing_and_keep_the_connection(make_server):
    def handler(request):
        if request == b'boom':
            raise RuntimeError('handler bug')
        return 42 if request == b'int' else b'ok'

    srv = make_server(handler)
    c = yield connect((yield srv.start()))
    c.send(b'boom\nint\nfine\n')
    data = yield c.wait_bytes(3)
    assert data == b'ok\n' and srv.connection_count == 1


@pytest_twisted.inlineCallbacks
def test_greeting_is_sent_on_connect(make_server):
    srv = make_server(upper, greeting='READY> ')
    c = yield connect((yield srv.start()))
    data = yield c.wait_bytes(7)
    assert data == b'READY> '


@pytest_twisted.inlineCallbacks
def test_max_connections_closes_extra_clients_at_once(make_server):
    srv = make_server(upper, max_connections=1)
    port = yield srv.start()
    first = yield connect(port)
    yield srv.when_connections(1, timeout=WAIT)
    second = yield connect(port)
    assert isinstance((yield second.wait_lost()), ConnectionDone)
    assert srv.rejected_count == 1 and srv.connection_count == 1
    first.send(b'x\n')
    assert (yield first.wait_bytes(2)) == b'X\n'
    # Once the first client is gone its slot is free again.
    first.transport.loseConnection()
    yield srv.when_connections(0, timeout=WAIT)
    assert (yield answered(port, b'y')) == b'Y\n'


# -- listening faults ------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_stop_listening_refuses_new_clients_keeps_old_restarts_same_port(make_server):
    srv = make_server(upper)
    port = yield srv.start()
    old = yield connect(port)
    yield srv.stop_listening()
    assert not srv.listening
    with pytest.raises(ConnectionRefusedError):
        yield connect(port)
    old.send(b'still\n')
    assert (yield old.wait_bytes(6)) == b'STILL\n'
    assert (yield srv.start()) == port
    assert (yield answered(port, b'back')) == b'BACK\n'


@pytest_twisted.inlineCallbacks
def test_blackhole_silences_old_clients_new_ones_hang_then_it_comes_back(make_server):
    from twisted.internet.error import TimeoutError as ConnectTimeout
    srv = make_server(upper)
    port = yield srv.start()
    old = yield connect(port)
    yield srv.set_blackhole(True)
    assert srv.blackholed and not srv.listening and srv.faults.silent
    old.send(b'anyone?\n')
    yield srv.when_requests(1, timeout=WAIT)             # read, never answered
    endpoint = TCP4ClientEndpoint(reactor, '127.0.0.1', port, timeout=0.3)
    with pytest.raises(ConnectTimeout):                  # hangs: not refused, not accepted
        yield connectProtocol(endpoint, Client())
    assert old.data == b''
    yield srv.set_blackhole(False)
    assert srv.listening and not srv.blackholed and not srv.faults.silent
    assert (yield answered(port, b'back')) == b'BACK\n'


@pytest_twisted.inlineCallbacks
def test_restart_in_the_same_reactor_turn_waits_for_the_old_port(make_server):
    srv = make_server(upper)
    port = yield srv.start()
    d = srv.stop_listening()
    again = srv.start()
    assert not again.called           # old socket still closing: listens right after
    yield d
    assert (yield again) == port and srv.listening
    assert (yield answered(port, b'q')) == b'Q\n'


@pytest_twisted.inlineCallbacks
def test_stop_closes_port_and_connections_then_start_again(make_server):
    srv = make_server(upper)
    port = yield srv.start()
    clients = yield defer.gatherResults([connect(port), connect(port)])
    yield srv.when_connections(2, timeout=WAIT)
    yield srv.stop()
    assert srv.connection_count == 0 and not srv.listening
    for c in clients:
        assert isinstance((yield c.wait_lost()), ConnectionLost)   # aborted: a reset
    with pytest.raises(ConnectionRefusedError):
        yield connect(port)
    assert (yield srv.start()) == port
    assert (yield answered(port, b'z')) == b'Z\n'


@pytest_twisted.inlineCallbacks
def test_drop_connections_aborts_all_but_keeps_listening(make_server):
    srv = make_server(upper)
    port = yield srv.start()
    a, b = yield defer.gatherResults([connect(port), connect(port)])
    yield srv.when_connections(2, timeout=WAIT)
    yield srv.drop_connections()
    assert srv.connection_count == 0
    assert isinstance((yield a.wait_lost()), ConnectionLost)
    assert isinstance((yield b.wait_lost()), ConnectionLost)
    assert (yield answered(port, b'ok')) == b'OK\n'


@pytest_twisted.inlineCallbacks
def test_hangup_closes_cleanly_unlike_drop_and_keeps_listening(make_server):
    srv = make_server(upper)
    port = yield srv.start()
    a = yield connect(port)
    yield srv.when_connections(1, timeout=WAIT)
    yield srv.hangup()
    assert srv.connection_count == 0
    assert isinstance((yield a.wait_lost()), ConnectionDone)   # FIN, not a reset
    assert (yield answered(port, b'ok')) == b'OK\n'


# -- reply faults -------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_drop_after_n_reads_nth_unanswered_aborts_then_clears(make_server):
    srv = make_server(upper)
    port = yield srv.start()
    srv.drop_after(2)
    c = yield connect(port)
    c.send(b'one\n')
    assert (yield c.wait_bytes(4)) == b'ONE\n'
    c.send(b'two\n')
    assert isinstance((yield c.wait_lost()), ConnectionLost)
    assert c.data == b'ONE\n'                    # the 2nd request got no answer
    assert srv.requests == [b'one', b'two']      # ...but was read
    c2 = yield connect(port)                     # one drop only
    c2.send(b'three\nfour\n')
    assert (yield c2.wait_bytes(11)) == b'THREE\nFOUR\n'


@pytest_twisted.inlineCallbacks
def test_delay_defers_replies_without_blocking_the_reactor(make_server):
    srv = make_server(upper)
    port = yield srv.start()
    srv.set_delay(0.3)
    c = yield connect(port)
    t0 = reactor.seconds()
    c.send(b'a\nb\n')
    # While the replies are pending the reactor still accepts a new client.
    yield connect(port)
    yield srv.when_connections(2, timeout=WAIT)
    assert c.data == b''
    data = yield c.wait_bytes(4)
    assert data == b'A\nB\n'                     # order kept
    assert c.arrivals[0][0] - t0 >= 0.29
    srv.set_delay(0)
    t1 = reactor.seconds()
    c.send(b'c\n')
    yield c.wait_bytes(6)
    assert reactor.seconds() - t1 < 0.25


@pytest_twisted.inlineCallbacks
def test_silent_reads_but_never_answers(make_server):
    srv = make_server(upper)
    c = yield connect((yield srv.start()))
    srv.set_silent(True)
    c.send(b'lost\n')
    yield srv.when_requests(1, timeout=WAIT)
    srv.set_silent(False)
    c.send(b'heard\n')
    data = yield c.wait_bytes(6)
    assert data == b'HEARD\n'                    # nothing for 'lost', ever
    assert srv.requests == [b'lost', b'heard']


@pytest_twisted.inlineCallbacks
def test_fragments_arrive_in_chunks_spaced_apart(make_server):
    srv = make_server(upper)
    c = yield connect((yield srv.start()))
    srv.set_fragments(3, interval=0.1)
    c.send(b'abcdefgh\n')
    data = yield c.wait_bytes(9)
    assert data == b'ABCDEFGH\n'
    assert [chunk for _, chunk in c.arrivals] == [b'ABC', b'DEF', b'GH\n']
    gaps = [t2 - t1 for (t1, _), (t2, _) in itertools.pairwise(c.arrivals)]
    assert all(g >= 0.08 for g in gaps), gaps


@pytest_twisted.inlineCallbacks
def test_send_unsolicited_goes_to_every_client(make_server):
    srv = make_server(upper)
    port = yield srv.start()
    a, b = yield defer.gatherResults([connect(port), connect(port)])
    yield srv.when_connections(2, timeout=WAIT)
    srv.send_unsolicited('ALARM\n')
    assert (yield a.wait_bytes(6)) == b'ALARM\n'
    assert (yield b.wait_bytes(6)) == b'ALARM\n'


@pytest_twisted.inlineCallbacks
def test_garbage_prefixes_only_the_next_reply(make_server):
    srv = make_server(upper)
    c = yield connect((yield srv.start()))
    srv.set_garbage(b'\x00\xff~')
    c.send(b'a\nb\n')
    assert (yield c.wait_bytes(7)) == b'\x00\xff~A\nB\n'


@pytest_twisted.inlineCallbacks
def test_reset_faults_restores_normal_replies(make_server):
    srv = make_server(upper)
    c = yield connect((yield srv.start()))
    srv.set_delay(5)
    srv.set_silent(True)
    srv.set_fragments(1, 1.0)
    srv.set_garbage(b'junk')
    srv.drop_after(1)
    srv.reset_faults()
    t0 = reactor.seconds()
    c.send(b'ok\n')
    assert (yield c.wait_bytes(3)) == b'OK\n'
    assert reactor.seconds() - t0 < 0.5 and len(c.arrivals) == 1
    assert srv.connection_count == 1


@pytest_twisted.inlineCallbacks
def test_max_recorded_bounds_history_but_counts_all(make_server):
    srv = make_server(upper, max_recorded=2)
    c = yield connect((yield srv.start()))
    c.send(b'a\nb\nc\n')
    reqs = yield srv.when_requests(3, timeout=WAIT)
    assert reqs == [b'b', b'c'] and srv.request_count == 3
    srv.clear_requests()
    assert srv.requests == [] and srv.request_count == 0


# -- waiting ----------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_when_fires_at_once_if_already_true_and_times_out(make_server):
    srv = make_server(upper)
    srv.start()
    d = srv.when_connections(0)
    assert d.called and (yield d) == 0
    d = srv.when_requests(0)
    assert d.called and (yield d) == []
    with pytest.raises(TimeoutError, match='1 requests'):
        yield srv.when_requests(1, timeout=0.05)


# -- other threads: the blocking twin -------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_blocking_twin_works_from_another_thread(make_server):
    srv = make_server(upper)
    dev = srv.blocking

    def worker():
        port = dev.start()                      # hops into the reactor, listens
        dev.set_delay(0.05)
        dev.set_garbage(b'#')
        with socket.create_connection(('127.0.0.1', port), timeout=WAIT) as s:
            assert dev.when_connections(1, timeout=WAIT) == 1   # blocks, then returns
            s.sendall(b'hi\n')
            reqs = dev.when_requests(1, timeout=WAIT)
            reply = b''
            while not reply.endswith(b'\n'):
                reply += s.recv(100)
            dev.stop()                          # returns once all is closed
            stopped = (dev.connection_count, dev.listening)
            with pytest.raises(ConnectionResetError):
                s.recv(100)                     # the server's abort reached us
            with pytest.raises(ValueError, match='seconds'):
                dev.set_delay(-1)               # raised here, in the calling thread
        return port, reqs, reply, stopped

    port, reqs, reply, stopped = yield threads.deferToThread(worker)
    assert port == srv.port and reqs == [b'hi'] and reply == b'#HI\n'
    assert stopped == (0, False)


@pytest_twisted.inlineCallbacks
def test_blocking_twin_hangs_up_from_a_worker_thread(make_server):
    srv = make_server(upper)
    port = yield srv.start()

    def worker():
        with socket.create_connection(('127.0.0.1', port), timeout=WAIT) as s:
            srv.blocking.when_connections(1, timeout=WAIT)
            srv.blocking.hangup()              # returns once the connection is gone
            return srv.connection_count, s.recv(100)

    assert (yield threads.deferToThread(worker)) == (0, b'')   # end of stream, not a reset


def test_blocking_twin_refuses_the_reactor_thread_and_a_stopped_reactor():
    from socs_tcp import ReactorThreadError
    # pytest-twisted runs the reactor in this (the main) thread
    with pytest.raises(ReactorThreadError, match='would deadlock'):
        DeviceServer(upper).blocking.set_silent(True)
    with pytest.raises(ReactorThreadError, match='running reactor'):
        DeviceServer(upper, reactor=MemoryReactorClock()).blocking.start()


# -- in-memory reactor: exact timing ------------------------------------------------

def _memory_connection(srv):
    conn = srv.factory.buildProtocol(None)
    transport = StringTransport()
    conn.makeConnection(transport)
    return conn, transport


def test_memory_reactor_delay_and_fragment_timing():
    clock = MemoryReactorClock()
    srv = DeviceServer(upper, reactor=clock)
    srv.start()
    conn, tr = _memory_connection(srv)
    srv.set_delay(1.0)
    srv.set_fragments(2, interval=0.5)
    conn.dataReceived(b'abcde\n')
    assert tr.value() == b''
    clock.advance(0.99)
    assert tr.value() == b''
    clock.advance(0.01)
    assert tr.value() == b'AB'
    clock.advance(0.5)
    assert tr.value() == b'ABCD'
    clock.advance(0.5)
    assert tr.value() == b'ABCDE\n'
    assert not clock.getDelayedCalls()


def test_memory_reactor_abort_cancels_pending_replies():
    clock = MemoryReactorClock()
    srv = DeviceServer(upper, reactor=clock)
    srv.start()
    conn, tr = _memory_connection(srv)
    srv.set_delay(1.0)
    conn.dataReceived(b'x\n')
    d = srv.drop_connections()
    assert tr.disconnected and not d.called   # aborted; gone only once the reactor says so
    conn.connectionLost(None)          # what the reactor does after an abort
    assert d.called and srv.connection_count == 0
    assert not clock.getDelayedCalls()  # the pending reply's timer is cancelled
    clock.advance(2)
    assert tr.value() == b''


def test_memory_reactor_max_connections_counts_aborting_slot_as_free():
    clock = MemoryReactorClock()
    srv = DeviceServer(upper, reactor=clock, max_connections=1)
    srv.start()
    conn, _ = _memory_connection(srv)
    assert srv.factory.buildProtocol(None) is None
    srv.drop_connections()             # aborted, not yet gone
    assert srv.connection_count == 1
    assert srv.factory.buildProtocol(None) is not None


# -- bad arguments -------------------------------------------------------------------

@pytest.mark.parametrize('kwargs, exc, name', [
    (dict(handler=3), TypeError, 'handler'),
    (dict(terminator=b''), ValueError, 'terminator'),
    (dict(terminator=5), TypeError, 'terminator'),
    (dict(framer='x'), TypeError, 'framer'),
    (dict(reply_terminator=1.0), TypeError, 'reply_terminator'),
    (dict(port=70000), ValueError, 'port'),
    (dict(port='http'), TypeError, 'port'),
    (dict(max_connections=0), ValueError, 'max_connections'),
    (dict(greeting=3), TypeError, 'greeting'),
    (dict(max_recorded=-1), ValueError, 'max_recorded'),
])
def test_bad_constructor_arguments_name_the_argument(kwargs, exc, name):
    kwargs.setdefault('handler', upper)
    with pytest.raises(exc, match=name):
        DeviceServer(**kwargs)


@pytest.mark.parametrize('call, exc, name', [
    (lambda s: s.set_delay(-1), ValueError, 'seconds'),
    (lambda s: s.set_delay('1'), TypeError, 'seconds'),
    (lambda s: s.set_fragments(0), ValueError, 'size'),
    (lambda s: s.set_fragments(2, interval=-0.1), ValueError, 'interval'),
    (lambda s: s.drop_after(0), ValueError, 'n'),
    (lambda s: s.set_garbage(None), TypeError, 'data'),
    (lambda s: s.send_unsolicited(1), TypeError, 'data'),
    (lambda s: s.when_requests(-1), ValueError, 'n'),
    (lambda s: s.when_connections(1.5), TypeError, 'n'),
])
def test_bad_fault_arguments_name_the_argument(call, exc, name):
    srv = DeviceServer(upper, reactor=MemoryReactorClock())
    with pytest.raises(exc, match=name):
        call(srv)


# -- the echo script, as a real process ----------------------------------------------

def _start_echo():
    proc = subprocess.Popen([sys.executable, '-m', 'socs_tcp.sim.echo', '--port', '0'],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    if not ready:
        proc.kill()
        pytest.fail('echo server printed no PORT line')
    line = proc.stdout.readline().decode()
    assert line.startswith('PORT '), line
    return proc, int(line.split()[1])


@pytest.fixture
def echo_proc():
    procs = []

    def start():
        proc, port = _start_echo()
        procs.append(proc)
        return proc, port

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_echo_script_echoes_lines_and_exits_on_stdin_close(echo_proc):
    proc, port = echo_proc()
    with socket.create_connection(('127.0.0.1', port), timeout=WAIT) as s:
        s.sendall(b'hello\nwor')
        s.sendall(b'ld\n')
        got = b''
        while got.count(b'\n') < 2:
            got += s.recv(100)
        assert got == b'hello\nworld\n'
    proc.stdin.close()
    assert proc.wait(timeout=WAIT) == 0


def test_echo_script_exits_cleanly_on_sigterm(echo_proc):
    proc, _ = echo_proc()
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=WAIT) == 0
    assert time.monotonic() - t0 < WAIT
