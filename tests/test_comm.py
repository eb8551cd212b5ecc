"""Every way SOCS drivers use ``self.comm``, also between polls and during an outage.

SOCS drivers call ``self.comm.sendall/recv/close/settimeout`` and
``select.select([self.comm], ...)`` directly. With socs.tcp, ``comm`` is a
socket; with socs_tcp it must stay socket-like for the interface's life
(``None`` only before the first connection), fail with ``ConnectionError``
while the device is down, and work again once it is back.
"""

from __future__ import annotations

import gc
import select
import time

import pytest
import pytest_twisted

from socs_tcp import Backoff, TCPInterface
from socs_tcp.sim import DeviceServer
from tests.conftest import in_worker


def wait_until(condition, timeout: float = 2.0, what: str = 'the condition') -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.005)


@pytest_twisted.inlineCallbacks
def test_comm_stays_socket_like_through_an_outage_and_works_again_after(line_device):
    def body():
        with TCPInterface('127.0.0.1', line_device.port, 1,
                          backoff=Backoff(initial=0.05, max_delay=0.1)) as dev:
            comm = dev.comm
            comm.sendall(b'before\n')
            assert comm.recv(100) == b'before\n'
            line_device.blocking.stop_listening()
            line_device.blocking.drop_connections()
            wait_until(lambda: not dev.connected, what='the loss to land')
            assert dev.comm is comm                       # not None: drivers keep using it
            assert select.select([comm], [], [], 1)[0] == [comm]  # readable, as a dead socket
            with pytest.raises(ConnectionError):
                comm.recv(100)
            with pytest.raises(ConnectionError):
                comm.sendall(b'while down\n')             # refused: the device is away
            comm.settimeout(0.5)
            assert dev.timeout == 0.5 and comm.gettimeout() == 0.5
            line_device.blocking.start()
            comm.sendall(b'after\n')                      # reconnects, as send() does
            assert comm.recv(100) == b'after\n'
            assert select.select([comm], [], [], 0.05)[0] == []
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_comm_close_closes_and_nothing_reconnects_until_the_next_send(line_device):
    def body():
        dev = TCPInterface('127.0.0.1', line_device.port, 1, backoff=Backoff(initial=0.01, max_delay=0.02))
        dev.comm.close()                                  # what SOCS's PMX driver does in close()
        wait_until(lambda: dev.stats['state'] == 'idle' and line_device.connection_count == 0,
                   what='the connection to close')
        assert dev.stats['connects'] == 1                 # idle: no retry is even scheduled
        dev.send(b'again\n')
        assert dev.recv() == b'again\n'
        assert dev.stats['connects'] == 2
        dev.close()
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_a_device_that_takes_one_client_accepts_the_next_driver_after_comm_close():
    device = DeviceServer(lambda r: r, max_connections=1)
    device.start()

    def body():
        first = TCPInterface('127.0.0.1', device.port, 1)
        first.comm.close()
        first = None
        second = TCPInterface('127.0.0.1', device.port, 1)
        second.send(b'hello\n')
        assert second.recv() == b'hello\n'               # not refused by the one-client device
        second.close()
    try:
        yield in_worker(body)
    finally:
        yield device.stop()
    assert device.rejected_count == 0


@pytest_twisted.inlineCallbacks
def test_an_interface_nobody_references_closes_its_connection_at_once(line_device):
    def body():
        dev = TCPInterface('127.0.0.1', line_device.port, 1)
        comm = dev.comm
        assert line_device.connection_count == 1
        gc.disable()                                      # no cycle collector: refcounts alone
        try:
            del dev
            wait_until(lambda: line_device.connection_count == 0, what='the connection to close')
        finally:
            gc.enable()
        with pytest.raises(ConnectionError, match='gone'):
            comm.sendall(b'x')                            # a comm outliving its interface fails cleanly
    yield in_worker(body)


@pytest_twisted.inlineCallbacks
def test_comm_is_none_only_until_the_first_connection(line_device):
    port = line_device.port
    yield line_device.stop_listening()

    def body():
        dev = TCPInterface('127.0.0.1', port, 1, backoff=Backoff(initial=0.01, max_delay=0.05))
        assert dev.comm is None                           # the seed's case: the device was down
        line_device.blocking.start()
        wait_until(lambda: dev.connected, what='the background reconnect')
        assert dev.comm is not None
        dev.close()
    yield in_worker(body)


FORGOTTEN = """
    import gc, sys, time
    import socs_tcp
    socs_tcp.set_reactor_owner('background')   # a plain script: Twisted keeps its log events
    def hook(dev):
        raise ValueError('garbage at init')
    down = socs_tcp.TCPInterface('127.0.0.1', int(sys.argv[1]), 0.5)   # logs 'Unable to connect'
    failing = socs_tcp.TCPInterface('127.0.0.1', int(sys.argv[2]), 0.5, on_connect=hook)  # logs a failure
    links = [down._link._factory, failing._link._factory]
    del down, failing
    deadline = time.monotonic() + 2
    while any(f.state.value != 'closed' for f in links) and time.monotonic() < deadline:
        time.sleep(0.01)
    print([f.state.value for f in links])
"""


@pytest_twisted.inlineCallbacks
def test_an_interface_that_logged_is_still_collected_and_closed_in_a_plain_script(line_device):
    from tests.test_interface import free_port
    from tests.test_reactor_ownership import run_script
    rc, out, err, _ = yield in_worker(run_script, FORGOTTEN, free_port(), line_device.port)
    assert rc == 0, err
    assert "['closed', 'closed']" in out, out + err
