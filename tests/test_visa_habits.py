"""write()/read() with pyvisa's meaning; send()/recv() stay socs.tcp-exact (real TCP on 127.0.0.1).

The reactor runs in the main thread (pytest-twisted), as in an OCS agent; each
test body runs in a worker thread, as an OCS blocking task does.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import threading

import pytest
import pytest_twisted

from socs_tcp import DeviceTimeout, TCPInterface
from tests.conftest import in_worker


def in_a_worker(fn):
    """Run the test body in a worker thread while the reactor runs."""
    @pytest_twisted.inlineCallbacks
    @functools.wraps(fn)
    def test(*args, **kwargs):
        yield in_worker(fn, *args, **kwargs)
    return test


T = TCPInterface   # write()/read() are TCPInterface's own (VisaHabits is among its bases)


class Device:
    """A TCP device that records every byte and answers each '\\n'-line with a canned reply."""

    def __init__(self, reply=b'+5.000\n'):
        self.reply = reply
        self.received = bytearray()
        self.got = threading.Condition()
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.listener.accept()
        with conn, contextlib.suppress(ConnectionError):   # the client may reset on close
            while data := conn.recv(4096):
                with self.got:
                    self.received += data
                    self.got.notify_all()
                for _ in range(data.count(b'\n')):
                    conn.sendall(self.reply)

    def wait_bytes(self, n, timeout=5):
        with self.got:
            assert self.got.wait_for(lambda: len(self.received) >= n, timeout), bytes(self.received)
            return bytes(self.received)

    def close(self):
        self.listener.close()


@pytest.fixture
def device():
    dev = Device()
    yield dev
    dev.close()


@in_a_worker
def test_write_appends_the_write_termination_and_read_strips_the_read_termination(device):
    with T('127.0.0.1', device.port, timeout=3, read_termination='\n', write_termination='\r\n') as dev:
        assert dev.write('MEAS:VOLT?') == len(b'MEAS:VOLT?\r\n')
        assert device.wait_bytes(12) == b'MEAS:VOLT?\r\n'
        reply = dev.read()
        assert reply == '+5.000' and isinstance(reply, str)


@in_a_worker
def test_send_and_recv_stay_socs_tcp_exact(device):
    with T('127.0.0.1', device.port, timeout=3, read_termination='\n', write_termination='\r\n') as dev:
        dev.send('MEAS:VOLT?\n')          # no termination added
        assert device.wait_bytes(11) == b'MEAS:VOLT?\n'
        assert dev.recv().startswith(b'+5')   # bytes, as received


@in_a_worker
def test_write_warns_and_still_appends_when_the_message_ends_with_it(device):
    with T('127.0.0.1', device.port, timeout=3, write_termination='\n') as dev:
        with pytest.warns(UserWarning, match='already ends with termination'):
            dev.write('*RST\n')
        assert device.wait_bytes(6) == b'*RST\n\n'


@in_a_worker
def test_per_call_termination_encoding_and_bytes(device):
    with T('127.0.0.1', device.port, timeout=3, read_termination=b'\n') as dev:
        dev.write(b'A', termination=b'\n')
        assert dev.read(termination='.000\n') == '+5'
        dev.write('\u00b5', termination='\n', encoding='latin-1')
        assert device.wait_bytes(4) == b'A\n\xb5\n'


@in_a_worker
def test_read_needs_a_termination_and_times_out_keeping_input(device):
    with T('127.0.0.1', device.port, timeout=3) as dev:
        with pytest.raises(ValueError, match='read_termination'):
            dev.read()
        with pytest.raises(TypeError, match='message'):
            dev.write(5)
        dev.write('X', termination='\n')
        with pytest.raises(DeviceTimeout):
            dev.read(termination='#', timeout=0.3)
        assert dev.read(termination='\n') == '+5.000'
