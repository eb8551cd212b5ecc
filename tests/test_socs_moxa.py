"""SOCS's Moxa drivers, unchanged, on socs_tcp's ``Serial_TCPServer``.

The wiregrid tilt sensor's DWL driver and the Kikusui ``PMX`` (both from the
socs package) talk through ``FakeBridge``, a Moxa-like serial server on
127.0.0.1 that takes one client and holds the instrument's output for the
next client. Each scenario is what the agents do: the tilt sensor agent
catches ``(ValueError, RuntimeError, TypeError)`` and rebuilds its driver
inside its ``except`` clause, while the old one is still alive.

On plain socs these fail: a peer close makes ``read`` spin for the whole
timeout, a bridge that is down makes the constructor raise, a late reply is
read as the answer to the next request, and the rebuilt driver's second
connection is turned away by the bridge.
"""

from __future__ import annotations

import importlib
import time

import pytest
import pytest_twisted

from socs_bridge_fakes import DWL, PMX, FakeBridge, Sherborne, free_port
from socs_tcp._socs import moxa
from socs_tcp._socs._byte_link import LinkTimeout
from socs_tcp.compat import CompatError
from tests.conftest import in_worker

TILT_CAUGHT = (ValueError, RuntimeError, TypeError)   # the tilt sensor agent's except clause


@pytest.fixture
def installed():
    moxa.install()
    yield
    moxa.uninstall()


@pytest.fixture
def bridges():
    started: list[FakeBridge] = []

    def make(instrument, port=0, start=True):
        bridge = FakeBridge(instrument, port)
        started.append(bridge)
        return bridge.start() if start else bridge

    yield make
    for bridge in started:
        bridge.stop()


def tilt_driver(port):
    from socs.agents.wiregrid_tiltsensor.drivers import connect
    return connect('127.0.0.1', port, 'DWL')   # timeout 0.5, as the agent uses it


def test_install_swaps_and_restores():
    mx = importlib.import_module('socs.common.moxa_serial')
    original = mx.Serial_TCPServer
    moxa.install()
    try:
        assert mx.Serial_TCPServer is moxa.SerialTCPServer
    finally:
        moxa.uninstall()
    assert mx.Serial_TCPServer is original


def test_install_refuses_another_shape(monkeypatch):
    mx = importlib.import_module('socs.common.moxa_serial')

    class Other:
        def __init__(self, address, timeout=1.0):
            pass

    monkeypatch.setattr(mx, 'Serial_TCPServer', Other)
    with pytest.raises(CompatError, match='Serial_TCPServer'):
        moxa.install()
    assert mx.Serial_TCPServer is Other


def test_bad_arguments_raise_at_once(installed):
    with pytest.raises(TypeError, match='port'):
        moxa.SerialTCPServer('127.0.0.1:4001', 0.5)
    with pytest.raises(ValueError, match='timeout'):
        moxa.SerialTCPServer(('127.0.0.1', 4001), 0)


@pytest_twisted.inlineCallbacks
def test_peer_close_during_read_does_not_spin(installed, bridges):
    instrument = DWL(x=1.5, y=-2.25)
    bridge = bridges(instrument)

    def scenario():
        sensor = tilt_driver(bridge.port)
        assert sensor.get_angle()[1] == (1.5, -2.25)
        instrument.delays = [None]          # the next request goes unanswered ...
        t0, cpu0 = time.monotonic(), time.thread_time()
        with_close = _after(0.1, bridge.drop_client)   # ... and the bridge hangs up meanwhile
        with pytest.raises(TILT_CAUGHT):
            sensor.get_angle()
        elapsed, cpu = time.monotonic() - t0, time.thread_time() - cpu0
        with_close.join()
        # socs: recv(MSG_PEEK) returns b'' at once, in a loop, for the whole timeout.
        assert cpu < 0.1, f'the read spun: {cpu:.3f} s of CPU'
        assert elapsed < 0.5 + 0.05 + 0.3
        # The agent's recovery: a new driver, while the old one is still alive.
        old, sensor = sensor, tilt_driver(bridge.port)
        instrument.x = 0.75
        assert sensor.get_angle()[1] == (0.75, -2.25)
        del old

    yield in_worker(scenario)
    assert bridge.rejected == 0


@pytest_twisted.inlineCallbacks
def test_late_reply_held_by_the_bridge_is_never_returned(installed, bridges):
    instrument = DWL(x=1.0, y=1.0)
    bridge = bridges(instrument)

    def scenario():
        sensor = tilt_driver(bridge.port)
        instrument.delays = [0.8]           # the first angle comes after the 0.5 s timeout
        with pytest.raises(TILT_CAUGHT):
            sensor.get_angle()
        instrument.x, instrument.y = 2.0, -3.0
        # As the agent does: the new driver is built while the old one (held by
        # the traceback) is alive; the bridge takes one client.
        old, sensor = sensor, tilt_driver(bridge.port)
        angles = sensor.get_angle()[1]
        assert angles == (2.0, -3.0), f'a late reply was returned: {angles}'
        del old
        assert sensor.get_angle()[1] == (2.0, -3.0)

    yield in_worker(scenario)
    assert bridge.rejected == 0


@pytest_twisted.inlineCallbacks
def test_late_reply_arriving_during_the_next_read_is_skipped(installed, bridges):
    instrument = DWL(x=1.0, y=1.0)
    bridge = bridges(instrument)

    def scenario():
        sensor = tilt_driver(bridge.port)
        sensor.get_angle()
        instrument.delays = [1.3]   # later than the timeout and the quiet drain after it
        t0 = time.monotonic()
        with pytest.raises(TILT_CAUGHT):
            sensor.get_angle()
        # socs: ~1.3 s, readbuf's recv() calls wait for the late reply, then TypeError.
        assert time.monotonic() - t0 < 0.5 + 0.05 + 0.3
        instrument.x = 4.0
        try:
            angles = sensor.get_angle()[1]
        except TILT_CAUGHT:
            angles = sensor.get_angle()[1]
        assert angles == (4.0, 1.0), f'a late reply was returned: {angles}'

    yield in_worker(scenario)


@pytest_twisted.inlineCallbacks
def test_start_while_down_then_outage(installed, bridges):
    port = free_port()
    instrument = DWL(x=-0.5, y=0.25)
    bridge = bridges(instrument, port, start=False)

    def scenario():
        sensor = tilt_driver(port)          # socs: ConnectionRefusedError, and acq is dead
        t0 = time.monotonic()
        with pytest.raises(TILT_CAUGHT):
            sensor.get_angle()
        assert time.monotonic() - t0 < 1.5
        bridge.start()
        deadline = time.monotonic() + 5
        while True:                         # the agent's loop: rebuild after each failure
            try:
                angles = sensor.get_angle()[1]
                break
            except TILT_CAUGHT:
                assert time.monotonic() < deadline, 'never recovered'
                old, sensor = sensor, tilt_driver(port)
                del old
        assert angles == (-0.5, 0.25)
        bridge.stop()                       # outage
        t0 = time.monotonic()
        with pytest.raises(TILT_CAUGHT):
            sensor.get_angle()
        assert time.monotonic() - t0 < 1.5
        old, sensor = sensor, tilt_driver(port)   # rebuilding while down must not raise
        del old

    yield in_worker(scenario)


@pytest_twisted.inlineCallbacks
def test_pmx_late_voltage_is_not_read_as_current(installed, bridges):
    instrument = PMX(volt=12.0, curr=3.5)
    bridge = bridges(instrument)

    def scenario():
        from socs.common.pmx import PMX as Driver
        psu = Driver(tcp_ip='127.0.0.1', tcp_port=bridge.port, timeout=0.5)
        assert psu.check_voltage_current() == (12.0, 3.5)
        instrument.delays = [0.8]
        volt, curr = psu.check_voltage_current()
        # socs: (-999.0, 12.0): the late voltage answers the current query.
        assert (volt, curr) == (-999.0, 3.5)
        assert psu.check_voltage_current() == (12.0, 3.5)

    yield in_worker(scenario)


@pytest_twisted.inlineCallbacks
def test_encoded_false_always_yields_bytes(installed, bridges):
    instrument = DWL()
    bridge = bridges(instrument)

    def scenario():
        from socs.common import moxa_serial as mx
        port = mx.Serial_TCPServer(('127.0.0.1', bridge.port), 0.2, encoded=False)
        port.write(b'\x06\x24' + b'\x00' * 10)       # no reply
        assert port.readexactly(12) == b''            # socs: '' (str)
        with pytest.raises(RuntimeError) as raised:     # socs: '' + b'' -> TypeError
            port.read(12)
        assert isinstance(raised.value, LinkTimeout)
        port.write(b'\x06\x01\x02\xaa' + b'\x00' * 8)
        reply = port.read(5)
        assert isinstance(reply, bytes) and reply[:2] == b'\x61\x22'
        port.sock.close()

    yield in_worker(scenario)


def _after(delay, fn):
    import threading
    thread = threading.Timer(delay, fn)
    thread.start()
    return thread


@pytest_twisted.inlineCallbacks
def test_tilt_sensor_acq_rides_out_faults_with_right_values(installed, bridges):
    """The agent's own acq: late reply, peer close and outage; it keeps running and publishes right angles."""
    import threading
    from types import SimpleNamespace
    from unittest import mock

    from socs.agents.wiregrid_tiltsensor.agent import WiregridTiltSensorAgent

    instrument = DWL(x=1.0, y=2.0)
    bridge = bridges(instrument)
    published = []
    agent = mock.MagicMock()
    agent.publish_to_feed.side_effect = lambda feed, block: published.append(
        (block['timestamp'], block['data']['angleX'], block['data']['angleY']))
    session = SimpleNamespace(data={})
    result = {}
    tilt = None

    def run_acq():
        result.update(r=tilt.acq(session))

    acq = threading.Thread(target=run_acq, daemon=True)

    def wait_for(angles, within):
        deadline = time.monotonic() + within
        while not published or published[-1][1:] != angles:
            assert acq.is_alive(), f'acq ended: {result}'
            assert time.monotonic() < deadline, f'never published {angles}: {published[-3:]}'
            time.sleep(0.05)

    def scenario():
        nonlocal tilt
        tilt = WiregridTiltSensorAgent(agent, '127.0.0.1', bridge.port, sensor_type='DWL')
        acq.start()
        wait_for((1.0, 2.0), 3)
        changes = []
        instrument.delays = [0.8]                   # a late reply ...
        changes.append(time.time())
        instrument.x = 3.0                          # ... of the old angle
        wait_for((3.0, 2.0), 5)
        bridge.drop_client()                        # peer close
        changes.append(time.time())
        instrument.y = -1.0
        wait_for((3.0, -1.0), 5)
        bridge.stop()                               # outage
        time.sleep(0.6)
        changes.append(time.time())
        instrument.x = -4.0
        bridge.start()
        wait_for((-4.0, -1.0), 6)
        tilt.stop_acq(None)
        acq.join(5)
        return changes

    changes = yield in_worker(scenario)
    assert result['r'][0] is True
    expected = [(1.0, 2.0), (3.0, 2.0), (3.0, -1.0), (-4.0, -1.0)]
    for stamp, x, y in published:   # never an angle older than the reading's start
        assert (x, y) in expected, (stamp, x, y)
        assert expected.index((x, y)) >= sum(stamp > t for t in changes), (stamp, x, y, changes)


@pytest_twisted.inlineCallbacks
def test_sherborne_late_x_never_answers_a_later_request(installed, bridges):
    from socs.agents.wiregrid_tiltsensor.drivers import connect
    instrument = Sherborne(x=1.5, y=-0.25)
    bridge = bridges(instrument)

    def scenario():
        sensor = connect('127.0.0.1', bridge.port, 'sherborne')
        assert sensor.get_angle()[1] == ('+000000001.5000', '-000000000.2500')
        instrument.delays = [0.7]           # X answered after the timeout: Y is never asked
        with pytest.raises(TILT_CAUGHT):
            sensor.get_angle()
        instrument.x, instrument.y = 2.0, 3.0
        old, sensor = sensor, connect('127.0.0.1', bridge.port, 'sherborne')
        angles = sensor.get_angle()[1]      # X and Y asked back to back
        del old
        assert angles == ('+000000002.0000', '+000000003.0000'), f'a late reply was returned: {angles}'

    yield in_worker(scenario)
    assert bridge.rejected == 0


class _Trickle(PMX):
    """A PMX whose next answers come in pieces: ``pieces`` is a list of [(delay, bytes), ...] per answer."""

    def __init__(self) -> None:
        super().__init__(volt=12.5)
        self.pieces: list[list[tuple[float, bytes]]] = []

    def feed(self, data: bytes) -> list[tuple[float, bytes]]:
        out = super().feed(data)
        if out and self.pieces:
            return self.pieces.pop(0)
        return out


@pytest_twisted.inlineCallbacks
def test_api_kept_and_the_rest_of_a_cut_line_is_dropped(installed, bridges):
    instrument = _Trickle()
    bridge = bridges(instrument)

    def scenario():
        from socs.common import moxa_serial as mx
        port = mx.Serial_TCPServer(('127.0.0.1', bridge.port), 0.3)
        assert port.timeout == 0.3 and port.gettimeout() == 0.3
        port.timeout = 0.4
        assert port.gettimeout() == 0.4
        port.write('MEAS:VOLT?\n\r')
        assert port.readline() == '12.5'
        port.write('OUTP?\n\r')
        assert port.readexactly(2) == '0\n'
        port.write('OUTP?\n\r')
        assert port.readpacket(10) == b'0\n'          # bytes, as SOCS's readpacket
        port.write('OUTP?\n\r')
        assert port.readbuf(10) == b'0\n'
        assert port.readpacket(10) == ''               # nothing came: '' on an encoded port
        assert port.writeread('OUTP?\n\r') is False     # no '\r' in the reply: readall gives up
        instrument.pieces = [[(0.005, b'12.'), (0.8, b'5\n')]]
        port.flushInput()
        port.write('MEAS:VOLT?\n\r')
        assert port.readline() == '12.'                # what came by the timeout, as SOCS's
        port.write('MEAS:VOLT?\n\r')                   # the rest of that line is drained first
        assert port.readline() == '12.5'               # socs: '5'
        port.sock.close()

    yield in_worker(scenario)
