"""DeviceClientFactory's states, retry policy and shared retry timer, on a fake reactor and clock.

Real TCP is exercised in test_interface.py; here the clock is ours, so the
backoff can be checked without sleeping.
"""

from unittest import mock

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from socs_tcp import Backoff, DeviceClientFactory, NotConnected
from socs_tcp._retry import BATCH, RetryTimer, grid_step, retry_timer
from socs_tcp._state import TRANSITIONS, CloseRequest, Connected, LinkEvent, LinkState, Waiting


def refused(factory, reactor):
    factory.clientConnectionFailed(reactor.connectors[-1], Failure(ConnectionRefusedError()))


def scheduled_wait(factory, reactor):
    """Seconds from now until the link's scheduled retry."""
    assert isinstance(factory._state, Waiting)
    return factory._state.retry.due - reactor.seconds()


def retry_fires(factory, reactor):
    """Let the shared retry timer run the link's retry: a new attempt starts."""
    reactor.advance(scheduled_wait(factory, reactor))
    assert factory.state is LinkState.CONNECTING


def lost(factory, reactor):
    factory.clientConnectionLost(reactor.connectors[-1], Failure(ConnectionLost()))


def connect(factory):
    """Complete a connection attempt with an in-memory transport."""
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    transport.setTcpNoDelay = mock.Mock()
    transport.setTcpKeepAlive = mock.Mock()
    transport.getHandle = mock.Mock(return_value=mock.MagicMock())
    proto.makeConnection(transport)
    return proto, transport


def on_grid(wait, delay):
    """``wait`` is ``delay`` rounded up to its grid (at most one grid step more)."""
    return delay - 1e-9 <= wait <= delay + grid_step(delay) + 1e-9


@pytest.fixture
def reactor():
    return MemoryReactorClock()


def test_delays_grow_to_the_cap_and_reset_after_a_success(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, backoff=Backoff(initial=0.1, factor=2, max_delay=1,
                                                                  jitter=0), reactor=reactor)
    factory.start()
    for expected in (0.1, 0.2, 0.4, 0.8, 1.0, 1.0):
        refused(factory, reactor)
        assert factory.state is LinkState.WAITING
        assert on_grid(scheduled_wait(factory, reactor), expected)
        retry_fires(factory, reactor)
    connect(factory)
    assert factory.state is LinkState.CONNECTED
    assert factory.delay == pytest.approx(0.1)  # resetDelay() on success


def test_the_factory_retry_fields_come_from_the_backoff(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, backoff=Backoff(initial=0.3, factor=3, max_delay=7,
                                                                  jitter=0.2), reactor=reactor)
    assert (factory.initialDelay, factory.delay, factory.factor, factory.maxDelay, factory.jitter) == \
        (0.3, 0.3, 3, 7, 0.2)


def test_jitter_spreads_the_delays(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, backoff=Backoff(initial=1, factor=1, max_delay=1,
                                                                  jitter=0.2), reactor=reactor)
    factory.start()
    delays = set()
    for _ in range(20):
        refused(factory, reactor)
        delay = scheduled_wait(factory, reactor)
        delays.add(round(delay, 6))
        retry_fires(factory, reactor)
    assert len(delays) >= 3                      # several slots of the 1/8 s grid
    assert all(0.8 <= d <= 1.2 + grid_step(1) for d in delays)


def test_connect_now_skips_the_backoff_wait(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, backoff=Backoff(initial=5, max_delay=60),
                                  reactor=reactor)
    factory.start()
    refused(factory, reactor)
    assert factory.state is LinkState.WAITING and len(factory.retry_timer) == 1
    factory.connector.connect = mock.Mock()
    factory.connect_now()
    factory.connector.connect.assert_called_once_with()
    assert factory.state is LinkState.CONNECTING
    assert len(factory.retry_timer) == 0         # the pending retry was cancelled
    reactor.advance(60)
    factory.connector.connect.assert_called_once_with()


def test_a_connection_aborted_to_reconnect_is_replaced_only_after_it_is_lost(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    factory.start()
    proto, transport = connect(factory)
    factory.reconnect(proto.generation, 'test')
    assert factory.state is LinkState.RECONNECTING and transport.disconnecting
    factory.connect_now()
    assert factory.state is LinkState.RECONNECTING  # not two connections at once
    connector = reactor.connectors[-1]
    connector.connect = mock.Mock()
    lost(factory, reactor)
    connector.connect.assert_called_once_with()
    assert factory.state is LinkState.CONNECTING


def test_reconnect_ignores_a_connection_that_is_no_longer_current(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    factory.start()
    proto, transport = connect(factory)
    factory.reconnect(proto.generation - 1, 'an earlier connection timed out')
    assert factory.state is LinkState.CONNECTED and not transport.disconnecting


def test_when_connected_fires_on_connect_and_fails_after_failures(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    waiting = factory.whenConnected()
    failing = factory.whenConnected(failAfterFailures=1)
    refused(factory, reactor)
    errors = []
    failing.addErrback(errors.append)
    assert errors and errors[0].check(NotConnected)
    results = []
    waiting.addCallback(results.append)
    assert results == []
    retry_fires(factory, reactor)
    proto, _ = connect(factory)
    assert results == [proto]


def test_callbacks_fired_by_a_transition_see_the_new_state(reactor):
    """A waiter's callback that asks again is answered at once, not left waiting for a next connection."""
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    again = []
    factory.whenConnected().addCallback(lambda proto: factory.whenConnected().addCallback(again.append))
    proto, _ = connect(factory)
    assert again == [proto]
    assert factory.waiters == []


def test_an_event_sent_by_a_callback_is_applied_after_the_action(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    closed = []
    factory.whenConnected().addCallback(lambda proto: factory.close().addCallback(closed.append))
    proto, transport = connect(factory)
    assert factory.state is LinkState.CLOSING and transport.disconnecting
    lost(factory, reactor)
    assert factory.state is LinkState.CLOSED and closed == [None]


def test_close_stops_retries_and_fails_waiters(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    factory.start()
    refused(factory, reactor)
    waiting = factory.whenConnected()
    done = []
    factory.close().addCallback(done.append)
    errors = []
    waiting.addErrback(errors.append)
    assert errors and errors[0].check(NotConnected)
    assert factory.state is LinkState.CLOSED and done == [None]
    assert len(factory.retry_timer) == 0


def test_close_while_connected_fires_once_the_connection_is_lost(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    factory.start()
    proto, transport = connect(factory)
    first, second = [], []
    factory.close().addCallback(first.append)
    factory.close().addCallback(second.append)
    assert factory.state is LinkState.CLOSING and transport.disconnecting
    assert first == second == []
    lost(factory, reactor)
    assert factory.state is LinkState.CLOSED and first == second == [None]
    assert factory.whenConnected().addErrback(lambda f: f.check(NotConnected)).result


def test_comm_close_releases_the_link_until_a_call_needs_it(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    factory.start()
    proto, transport = connect(factory)
    factory.release('comm.close() called')
    assert factory.state is LinkState.RELEASING and transport.disconnecting
    lost(factory, reactor)
    assert factory.state is LinkState.IDLE
    assert len(factory.retry_timer) == 0         # nothing reconnects in the background
    factory.connector.connect = mock.Mock()
    factory.connect_now()
    factory.connector.connect.assert_called_once_with()
    assert factory.state is LinkState.CONNECTING


def test_a_connection_that_completes_after_close_is_not_kept(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    factory.start()
    factory.close()
    proto, transport = connect(factory)
    assert factory.state is LinkState.CLOSED and transport.disconnecting
    assert factory.current is None and not factory.bridge.connected


# -- the table -----------------------------------------------------------------

def factory_in(state: LinkState, reactor):
    """A factory driven into ``state`` by real events."""
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    if state is LinkState.CLOSED:
        factory.close()
    elif state is not LinkState.IDLE:
        factory.start()
        if state is LinkState.WAITING:
            refused(factory, reactor)
        elif state is not LinkState.CONNECTING:
            proto, _ = connect(factory)
            if state is LinkState.RECONNECTING:
                factory.reconnect(proto.generation, 'test')
            elif state is LinkState.RELEASING:
                factory.release('test')
            elif state is LinkState.CLOSING:
                factory.close()
    assert factory.state is state
    return factory


def send(factory, event: LinkEvent, reactor):
    """Send ``event`` with the detail it carries."""
    if event is LinkEvent.MADE:
        connect(factory)
        return
    detail = {LinkEvent.FAILED: Failure(ConnectionRefusedError()), LinkEvent.LOST: Failure(ConnectionLost()),
              LinkEvent.RECONNECT: 'test', LinkEvent.RELEASE: 'test',
              LinkEvent.CLOSE: CloseRequest('closed', Deferred())}.get(event)
    factory.handle(event, detail)


def test_every_state_and_event_follows_the_table(reactor):
    """Drive every (state, event) pair; the state data belongs to its state only."""
    for state in LinkState:
        for event in LinkEvent:
            factory = factory_in(state, reactor)
            send(factory, event, reactor)
            expected = TRANSITIONS.get((state, event), (state, None))[0]
            assert factory.state is expected, (state, event)
            assert factory.bridge.snapshot()['state'] == expected.value, (state, event)
            # per-state data: a protocol only while connected, a pending retry only while waiting
            assert (factory.current is not None) == (expected is LinkState.CONNECTED), (state, event)
            assert (len(factory.retry_timer) == 1) == (expected is LinkState.WAITING), (state, event)
            factory.close()
            lost(factory, reactor)
            assert factory.state is LinkState.CLOSED


def test_each_action_is_a_function_of_the_state_module():
    for (state, event), (_, action) in TRANSITIONS.items():
        assert callable(action) and not isinstance(action, str), (state, event)
        assert action.__module__ == 'socs_tcp._state', (state, event)


def test_the_protocol_belongs_to_the_connected_state(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    factory.start()
    proto, _ = connect(factory)
    assert factory._state == Connected(proto) and factory.current is proto
    lost(factory, reactor)
    assert isinstance(factory._state, Waiting) and factory.current is None
    assert not hasattr(factory._state, 'protocol')


def test_a_large_jitter_spreads_each_wait_but_never_makes_it_negative(reactor):
    """Twisted's Gaussian jitter could draw a negative delay: callLater refused it, no retry came."""
    factory = DeviceClientFactory('127.0.0.1', 7, backoff=Backoff(initial=1, factor=2, max_delay=8,
                                                                  jitter=0.9), reactor=reactor)
    factory.start()
    for attempt in range(200):
        refused(factory, reactor)
        delay = scheduled_wait(factory, reactor)
        base = min(2 ** attempt, 8)                # the growth itself is not jittered
        assert 0.1 * base <= delay <= 1.9 * base + grid_step(1.9 * base), (attempt, delay)
        retry_fires(factory, reactor)


def test_an_attempt_stopped_by_comm_close_is_not_counted_as_a_failure(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    factory.start()
    failures = factory.bridge.failures()
    factory.release('comm.close() called')        # stops the attempt under way ...
    factory.clientConnectionFailed(reactor.connectors[-1],
                                   Failure(ConnectionRefusedError('User aborted connection')))
    assert factory.state is LinkState.IDLE
    assert factory.bridge.failures() == failures   # ... so a caller waiting to connect waits on
    assert factory.stats.connect_failures == 0


def test_a_connection_lost_while_it_was_being_set_up_is_retried(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    factory.start()
    lost(factory, reactor)                         # e.g. connectionMade failed
    assert factory.state is LinkState.WAITING
    assert len(factory.retry_timer) == 1           # not stuck in connecting for good


# -- the shared retry timer -----------------------------------------------------------

def down_links(reactor, count, **backoff):
    """``count`` links to a device that refuses them, each waiting for its retry."""
    links = [DeviceClientFactory('127.0.0.1', 7, reactor=reactor, backoff=Backoff(**backoff))
             for _ in range(count)]
    for link in links:
        link.start()
        link.connector.connect = mock.Mock()
        link.clientConnectionFailed(link.connector, Failure(ConnectionRefusedError()))
    return links


def test_many_waiting_links_share_one_reactor_timer_and_one_wake_up(reactor):
    links = down_links(reactor, 24, initial=2, jitter=0.2)   # fewer than one batch of the rate cap
    assert len(reactor.getDelayedCalls()) == 1     # not one reactor timer per link
    assert retry_timer(reactor) is links[0].retry_timer
    dues = sorted({link._state.retry.due for link in links})
    assert len(dues) <= 8                          # a few slots of the grid, not one per link
    slot = [link for link in links if link._state.retry.due == dues[0]]
    reactor.advance(dues[0] - reactor.seconds())   # one wake-up ...
    assert all(link.connector.connect.call_count == 1 for link in slot)  # ... serves the whole slot
    assert len(reactor.getDelayedCalls()) == 1


@pytest.mark.parametrize('delay', [0.01, 0.25, 1.0, 3.3, 30.0, 600.0])
def test_due_times_lie_on_a_grid_that_grows_with_the_delay(delay):
    clock = Clock()
    clock.advance(1234.567)
    timer = RetryTimer(clock)
    retry = timer.schedule(delay, lambda: None)
    step = grid_step(delay)
    assert abs(retry.due / step - round(retry.due / step)) < 1e-6
    assert clock.seconds() + delay <= retry.due < clock.seconds() + delay + step
    assert step <= max(delay / 8, 1 / 64) and (step >= delay / 16 or step == 4.0)


def test_background_attempts_are_capped_per_second():
    clock = Clock()
    rate = 40
    timer = RetryTimer(clock, rate=rate)
    ran = []
    for n in range(400):
        timer.schedule(1.0, lambda n=n: ran.append((n, clock.seconds())))
    clock.advance(1.0)
    assert len(ran) == int(rate * BATCH)           # one batch now, ...
    for _ in range(1100):
        clock.advance(0.01)
    assert len(ran) == 400
    times = [t for _, t in ran]
    for start in range(1, 10):                     # ... then at most the rate in any second
        assert sum(start <= t < start + 1 for t in times) <= rate + rate * BATCH
    assert [n for n, _ in ran] == list(range(400))  # oldest due first
    assert len(clock.getDelayedCalls()) == 0


def test_a_late_wake_up_does_not_lower_the_rate():
    """A busy reactor runs the timer late: the attempts of that time still run, in the next batch."""
    clock = Clock()
    rate = 40
    timer = RetryTimer(clock, rate=rate)
    ran = []
    for _ in range(400):
        timer.schedule(1.0, lambda: ran.append(clock.seconds()))
    while clock.seconds() < 11.0:
        clock.advance(0.3)                         # every wake-up late (batches are 0.25 s apart)
    assert len(ran) == 400


def test_a_call_that_needs_the_device_is_never_capped(reactor):
    links = down_links(reactor, 300, initial=1, jitter=0)
    reactor.advance(max(link._state.retry.due for link in links) - reactor.seconds())
    waiting = [link for link in links if link.state is LinkState.WAITING]
    assert waiting                                 # the cap held some background retries back
    for link in waiting:
        link.connect_now()                         # a call needs the device: connects at once
        assert link.state is LinkState.CONNECTING
        link.connector.connect.assert_called_with()


def test_the_first_retries_after_a_device_goes_down_are_spread(reactor):
    links = [DeviceClientFactory('127.0.0.1', 7, reactor=reactor, backoff=Backoff(initial=1))
             for _ in range(100)]
    for link in links:
        link.start()
        connect(link)
    for link in links:                             # the device went down: every connection lost at once
        lost(link, reactor)
    waits = [scheduled_wait(link, reactor) for link in links]
    assert min(waits) < 0.65 and max(waits) > 1.35  # over +-50 %, not the +-10 % of later retries
    assert len({round(w, 6) for w in waits}) >= 7
