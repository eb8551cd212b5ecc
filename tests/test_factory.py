"""DeviceClientFactory's retry policy and states, on a fake reactor and clock.

Real TCP is exercised in test_interface.py; here the clock is ours, so the
backoff can be checked without sleeping.
"""

from unittest import mock

import pytest
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from socs_tcp import Backoff, DeviceClientFactory, NotConnected
from socs_tcp._state import TRANSITIONS, LinkEvent, LinkState


def refused(factory, reactor):
    factory.clientConnectionFailed(reactor.connectors[-1], Failure(ConnectionRefusedError()))


def retry_fires(factory, reactor, delay):
    """Let the backoff timer fire; the connector starts its attempt, as a real one does."""
    reactor.advance(delay)
    factory.startedConnecting(reactor.connectors[-1])


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


@pytest.fixture
def reactor():
    return MemoryReactorClock()


def test_delays_grow_to_the_cap_and_reset_after_a_success(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, backoff=Backoff(initial=0.1, factor=2, max_delay=1,
                                                                  jitter=0), reactor=reactor)
    factory.start()
    delays = []
    for _ in range(6):
        refused(factory, reactor)
        assert factory.state is LinkState.WAITING
        delays.append(reactor.getDelayedCalls()[0].getTime() - reactor.seconds())
        retry_fires(factory, reactor, delays[-1])
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    connect(factory)
    assert factory.state is LinkState.CONNECTED
    assert factory.delay == pytest.approx(0.1)  # resetDelay() on success


def test_jitter_spreads_the_delays(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, backoff=Backoff(initial=1, factor=1, max_delay=1,
                                                                  jitter=0.2), reactor=reactor)
    factory.start()
    delays = set()
    for _ in range(10):
        refused(factory, reactor)
        delay = reactor.getDelayedCalls()[0].getTime() - reactor.seconds()
        delays.add(round(delay, 6))
        retry_fires(factory, reactor, delay)
    assert len(delays) > 5
    assert all(0.2 < d < 1.8 for d in delays)


def test_connect_now_skips_the_backoff_wait(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, backoff=Backoff(initial=5, max_delay=60),
                                  reactor=reactor)
    factory.start()
    refused(factory, reactor)
    assert factory.state is LinkState.WAITING
    assert len(reactor.getDelayedCalls()) == 1
    factory.connector.connect = mock.Mock()
    factory.connect_now()
    factory.connector.connect.assert_called_once_with()
    assert factory.state is LinkState.CONNECTING
    assert reactor.getDelayedCalls() == []  # the pending retry was cancelled


def test_a_dropped_connection_is_reconnected_only_after_it_is_gone(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    factory.start()
    proto, transport = connect(factory)
    factory.drop(proto.generation, 'test')
    assert factory.state is LinkState.DROPPING and transport.disconnecting
    factory.connect_now()
    assert factory.state is LinkState.DROPPING  # not two connections at once
    connector = reactor.connectors[-1]
    connector.connect = mock.Mock()
    lost(factory, reactor)
    connector.connect.assert_called_once_with()
    assert factory.state is LinkState.CONNECTING


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
    retry_fires(factory, reactor, reactor.getDelayedCalls()[0].getTime() - reactor.seconds())
    proto, _ = connect(factory)
    assert results == [proto]


def test_close_stops_retries_and_fails_waiters(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    factory.start()
    refused(factory, reactor)
    waiting = factory.whenConnected()
    factory.close()
    errors = []
    waiting.addErrback(errors.append)
    assert errors and errors[0].check(NotConnected)
    assert factory.state is LinkState.CLOSED
    assert reactor.getDelayedCalls() == []


def test_comm_close_rests_the_link_until_a_call_needs_it(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    factory.start()
    proto, transport = connect(factory)
    factory.rest('comm.close() called')
    assert factory.state is LinkState.RESTING and transport.disconnecting
    lost(factory, reactor)
    assert factory.state is LinkState.IDLE
    assert reactor.getDelayedCalls() == []  # nothing reconnects in the background
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


def test_the_state_changes_only_by_the_table(reactor):
    """Every (state, event) pair either has a row or changes nothing: drive them all."""
    for state in LinkState:
        for event in LinkEvent:
            factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
            factory.state = state
            for name in ('_attempt', '_attempt_now', '_retry_later', '_cancel_retry', '_adopt', '_abort',
                         '_refuse'):
                setattr(factory, name, mock.Mock(name=name))
            factory.handle(event, 'detail')
            expected, action = TRANSITIONS.get((state, event), (state, None))
            assert factory.state is expected, (state, event)
            assert factory.bridge.snapshot()['state'] == (expected.value if (state, event) in TRANSITIONS
                                                          else 'idle')
            if action is not None:
                getattr(factory, action).assert_called_once_with('detail')


def test_a_large_jitter_spreads_each_wait_but_never_makes_it_negative(reactor):
    """Twisted's Gaussian jitter could draw a negative delay: callLater refused it, no retry came."""
    factory = DeviceClientFactory('127.0.0.1', 7, backoff=Backoff(initial=1, factor=2, max_delay=8,
                                                                  jitter=0.9), reactor=reactor)
    factory.start()
    for attempt in range(200):
        refused(factory, reactor)
        delay = reactor.getDelayedCalls()[0].getTime() - reactor.seconds()
        base = min(2 ** attempt, 8)                # the growth itself is not jittered
        assert 0.1 * base <= delay <= 1.9 * base, (attempt, delay)
        retry_fires(factory, reactor, delay)


def test_an_attempt_stopped_by_comm_close_is_not_counted_as_a_failure(reactor):
    factory = DeviceClientFactory('127.0.0.1', 7, reactor=reactor)
    factory.start()
    failures = factory.bridge.failures()
    factory.rest('comm.close() called')            # stops the attempt under way ...
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
    assert len(reactor.getDelayedCalls()) == 1     # not stuck in connecting for good
