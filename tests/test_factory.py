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
from socs_tcp.factory import LinkState


def refused(factory, reactor):
    factory.clientConnectionFailed(reactor.connectors[-1], Failure(ConnectionRefusedError()))


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
        reactor.advance(delays[-1])
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
        reactor.advance(delay)
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
    factory.drop(proto, 'test')
    assert factory.state is LinkState.DISCONNECTING
    factory.connect_now()
    assert factory.state is LinkState.DISCONNECTING  # not two connections at once
    connector = reactor.connectors[-1]
    connector.connect = mock.Mock()
    proto.connectionLost(Failure(ConnectionLost()))
    factory.clientConnectionLost(connector, Failure(ConnectionLost()))
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
