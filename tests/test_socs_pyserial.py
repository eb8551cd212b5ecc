"""pyserial's ``socket://`` on socs_tcp (``SOCS_TCP=serial``), under SOCS's unchanged TC400 driver.

``socs.agents.pfeiffer_tc400.drivers.PfeifferTC400`` opens
``serial.serial_for_url('socket://ip:port')`` to a Moxa serial server and
speaks Pfeiffer telegrams through ``pfeiffer_vacuum_protocol``; its agent
catches ``ValueError`` only ("gauge response too short"). Here the serial
server is a fake bridge on 127.0.0.1 with a TC400 behind it. The driver's
port timeout (3 s) is set to 0.5 s on the port object to keep the tests short.
On plain pyserial (``SOCS_TCP_TESTS_PLAIN=1``) these tests fail.
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted

from socs_fake_bridge import FakeBridge
from socs_tcp.testing._crossbar import free_port
from socs_transport_fixtures import on_transports  # noqa: F401 (fixture)
from tests.conftest import in_worker

ADDRESS = 94
TIMEOUT = 0.5
MARGIN = 0.5
VALUES = {313: '002400', 310: '000150', 309: '000820', 303: '000000'}


def telegram(address: int, param: int, data: str) -> bytes:
    body = f'{address:03d}10{param:03d}{len(data):02d}{data}'
    return (body + f'{sum(map(ord, body)) % 256:03d}\r').encode()


def tc400(request: bytes) -> bytes | None:
    text = request.decode()
    address, param = int(text[:3]), int(text[5:8])
    return telegram(address, param, VALUES.get(param, '000000'))


def data_request(param: int) -> bytes:
    body = f'{ADDRESS:03d}00{param:03d}02=?'
    return (body + f'{sum(map(ord, body)) % 256:03d}\r').encode()


def request_prefix(param: int) -> bytes:
    return f'{ADDRESS:03d}00{param:03d}'.encode()


@pytest.fixture
def moxa(on_transports):  # noqa: F811 (fixture)
    bridge = FakeBridge(tc400, terminator=b'\r')
    yield bridge
    bridge.close()


def turbo(port: int):
    from socs.agents.pfeiffer_tc400.drivers import PfeifferTC400
    driver = PfeifferTC400('127.0.0.1', port, ADDRESS)
    driver.ser.timeout = TIMEOUT
    return driver


def noticed_close(driver) -> bool:
    link = getattr(driver.ser, '_link', None)
    return link is None or not link.connected


def fails_as_the_agent_expects(call) -> tuple[float, float]:
    """Run ``call``, which must raise ValueError (the agent's except); return (wall, cpu) seconds."""
    wall, cpu = time.monotonic(), time.process_time()
    with pytest.raises(ValueError, match='gauge response'):
        call()
    return time.monotonic() - wall, time.process_time() - cpu


@pytest_twisted.inlineCallbacks
def test_the_tc400_driver_reads_through_socs_tcp(moxa):
    def body():
        t = turbo(moxa.port)
        return type(t.ser).__module__, t.get_turbo_drive_voltage(), t.get_turbo_actual_rotation_speed()
    module, volts, speed = yield in_worker(body)
    assert module == 'socs_tcp._socs.protocol_socket'
    assert (volts, speed) == (24.0, 820)


@pytest_twisted.inlineCallbacks
def test_a_peer_close_is_a_blip_not_a_crash(moxa):
    def body():
        t = turbo(moxa.port)
        first = t.get_turbo_drive_voltage()
        moxa.drop_client()
        moxa.wait_for(lambda: noticed_close(t))
        return first, t.get_turbo_drive_voltage(), t.get_turbo_drive_current()
    # pyserial: SerialException('socket disconnected' / 'write failed'), which kills acq
    assert (yield in_worker(body)) == (24.0, 24.0, 1.5)


@pytest_twisted.inlineCallbacks
def test_an_outage_reads_as_a_quiet_line_then_the_link_comes_back(moxa):
    def body():
        t = turbo(moxa.port)
        moxa.stop()
        wall, cpu = fails_as_the_agent_expects(t.get_turbo_drive_voltage)
        moxa.start()
        return wall, cpu, t.get_turbo_actual_rotation_speed()
    wall, cpu, speed = yield in_worker(body)
    assert wall < TIMEOUT + MARGIN and cpu < 0.3 * wall, (wall, cpu)   # bounded, and no busy loop
    assert speed == 820


@pytest_twisted.inlineCallbacks
def test_a_controller_down_when_the_port_opens_is_quiet_then_answers_once_up(on_transports):  # noqa: F811
    port = free_port()

    def body():
        t = turbo(port)                  # pyserial: SerialException('Could not open port')
        wall, _ = fails_as_the_agent_expects(t.get_turbo_drive_voltage)
        bridge = FakeBridge(tc400, terminator=b'\r', port=port)
        try:
            return wall, t.get_turbo_drive_voltage()
        finally:
            bridge.close()
    wall, volts = yield in_worker(body)
    assert wall < TIMEOUT + MARGIN and volts == 24.0


@pytest_twisted.inlineCallbacks
def test_a_silent_controller_is_a_quiet_line_within_the_timeout(moxa):
    # As pyserial's own handler does: the read waits out the timeout (not less,
    # not more, not spinning) and returns what came, for the caller to judge.
    def body():
        t = turbo(moxa.port)
        moxa.silent = True
        wall, cpu = fails_as_the_agent_expects(t.get_turbo_drive_voltage)
        moxa.silent = False
        return wall, cpu, t.get_turbo_drive_voltage()
    wall, cpu, volts = yield in_worker(body)
    assert TIMEOUT * 0.9 < wall < TIMEOUT + MARGIN and cpu < 0.3 * wall, (wall, cpu)
    assert volts == 24.0


@pytest_twisted.inlineCallbacks
def test_a_late_reply_is_never_returned_for_a_later_request(moxa):
    # the drive-voltage reply comes after the driver gave up, while the next
    # request waits for its own (slower) reply: the parameter numbers differ
    moxa.late[request_prefix(313)] = TIMEOUT + 0.25

    def body():
        t = turbo(moxa.port)
        fails_as_the_agent_expects(t.get_turbo_drive_voltage)
        moxa.late = {request_prefix(309): 0.4}
        return t.get_turbo_actual_rotation_speed()
    # pyserial: 2400 (the drive voltage's data) returned as the rotation speed
    assert (yield in_worker(body)) == 820


@pytest_twisted.inlineCallbacks
def test_a_reply_for_another_parameter_is_handed_out_unless_an_earlier_request_is_owed_one(on_transports):  # noqa: F811
    # A controller that numbers every reply 010 (as SOCS's own TC400 test
    # does), then one that numbers them right, then 010 again.
    numbering = {'as': 10}

    def controller(request: bytes) -> bytes:
        param = int(request[5:8])
        return telegram(ADDRESS, numbering['as'] or param, VALUES.get(param, '000000'))
    bridge = FakeBridge(controller, terminator=b'\r')
    try:
        def body():
            t = turbo(bridge.port)
            # nothing owed: the replies are the controller's answers, as on pyserial
            # (before: dropped as late replies, and the read came back empty)
            first = t.get_turbo_drive_voltage(), t.get_turbo_actual_rotation_speed()
            numbering['as'] = None
            bridge.late[request_prefix(313)] = TIMEOUT + 0.25
            fails_as_the_agent_expects(t.get_turbo_drive_voltage)
            # owed now: the drive voltage's late reply comes while the next
            # (slower) request waits, and must not answer it
            bridge.late = {request_prefix(309): 0.4}
            speed = t.get_turbo_actual_rotation_speed()
            bridge.late = {}
            numbering['as'] = 10   # that good exchange paid what was owed
            return first, speed, t.get_turbo_drive_voltage()
        first, speed, again = yield in_worker(body)
    finally:
        bridge.close()
    assert first == (24.0, 820)
    assert speed == 820     # not 2400, the drive voltage's late data
    assert again == 24.0


@pytest_twisted.inlineCallbacks
def test_a_new_port_to_the_same_server_closes_the_old_one_first(moxa):
    def body():
        old = turbo(moxa.port)
        old.get_turbo_drive_voltage()
        new = turbo(moxa.port)      # as an agent's init task run again
        return new.get_turbo_drive_voltage()
    assert (yield in_worker(body)) == 24.0
    assert ('second client', 2) not in moxa.events, moxa.events


def test_other_urls_stay_pyserials_and_a_bad_socket_url_fails_at_once(on_transports):  # noqa: F811
    import serial
    loop = serial.serial_for_url('loop://', timeout=0.1)
    assert type(loop).__module__ == 'serial.urlhandler.protocol_loop'
    loop.close()
    for url in ('socket://127.0.0.1:70000', 'socket://:4001', 'socket://127.0.0.1:4001?logging=debug'):
        with pytest.raises(serial.SerialException, match='socket://<host>:<port>'):
            serial.serial_for_url(url)


@pytest_twisted.inlineCallbacks
def test_the_port_api_the_protocol_code_uses_behaves_as_pyserials(moxa):
    def body():
        import serial
        port = serial.serial_for_url(f'socket://127.0.0.1:{moxa.port}', baudrate=9600, timeout=TIMEOUT)
        try:
            port.write(data_request(313))
            moxa.wait_for(lambda: port.in_waiting > 0)
            waiting = port.in_waiting
            port.reset_input_buffer()
            after_reset = port.in_waiting
            return waiting, after_reset, port.read(1), port.is_open
        finally:
            port.close()
    waiting, after_reset, read, was_open = yield in_worker(body)
    assert waiting > 0 and after_reset == 0 and read == b'' and was_open
