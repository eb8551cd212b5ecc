"""TCPInterface against a simulated device over real TCP on 127.0.0.1.

The reactor runs in the main thread (pytest-twisted), as in an OCS agent;
each test body runs in a worker thread, as an OCS blocking task does.
"""

import select
import socket
import threading
import time

import pytest
import pytest_twisted

from socs_tcp import DeviceDisconnected, DeviceTimeout, NotConnected, ReactorThreadError, TCPInterface
from socs_tcp.sim import DeviceServer
from tests.conftest import in_worker

# A blocking call may overrun its timeout by at most this much.
MARGIN = 0.25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def timed(fn, *args, **kwargs):
    """Call fn; return (exception or result, seconds taken)."""
    start = time.monotonic()
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        result = exc
    return result, time.monotonic() - start


def line_interface(device, timeout=2.0, **kwargs):
    return TCPInterface('127.0.0.1', device.port, timeout, read_termination=b'\n',
                        write_termination=b'\n', **kwargs)


# -- seed semantics --------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_constructing_connects_and_comm_is_socket_like(line_device):
    def body():
        with TCPInterface('127.0.0.1', str(line_device.port), 2) as dev:
            assert dev.connected and dev.port == line_device.port
            assert line_device.connection_count == 1
            dev.comm.sendall(b'ping\n')
            assert dev.comm.recv(4096) == b'ping\n'
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_a_device_that_is_down_does_not_make_construction_raise():
    def body():
        dev, took = timed(TCPInterface, '127.0.0.1', free_port(), 2)
        assert isinstance(dev, TCPInterface), dev
        assert dev.comm is None and not dev.connected
        assert took < 1.0
        with pytest.raises(NotConnected):
            dev.send(b'x')
        dev.close()
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_send_reconnects_first_when_the_device_came_back():
    device = DeviceServer(lambda r: r, port=free_port())
    def body():
        dev = TCPInterface('127.0.0.1', device.port, 2)
        assert dev.comm is None
        device.blocking.start()
        dev.send('hello\n')  # str is encoded, as SOCS drivers pass both
        assert dev.recv() == b'hello\n'
        dev.close()
    try:
        yield in_worker(body)
    finally:
        yield device.stop()


@pytest_twisted.inlineCallbacks
def test_send_retries_once_on_a_new_connection_after_a_failed_write(line_device, monkeypatch):
    from socs_tcp._bridge import Bridge
    real_write = Bridge.write
    failures = []

    def fail_first(self, generation, data, deadline, pump=None):
        if not failures:
            failures.append(generation)
            raise DeviceDisconnected('broken pipe (injected)')
        return real_write(self, generation, data, deadline, pump)

    def body():
        with line_interface(line_device) as dev:
            monkeypatch.setattr(Bridge, 'write', fail_first)
            dev.send(b'second try\n')
            assert dev.recv() == b'second try\n'
            assert dev.stats['connects'] == 2  # the write went out on a new connection
    yield in_worker(body)
    assert len(failures) == 1


@pytest_twisted.inlineCallbacks
def test_send_raises_when_the_retry_fails_too(line_device, monkeypatch):
    from socs_tcp._bridge import Bridge

    def always_fail(self, generation, data, deadline, pump=None):
        raise DeviceDisconnected('broken pipe (injected)')

    def body():
        with line_interface(line_device) as dev:
            monkeypatch.setattr(Bridge, 'write', always_fail)
            with pytest.raises(ConnectionError):
                dev.send(b'x\n')
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_recv_returns_as_soon_as_one_byte_is_there_up_to_bufsize(line_device):
    def body():
        with line_interface(line_device) as dev:
            dev.send(b'abcdef\n')
            assert dev.read_exactly(7) == b'abcdef\n'
            line_device.blocking.send_unsolicited(b'xyz')
            assert dev.recv(2) == b'xy'
            assert dev.recv(100) == b'z'
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_recv_with_nothing_to_read_times_out_as_a_connection_and_timeout_error(line_device):
    def body():
        with line_interface(line_device, timeout=0.2) as dev:
            error, took = timed(dev.recv)
            assert isinstance(error, ConnectionError) and isinstance(error, TimeoutError)
            assert 0.19 <= took < 0.2 + MARGIN
            assert dev.connected  # a quiet device is not a lost one
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_recv_reset_on_error_drops_the_connection(line_device):
    def body():
        with line_interface(line_device, timeout=0.2) as dev:
            with pytest.raises(DeviceTimeout):
                dev.recv(reset_on_error=True)
            assert dev.query('after reset') == b'after reset'
            assert dev.stats['connects'] == 2
    yield in_worker(body)


# -- where we do better -------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_peer_close_returns_buffered_input_then_raises(line_device):
    def body():
        with line_interface(line_device) as dev:
            dev.send(b'last words\n')
            line_device.blocking.when_requests(1, timeout=2)
            deadline = time.monotonic() + 2
            while len(line_device.requests) < 1 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert dev.read_until(b'\n') == b'last words\n'
            dev.send(b'more\n')
            while dev.stats['bytes_in'] < len(b'last words\nmore\n') and time.monotonic() < deadline:
                time.sleep(0.005)
            line_device.blocking.drop_connections()
            assert dev.recv() == b'more\n'
            with pytest.raises(DeviceDisconnected):
                dev.recv()  # socs.tcp returned b'' here, forever
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_a_late_reply_never_answers_a_later_query(line_device):
    def body():
        with line_interface(line_device) as dev:
            line_device.blocking.set_delay(0.4)
            error, took = timed(dev.query, 'first', timeout=0.15)
            assert isinstance(error, DeviceTimeout), error
            assert took < 0.15 + MARGIN
            line_device.blocking.set_delay(0)
            # The reply to 'first' arrives while this query waits; it must not be taken.
            assert dev.query('second') == b'second'
            time.sleep(0.4)  # let the late reply land, if it could
            assert dev.query('third') == b'third'
    yield in_worker(body)


@pytest.mark.parametrize('args, kwargs, exc, word', [
    ((None, 1), {}, TypeError, 'ip_address'),
    (('127.0.0.1', 0), {}, ValueError, 'port'),
    (('127.0.0.1', 70000), {}, ValueError, 'port'),
    (('127.0.0.1', 'http'), {}, TypeError, 'port'),
    (('127.0.0.1', 1, 0), {}, ValueError, 'timeout'),
    (('127.0.0.1', 1, -1), {}, ValueError, 'timeout'),
    (('127.0.0.1', 1, '10'), {}, TypeError, 'timeout'),
    (('127.0.0.1', 1), {'read_termination': 5}, TypeError, 'read_termination'),
])
def test_bad_constructor_arguments_raise_at_once_naming_them(args, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        TCPInterface(*args, **kwargs)


@pytest_twisted.inlineCallbacks
def test_bad_call_arguments_raise_at_once_and_cause_no_reconnect(line_device):
    def body():
        with line_interface(line_device) as dev:
            before = dev.stats['connects']
            for call, exc, word in [
                (lambda: dev.send(42), TypeError, 'msg'),
                (lambda: dev.send(['a']), TypeError, 'msg'),
                (lambda: dev.recv(0), ValueError, 'bufsize'),
                (lambda: dev.recv(-5), ValueError, 'bufsize'),
                (lambda: dev.recv('4096'), TypeError, 'bufsize'),
                (lambda: dev.query(b'x', timeout=0), ValueError, 'timeout'),
                (lambda: dev.query(b'x', size=0), ValueError, 'size'),
                (lambda: dev.query(b'x', terminator=b'\n', size=3), ValueError, 'terminator or size'),
                (lambda: dev.read_exactly(0), ValueError, 'n'),
                (lambda: dev.read_until(b''), ValueError, 'terminator'),
            ]:
                with pytest.raises(exc, match=word):
                    call()
            assert dev.stats['connects'] == before and dev.stats['disconnects'] == 0
            assert dev.stats['bytes_out'] == 0
            with pytest.raises(ValueError, match='timeout'):
                dev.timeout = 0
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_reconnects_in_the_background_after_the_device_comes_back(line_device):
    from socs_tcp import Backoff

    def body():
        with line_interface(line_device, backoff=Backoff(initial=0.05, max_delay=0.2)) as dev:
            line_device.blocking.stop_listening()
            line_device.blocking.drop_connections()
            deadline = time.monotonic() + 2
            while dev.connected and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not dev.connected
            line_device.blocking.start()
            while not dev.connected and time.monotonic() < deadline:  # no call made: the reactor did it
                time.sleep(0.01)
            assert dev.connected
            assert dev.stats['connects'] == 2
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_a_call_after_an_outage_reconnects_at_once_not_after_the_backoff(line_device):
    from socs_tcp import Backoff

    def body():
        with line_interface(line_device, backoff=Backoff(initial=30, max_delay=60)) as dev:
            line_device.blocking.stop_listening()
            line_device.blocking.drop_connections()
            with pytest.raises(ConnectionError):
                dev.query('down')
            line_device.blocking.start()
            reply, took = timed(dev.query, 'back')
            assert reply == b'back' and took < 0.5
    yield in_worker(body)


# -- bounded in every fault -----------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_every_call_is_bounded_by_its_timeout_in_every_fault(line_device):
    timeout = 0.3

    def body():
        # refused: fails at once
        dev = TCPInterface('127.0.0.1', free_port(), timeout)
        error, took = timed(dev.query, b'x')
        assert isinstance(error, NotConnected) and took < 0.1
        dev.close()
        # silent: accepts, reads, never answers
        with line_interface(line_device, timeout=timeout) as dev:
            line_device.blocking.set_silent(True)
            error, took = timed(dev.query, 'hello?')
            assert isinstance(error, DeviceTimeout) and took < timeout + MARGIN
            line_device.blocking.set_silent(False)
            # closing mid-reply: a fragment, then the connection goes
            line_device.blocking.set_fragments(3, interval=0.05)
            line_device.blocking.drop_after(1)
            error, took = timed(dev.query, 'a long reply')
            assert isinstance(error, ConnectionError) and took < timeout + MARGIN
            line_device.blocking.reset_faults()
        # blackholed: a listener that never accepts, its backlog full
        hole = socket.socket()
        hole.bind(('127.0.0.1', 0))
        hole.listen(0)
        fillers = []
        try:
            for _ in range(4):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(hole.getsockname())
                fillers.append(s)
            start = time.monotonic()
            dev = TCPInterface('127.0.0.1', hole.getsockname()[1], timeout)
            error, took = timed(dev.query, b'x')
            assert isinstance(error, ConnectionError)
            assert time.monotonic() - start < 2 * timeout + 2 * MARGIN  # construction + call
            assert took < timeout + MARGIN
            dev.close()
        finally:
            for s in fillers:
                s.close()
            hole.close()
    yield in_worker(body)


def test_a_blocking_call_in_the_reactor_thread_raises_instead_of_deadlocking(line_device):
    # Under pytest-twisted this test body runs in the reactor thread.
    dev = TCPInterface('127.0.0.1', line_device.port, 1)
    try:
        for call in (lambda: dev.send(b'x'), dev.recv, lambda: dev.query(b'x'),
                     lambda: dev.read_until(b'\n'), lambda: dev.read_exactly(1), dev.clear):
            with pytest.raises(ReactorThreadError, match='reactor thread'):
                call()
    finally:
        dev.close()


@pytest_twisted.inlineCallbacks
def test_queries_from_several_threads_never_interleave(line_device):
    n_threads, n_queries = 4, 100
    mismatches = []

    def worker(dev, k):
        for i in range(n_queries):
            request = f'thread{k}-query{i}-' + 'x' * (i % 40)
            reply = dev.query(request)
            if reply != request.encode():
                mismatches.append((request, reply))

    def body():
        with line_interface(line_device) as dev:
            threads = [threading.Thread(target=worker, args=(dev, k)) for k in range(n_threads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert not any(t.is_alive() for t in threads)
    yield in_worker(body)
    assert mismatches == []
    # every request reached the device whole: none was cut by another's bytes
    assert len(line_device.requests) == n_threads * n_queries
    assert all(r.startswith(b'thread') and b'query' in r for r in line_device.requests)


@pytest_twisted.inlineCallbacks
def test_on_connect_runs_after_every_reconnect_before_user_io():
    device = DeviceServer(lambda r: r, greeting=b'WELCOME\n')
    device.start()
    greetings = []

    def drain_prompt(dev):
        greetings.append(dev.read_until(b'\n'))

    def body():
        with line_interface(device, on_connect=drain_prompt) as dev:
            assert dev.query('one') == b'one'  # not b'WELCOME'
            device.blocking.drop_connections()
            deadline = time.monotonic() + 2
            while dev.connected and time.monotonic() < deadline:
                time.sleep(0.01)
            assert dev.query('two') == b'two'
    try:
        yield in_worker(body)
    finally:
        yield device.stop()
    assert greetings == [b'WELCOME\n', b'WELCOME\n']


@pytest_twisted.inlineCallbacks
def test_select_on_comm_is_readable_exactly_while_input_waits(line_device):
    def body():
        with line_interface(line_device) as dev:
            assert select.select([dev.comm], [], [], 0.05)[0] == []
            dev.send(b'prompt>\n')
            assert select.select([dev.comm], [], [], 2)[0] == [dev.comm]
            assert dev.recv() == b'prompt>\n'
            assert select.select([dev.comm], [], [], 0.05)[0] == []
    yield in_worker(body)


# -- the rest of the API ----------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_query_read_until_read_exactly_clear_close_stats(line_device):
    def body():
        dev = line_interface(line_device)
        assert dev.query('*IDN?') == b'*IDN?'
        assert dev.query('abc', terminator=None, size=4) == b'abc\n'
        assert dev.query(b'x', terminator=b'x') == b''
        assert dev.clear() == 1  # the '\n' after 'x' was left over
        line_device.blocking.send_unsolicited(b'noise\n')
        assert dev.read_until('\n') == b'noise\n'
        line_device.blocking.send_unsolicited(b'stale\n')
        deadline = time.monotonic() + 2
        while dev.stats['buffered'] < 6 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert dev.query('fresh') == b'fresh'  # stale input is flushed first
        stats = dev.stats
        assert stats['connects'] == 1 and stats['queries'] == 4
        assert stats['bytes_out'] > 0 and stats['bytes_in'] > 0 and stats['stale_bytes_dropped'] >= 7
        dev.close()
        dev.close()  # idempotent
        assert not dev.connected
        with pytest.raises(NotConnected, match='closed'):
            dev.query('x')
        with pytest.raises(NotConnected, match='closed'):
            dev.comm.recv(10)  # comm stays socket-like: a closed socket, not an AttributeError
    yield in_worker(body)
    deadline = time.monotonic() + 2
    while line_device.connection_count and time.monotonic() < deadline:
        yield in_worker(time.sleep, 0.01)
    assert line_device.connection_count == 0


@pytest_twisted.inlineCallbacks
def test_nodelay_and_keepalive_are_on(line_device):
    def body():
        with line_interface(line_device) as dev:
            sock = dev._link._factory.current.transport.getHandle()
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_trace_logs_io_at_debug_level(line_device):
    from twisted.logger import LogLevel, globalLogPublisher
    events = []
    globalLogPublisher.addObserver(events.append)

    def body():
        with line_interface(line_device, trace=True) as dev:
            dev.query('traced')
    try:
        yield in_worker(body)
    finally:
        globalLogPublisher.removeObserver(events.append)
    traced = [e for e in events if e.get('log_level') is LogLevel.debug and b'traced' in
              repr(e.get('data', b'')).encode()]
    assert traced, 'no debug trace of the I/O'


@pytest_twisted.inlineCallbacks
def test_factory_deferred_api_in_the_reactor_thread(line_device):
    from socs_tcp import DeviceClientFactory
    factory = DeviceClientFactory('127.0.0.1', line_device.port, connect_timeout=1)
    try:
        proto = yield factory.whenConnected(timeout=2)
        assert proto is factory.current and factory.state.value == 'connected'
        reply = yield factory.query(b'hi\n', terminator=b'\n', timeout=1)
        assert reply == b'hi'
        line_device.set_silent(True)
        with pytest.raises(DeviceTimeout):
            yield factory.query(b'lost\n', terminator=b'\n', timeout=0.2)
        line_device.set_silent(False)
        reply = yield factory.query(b'again\n', terminator=b'\n', timeout=1)
        assert reply == b'again'
        assert factory.stats.connects == 2  # the timed-out connection was dropped
    finally:
        yield factory.close()


@pytest_twisted.inlineCallbacks
def test_a_forgotten_interface_closes_its_connection(line_device):
    import gc

    def body():
        dev = line_interface(line_device)
        assert dev.query('x') == b'x'
        factory = dev._link._factory
        del dev
        gc.collect()
        deadline = time.monotonic() + 2
        while line_device.connection_count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert line_device.connection_count == 0
        assert factory.state.value == 'closed'  # and it does not reconnect
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_a_failing_on_connect_drops_the_connection_and_is_retried_on_the_next_call(line_device):
    calls = []

    def flaky_init(dev):
        calls.append(dev.stats['connects'])
        if len(calls) == 1:
            raise ValueError('device answered garbage to its init')

    def body():
        dev = line_interface(line_device, on_connect=flaky_init)  # construction never raises
        assert dev.query('after init') == b'after init'
        assert calls == [1, 2]  # the hook ran again, on a new connection
        dev.close()
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_send_recv_drivers_never_read_a_late_reply_either(line_device):
    """The seed's pattern (send, then recv) after a recv timeout: socs.tcp returns the late reply."""
    def body():
        with line_interface(line_device, timeout=0.15) as dev:
            line_device.blocking.set_delay(0.3)
            dev.send(b'first\n')
            with pytest.raises(DeviceTimeout):
                dev.recv()
            line_device.blocking.set_delay(0)
            dev.send(b'second\n')  # on a fresh connection: 'first' can no longer arrive here
            time.sleep(0.3)        # long enough for the late reply to land, if it could
            assert dev.read_until(b'\n') == b'second\n'
            assert dev.stats['connects'] == 2
            # a late reply that *was* read (a polling loop) leaves the connection alone
            line_device.blocking.set_delay(0.2)
            dev.send(b'slow\n')
            with pytest.raises(DeviceTimeout):
                dev.recv()
            assert dev.read_until(b'\n', timeout=1) == b'slow\n'
            line_device.blocking.set_delay(0)
            assert dev.query('third') == b'third'
            assert dev.stats['connects'] == 2
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_on_connect_io_ends_within_the_deadline_of_the_call_that_connected(line_device):
    def wait_for_a_prompt_that_never_comes(dev):
        dev.read_until(b'>')                 # the interface's own timeout (3 s) would apply

    def body():
        # Construction runs the hook: it times out (logged), its connection is dropped.
        dev = line_interface(line_device, timeout=0.2, on_connect=wait_for_a_prompt_that_never_comes)
        dev.timeout = 3
        error, took = timed(dev.query, 'x', timeout=0.5)   # reconnects: the hook runs again
        assert isinstance(error, ConnectionError), error
        assert took < 0.5 + MARGIN, took
        dev.close()
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_an_on_connect_that_drains_an_optional_prompt_does_not_make_requests_reconnect(line_device):
    def drain_prompt_if_any(dev):
        try:
            dev.read_until(b'>', timeout=0.05)
        except DeviceTimeout:
            pass                             # this device sends no prompt: fine

    def body():
        with line_interface(line_device, on_connect=drain_prompt_if_any) as dev:
            for i in range(6):
                assert dev.query(f'q{i}') == f'q{i}'.encode()
            assert dev.stats['connects'] == 1 and dev.stats['disconnects'] == 0
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_recv_reset_on_error_drops_the_connection_it_read_on_while_no_other_call_runs(line_device,
                                                                                      monkeypatch):
    from socs_tcp._link_channel import LinkChannel
    resets = []
    real_reset = LinkChannel._reset

    def record(self, generation, why):
        resets.append((generation, self._bridge.generation, self._lock.locked()))
        return real_reset(self, generation, why)
    monkeypatch.setattr(LinkChannel, '_reset', record)

    def body():
        with line_interface(line_device, timeout=0.1) as dev:
            with pytest.raises(DeviceTimeout):
                dev.recv(reset_on_error=True)
    yield in_worker(body)
    # under the interface's lock: no other thread can have connected anew in between
    assert len(resets) == 1 and resets[0][0] == resets[0][1] and resets[0][2] is True


@pytest_twisted.inlineCallbacks
def test_reactor_code_never_glues_a_query_onto_a_message_cut_short():
    """A device stops reading in the middle of a long message: the next query goes out whole."""
    from socs_tcp import DeviceClientFactory
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(2)
    listener.settimeout(5)
    received = []

    def device():
        stalled, _ = listener.accept()            # takes the first connection, never reads it
        fresh, _ = listener.accept()
        with stalled, fresh:
            fresh.settimeout(5)
            line = b''
            while not line.endswith(b'\n'):
                line += fresh.recv(100)
            received.append(line)
            fresh.sendall(line)
    serving = threading.Thread(target=device)
    serving.start()
    factory = DeviceClientFactory('127.0.0.1', listener.getsockname()[1], connect_timeout=1)
    try:
        with pytest.raises(DeviceTimeout):
            yield factory.query(b'A' * (32 << 20) + b'\n', terminator=b'\n', timeout=0.3)
        reply = yield factory.query(b'*IDN?\n', terminator=b'\n', timeout=2)
        assert reply == b'*IDN?' and received == [b'*IDN?\n']
    finally:
        yield factory.close()
        yield in_worker(serving.join, 5)
        listener.close()


@pytest_twisted.inlineCallbacks
def test_on_connect_gets_a_handle_and_a_driver_hook_may_call_the_interface_itself(line_device):
    from socs_tcp import ConnectionHandle
    seen = []

    class Driver(TCPInterface):
        def __init__(self, port):
            super().__init__('127.0.0.1', port, 2, read_termination=b'\n', write_termination=b'\n',
                             on_connect=self.initialise)

        def initialise(self, handle):
            start = time.monotonic()
            seen.append((type(handle), handle.interface is self, handle.deadline - start,
                         self.query('*IDN?'), handle.query('*RST')))   # the interface, then the handle

    def body():
        dev = Driver(line_device.port)
        try:
            assert dev.query('ready') == b'ready'
        finally:
            dev.close()
    yield in_worker(body)
    assert len(seen) == 1
    kind, same, left, idn, rst = seen[0]
    assert kind is ConnectionHandle and same and 0 < left <= 2 and (idn, rst) == (b'*IDN?', b'*RST')


@pytest_twisted.inlineCallbacks
def test_calls_in_on_connect_are_bound_to_its_connection_and_never_make_another(line_device):
    connects_in_hook = []

    def hook(dev):
        connects_in_hook.append(dev.stats['connects'])
        if len(connects_in_hook) == 1:
            line_device.blocking.drop_connections()    # the device hangs up during the hook
            deadline = time.monotonic() + 2
            while dev.connected and time.monotonic() < deadline:
                time.sleep(0.005)
            try:
                dev.send('init')                       # must fail, not connect anew inside the hook
            except ConnectionError as exc:
                failed.append((exc, dev.stats['connects']))
                raise

    failed = []

    def body():
        dev = line_interface(line_device, on_connect=hook)   # construction: the hook fails, logged
        try:
            assert dev.query('after') == b'after'              # a new connection, a new hook run
            assert connects_in_hook == [1, 2]
            assert len(failed) == 1 and failed[0][1] == 1 and 'on_connect' in str(failed[0][0])
        finally:
            dev.close()
    yield in_worker(body)
