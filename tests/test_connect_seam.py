"""Construction goes through ``self._connect((ip, port))``, the seam SOCS's tests patch.

SOCS's unit tests replace ``socs.tcp.TCPInterface._connect`` with a mock: a
fake socket comes back and the driver talks to it, or the mock raises and
construction fails. Both must mean the same with socs_tcp as the base class.
"""

from __future__ import annotations

import socket
import time
from unittest import mock

import pytest
import pytest_twisted

from socs_tcp import DeviceDisconnected, DeviceTimeout, TCPInterface
from tests.conftest import in_worker
from tests.test_interface import free_port


@pytest_twisted.inlineCallbacks
def test_construction_connects_through_connect_which_returns_comm_or_none(line_device):
    seen = []

    class Driver(TCPInterface):
        def _connect(self, address):
            seen.append(address)
            return super()._connect(address)

    def body():
        up = Driver('127.0.0.1', line_device.port, 1)
        assert seen == [('127.0.0.1', line_device.port)] and up.comm is not None
        up.close()
        down = Driver('127.0.0.1', free_port(), 1)        # logged, not raised: None, as socs.tcp
        assert down.comm is None
        down.close()
    yield in_worker(body)


def test_a_patched_connect_hands_the_driver_its_fake_socket():
    fake = mock.MagicMock()
    fake.recv.return_value = b'+293.873E+00\r\n'
    with mock.patch.object(TCPInterface, '_connect', mock.MagicMock(return_value=fake)) as seam:
        dev = TCPInterface('127.0.0.1', 7777, 10)
        dev.send(b'KRDG? 1\r\n')
        assert dev.recv() == b'+293.873E+00\r\n'
        assert dev.query(b'KRDG? 1\r\n', terminator=b'\r\n') == b'+293.873E+00'
    seam.assert_called_once_with(('127.0.0.1', 7777))
    assert dev.comm is fake and dev.connected
    fake.sendall.assert_called_with(b'KRDG? 1\r\n')
    assert dev.stats['connects'] == 0                     # the reactor's link was never used
    dev.close()


def test_a_fake_socket_that_fails_is_a_connection_error_and_reconnects_through_the_seam():
    broken, spare = mock.MagicMock(), mock.MagicMock()
    broken.sendall.side_effect = BrokenPipeError('fake pipe')
    broken.recv.return_value = b''                      # a peer that closed
    with mock.patch.object(TCPInterface, '_connect', mock.MagicMock(side_effect=[broken, spare])):
        dev = TCPInterface('127.0.0.1', 7777, 10)
        with pytest.raises(DeviceDisconnected):
            dev.recv()                                  # b'' is a disconnect, not data
        dev.send(b'x')                                  # fails on broken, then goes to spare
    broken.close.assert_called_once_with()
    spare.sendall.assert_called_once_with(b'x')
    assert dev.comm is spare
    dev.close()


def test_a_patched_connect_that_raises_makes_construction_raise_as_with_socs_tcp():
    with mock.patch.object(TCPInterface, '_connect', mock.Mock(side_effect=RuntimeError('Unhandled error'))):
        with pytest.raises(RuntimeError, match='Unhandled error'):
            TCPInterface('127.0.0.1', 7777, 10)


def test_recv_on_a_real_socket_from_a_patched_connect_is_bounded_by_the_timeout():
    ours, device = socket.socketpair()
    try:
        with mock.patch.object(TCPInterface, '_connect', mock.MagicMock(return_value=ours)):
            dev = TCPInterface('127.0.0.1', 7777, 0.3)
        start = time.monotonic()
        with pytest.raises(DeviceTimeout):
            dev.recv()                                  # socs.tcp selects with its timeout first
        assert time.monotonic() - start < 0.3 + 0.25
        device.sendall(b'late\n')
        assert dev.recv() == b'late\n'
    finally:
        ours.close()
        device.close()


def test_a_fake_socket_keeps_what_came_beyond_a_frame_for_the_next_read():
    fake = mock.MagicMock()
    fake.recv.side_effect = [b'1.5\r\n2.5\r\n', b'3.5\r\n']
    with mock.patch.object(TCPInterface, '_connect', mock.MagicMock(return_value=fake)):
        dev = TCPInterface('127.0.0.1', 7777, 10)
    assert dev.read_until(b'\r\n') == b'1.5\r\n'
    assert dev.read_until(b'\r\n') == b'2.5\r\n'           # from the first recv, not lost
    assert dev.read_until(b'\r\n') == b'3.5\r\n'
    dev.close()
    fake.close.assert_called_once_with()


def test_a_fake_socket_that_streams_an_endless_reply_fails_naming_the_limit():
    fake = mock.MagicMock()
    fake.recv.return_value = b'x' * 4096                  # never a terminator
    with mock.patch.object(TCPInterface, '_connect', mock.MagicMock(return_value=fake)):
        dev = TCPInterface('127.0.0.1', 7777, 10, max_frame_length=10_000)
    with pytest.raises(DeviceDisconnected, match='max_frame_length=10000'):
        dev.query(b'DUMP?\n', terminator=b'\n')
    assert fake.recv.call_count == 3 and fake.close.called   # stopped just past the limit
