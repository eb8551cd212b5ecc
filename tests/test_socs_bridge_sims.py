"""Simulators of the SOCS devices behind serial and GPIB bridges
(socs_tcp.sim.devices: prologix, moxa, tc400, hwp_pid): their pure reply
functions, SOCS's own unchanged drivers reading them over TCP, the bridge
faults (late reply held for the next connection, one client), and
``socs-tcp simulate <kind>`` with its control channel.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
import types

import pytest
import pytest_twisted
from twisted.internet import error

from socs_tcp.sim.control import ControlChannel, SimControl
from socs_tcp.sim.devices import hwp_pid, moxa, prologix, tc400
from socs_tcp.sim.devices._bridge import BridgeServer
from tests.conftest import in_worker


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def serve():
    """``sim = yield serve(sim)``: start a simulator on a free port; stopped after the test.

    (SOCS's Prologix driver always connects to port 1234: those tests use
    `_on_private_loopback` instead, port 1234 of a random 127.x.y.z.)
    """
    started = []

    def start(sim):
        started.append(sim)
        return sim.start().addCallback(lambda _port: sim)

    yield start
    for sim in started:
        pytest_twisted.blockon(sim.stop())


@pytest_twisted.inlineCallbacks
def _on_private_loopback(make, port: int):
    """Start ``make(host, port)`` on a random 127.x.y.z (retry if that one is taken)."""
    rng = random.Random()
    for _ in range(20):
        host = f'127.{rng.randrange(1, 255)}.{rng.randrange(0, 256)}.{rng.randrange(1, 255)}'
        sim = make(host, port)
        try:
            yield sim.start()
        except error.CannotListenError:
            continue
        return sim
    raise RuntimeError(f'no free 127.x.y.z address for port {port}')


def _exchange(port: int, data: bytes, expect: int, host: str = '127.0.0.1',
              timeout: float = 3.0) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        reply = b''
        while len(reply) < expect:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply


# -- Prologix box -----------------------------------------------------------------------

def test_prologix_box_routes_lines_by_gpib_address_and_reads_back_with_auto():
    box = prologix.PrologixBox()
    assert box.answer('++ver') == prologix.VERSION
    assert box.answer('++auto 1') is None and box.auto == 1
    assert box.answer(f'++addr {prologix.CG635_ADDRESS}') is None
    assert box.answer('FREQ?;STDC?;RUNS?;TIMB?') == '122880000.000000;3;1;0'
    assert box.answer('++addr 5') is None
    assert box.answer('*idn?').startswith('Keithley instruments, 2230G-30-1')
    assert box.answer('++addr 9') is None and box.answer('*IDN?') is None   # nobody there
    assert box.answer('++addr') == '9'


def test_prologix_without_auto_holds_the_reply_until_read():
    box = prologix.PrologixBox()
    box.answer('++auto 0')
    assert box.answer('*IDN?') is None
    assert box.answer('++read eoi').startswith('Keithley')
    assert box.answer('++read eoi') is None


def test_prologix_psu_measures_what_is_set_into_its_load():
    psu = prologix.ScpiPsu()
    for line in ('inst:nsel 2', 'volt 5', 'curr 2', 'OUTP:ENAB ON', 'CHAN:OUTP ON'):
        assert psu.answer(line) is None
    assert psu.answer('CHAN:OUTP:STAT?') == '1'
    assert float(psu.answer('MEAS:VOLT? CH2')) == 5.0
    assert float(psu.answer('MEAS:CURR? CH2')) == 0.5         # 5 V into 10 ohm
    assert float(psu.answer('MEAS:VOLT? CH1')) == 0.0          # channel 1 stays off
    psu.answer('curr 0.2')                                      # constant current
    assert float(psu.answer('MEAS:VOLT? CH2')) == 2.0
    assert psu.answer('volt 99') is None and psu.channels[1].volts == 30.0   # clamped


@pytest_twisted.inlineCallbacks
def test_socs_prologix_drivers_drive_the_psu_and_read_the_clock():
    """SOCS's PsuInterface and SRSCG635Interface, unchanged, on port 1234 of the box."""
    from socs.agents.scpi_psu.drivers import PsuInterface
    from socs.agents.srs_cg635.drivers import SRSCG635Interface

    sim = yield _on_private_loopback(
        lambda host, port: prologix.PrologixSimulator(host=host, port=port),
        prologix.PROLOGIX_PORT)
    try:
        def use():
            psu = PsuInterface(sim.host, prologix.PSU_ADDRESS)
            psu.set_volt(3, 12.5)
            psu.set_curr(3, 2.0)
            psu.set_output(3, True)
            readings = psu.get_volt(3), psu.get_curr(3), psu.get_output(3), psu.identify()
            psu.sock.close()
            clock = SRSCG635Interface(sim.host, prologix.CG635_ADDRESS)
            status = clock.get_all_status(), clock.get_freq()
            clock.sock.close()
            return readings, status

        (volts, amps, on, idn), (status, freq) = yield in_worker(use)
        assert (volts, amps, on) == (12.5, 1.25, True) and '2230G-30-1' in idn
        assert status == (122.88e6, 3, 1, 0) and freq == 122.88e6
        assert sim.requests[:3] == [b'++mode 1', b'++auto 1', b'++addr 5']
    finally:
        yield sim.stop()


# -- Moxa: DWL tilt sensor and Kikusui PMX --------------------------------------------

def test_dwl_framer_resynchronises_on_the_start_byte():
    buf = bytearray(b'\xff\x00' + moxa.DWL_READ_XY + moxa.DWL_INIT[:5])
    assert moxa.dwl_framer(buf) == moxa.DWL_READ_XY
    assert moxa.dwl_framer(buf) is None and bytes(buf) == moxa.DWL_INIT[:5]


def test_dwl_answers_angles_in_its_binary_format_and_nothing_to_init():
    sensor = moxa.DWL(x=1.5, y=-2.25)
    assert sensor.answer(moxa.DWL_INIT) is None and sensor.initialised
    reply = sensor.answer(moxa.DWL_READ_XY)
    assert len(reply) == 12 and reply[:2] == b'\x61\x22'
    assert int.from_bytes(reply[5:8], 'little') == 15000 + 300000     # X
    assert int.from_bytes(reply[2:5], 'little') == -22500 + 300000    # Y
    single = sensor.answer(moxa.DWL_READ_X)
    assert single[:2] == b'\x61\x11' and int.from_bytes(single[2:6], 'little') == 1815000
    assert sensor.answer(b'\x06' + bytes(11)) is None


def test_pmx_follows_its_set_points_within_its_limits():
    pmx = moxa.PMX()
    for line in ('SYST:REM', 'VOLT 6', 'CURR 0.4', 'OUTP ON'):
        assert pmx.answer(line + '\n\r') is None
    assert pmx.answer('\rOUTP?') == '1'
    assert float(pmx.answer('MEAS:VOLT?')) == 4.8 and float(pmx.answer('MEAS:CURR?')) == 0.4
    assert pmx.answer('VOLT 100') is None and pmx.volts == pmx.volt_limit
    assert pmx.answer('VOLT:EXT:SOUR VOLT') is None and pmx.answer('VOLT:EXT:SOUR?') == 'VOLT'


@pytest_twisted.inlineCallbacks
def test_socs_dwl_driver_reads_the_tilt_through_the_moxa(serve):
    from socs.agents.wiregrid_tiltsensor.drivers.dwl import DWL

    sim = yield serve(moxa.MoxaDWLSimulator(sensor=moxa.DWL(x=0.4321, y=-1.2345)))

    def use():
        sensor = DWL(tcp_ip='127.0.0.1', tcp_port=sim.port, timeout=1.0)
        result = sensor.get_angle()
        sensor.ser.sock.close()
        return result

    _msg, angles = yield in_worker(use)
    assert angles == (0.4321, -1.2345)
    assert sim.model.initialised and sim.requests == [moxa.DWL_INIT, moxa.DWL_READ_XY]


@pytest_twisted.inlineCallbacks
def test_socs_pmx_driver_sets_and_reads_the_kikusui_through_the_moxa(serve):
    from socs.common.pmx import PMX

    sim = yield serve(moxa.MoxaPMXSimulator())

    def use():
        pmx = PMX(tcp_ip='127.0.0.1', tcp_port=sim.port, timeout=1.0)
        pmx.set_current(0.5, silent=True)
        pmx.set_voltage(3.0, silent=True)
        pmx.turn_on()
        result = pmx.check_voltage_current(), pmx.check_output(), pmx.check_connect()
        pmx.ser.sock.close()
        return result

    (volts, amps), (_m, out), (_c, connected) = yield in_worker(use)
    assert (volts, amps, out, connected) == (3.0, 0.25, 1, True)
    assert sim.model.remote


# -- Pfeiffer TC400 -------------------------------------------------------------------

def test_tc400_telegrams_carry_their_checksum_and_are_checked():
    request = tc400.telegram(1, 0, 309, '=?')
    assert request == '0010030902=?107'
    assert tc400.parse(request) == (1, 0, 309, '=?')
    with pytest.raises(ValueError, match='checksum'):
        tc400.parse(request[:-3] + '000')
    with pytest.raises(ValueError, match='too short'):
        tc400.parse('00100309')


def test_tc400_answers_its_address_only_and_runs_the_rotor_up():
    clock = FakeClock()
    pump = tc400.TC400(address=94, clock=clock)
    ask = lambda p: pump.answer(tc400.telegram(94, 0, p, '=?').encode())   # noqa: E731
    assert pump.answer(tc400.telegram(1, 0, 309, '=?').encode()) is None      # another pump
    assert pump.answer(b'0940030902=?000') is None                             # bad checksum
    assert tc400.parse(ask(309).decode()) == (94, 10, 309, '000000')
    for parameter in (10, 23):
        reply = pump.answer(tc400.telegram(94, 10, parameter, tc400.ON).encode())
        assert tc400.parse(reply.decode())[3] == tc400.ON
    clock.now += 10                                                            # 20 Hz/s
    assert tc400.parse(ask(309).decode())[3] == '000200'
    assert tc400.parse(ask(999).decode())[3] == 'NO_DEF'


@pytest_twisted.inlineCallbacks
def test_socs_tc400_driver_starts_and_reads_the_pump_over_socket_url(serve):
    from socs.agents.pfeiffer_tc400.drivers import PfeifferTC400

    clock = FakeClock()
    sim = yield serve(tc400.PfeifferTC400Simulator(controller=tc400.TC400(address=94,
                                                                          clock=clock)))

    def use():
        turbo = PfeifferTC400('127.0.0.1', sim.port, 94)
        started = turbo.ready_turbo(), turbo.turn_turbo_motor_on()
        clock.now += 5
        readings = (turbo.get_turbo_actual_rotation_speed(), turbo.get_turbo_set_rotation_speed(),
                    turbo.get_turbo_drive_voltage(), turbo.get_turbo_error_code())
        turbo.ser.close()
        return started, readings

    started, readings = yield in_worker(use)
    assert started == (True, True)
    assert readings == (100, 820, 24.0, 'no Err')


# -- HWP PID controller -----------------------------------------------------------------

def test_pid_controller_applies_set_points_at_reset_and_the_rotor_follows():
    clock = FakeClock()
    pid = hwp_pid.PIDController(clock=clock, time_constant=5.0)
    assert pid.answer('*W01400BB8') == 'W01'                 # 3.000 Hz
    assert pid.answer('*R01') == 'R01400BB8'
    clock.now += 100
    assert pid.answer('*X01') == 'X010.000'                  # not applied before a reset
    assert pid.answer('*Z02') == 'Z02'
    clock.now += 5
    assert float(pid.answer('*X01')[3:]) == pytest.approx(3.0 * (1 - 2.718281828 ** -1), abs=1e-3)
    assert pid.answer('*W02401388') == 'W02' and pid.direction == 1
    assert pid.answer('*Q01') == '?43' and pid.answer('*W01ZZ') == '?43'
    assert pid.answer('*W0140') == '?46'


@pytest_twisted.inlineCallbacks
def test_socs_pid_driver_reads_and_sets_the_simulated_controller(serve, monkeypatch):
    from socs.agents.hwp_pid.drivers import pid_controller as pd

    # The driver sleeps 0.5 s after every command: keep the test fast; the
    # reply is one segment, which recv() waits for anyway.
    monkeypatch.setattr(pd, 'time', types.SimpleNamespace(sleep=lambda s: None))
    sim = yield serve(hwp_pid.HWPPIDSimulator())

    def use():
        pid = pd.PID('127.0.0.1', sim.port)
        pid.set_direction('1')
        pid.declare_freq(2.0)
        replies = [pid.send_message(f'*W014{pid.hex_freq}'), pid.send_message('*Z02')]
        result = pid.get_direction().measure, pid.get_target().measure, replies
        pid.conn.close()
        return result

    direction, target, replies = yield in_worker(use)
    assert (direction, target, replies) == (1, 2.0, ['W01', 'Z02'])
    assert sim.model.frequency_setpoint == 2.0


# -- bridge faults ---------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_late_reply_answers_the_next_query_of_the_same_client(serve):
    sim = yield serve(prologix.PrologixSimulator())
    sim.set_late(0.3)

    def use():
        with socket.create_connection(('127.0.0.1', sim.port), timeout=0.1) as sock:
            sock.sendall(b'++auto 1\n++addr 23\nFREQ?\n')
            with pytest.raises(TimeoutError):
                sock.recv(128)                         # the client gives up...
            time.sleep(0.4)
            sock.settimeout(2)
            sock.sendall(b'STDC?\n')
            return sock.recv(128)                      # ...and gets FREQ's reply for STDC?

    stale = yield in_worker(use)
    assert stale.startswith(b'122880000.000000\n')


@pytest_twisted.inlineCallbacks
def _until(predicate, timeout: float = 3.0):
    """Wait (in the reactor) until ``predicate()`` holds; fail after ``timeout`` s."""
    from twisted.internet import reactor, task
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, 'condition not met in time'
        yield task.deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.inlineCallbacks
def test_late_reply_is_held_by_the_bridge_for_the_next_connection(serve):
    sim = yield serve(prologix.PrologixSimulator())
    sim.set_late(0.2)

    def first():
        with socket.create_connection(('127.0.0.1', sim.port), timeout=2) as sock:
            sock.sendall(b'++auto 1\n++addr 23\nFREQ?\n')

    yield in_worker(first)
    yield sim.when_requests(3, timeout=2)
    yield sim.when_connections(0, timeout=2)
    yield _until(lambda: sim.held_count == 1)      # it came out with nobody connected

    def second():
        with socket.create_connection(('127.0.0.1', sim.port), timeout=2) as sock:
            return sock.recv(128)

    assert (yield in_worker(second)) == b'122880000.000000\n'
    assert sim.held_count == 0


@pytest_twisted.inlineCallbacks
def test_stopping_the_bridge_loses_what_it_held(serve):
    sim = yield serve(moxa.MoxaPMXSimulator())
    sim.set_late(5)
    yield in_worker(_exchange, sim.port, b'OUTP?\n\r', 0)
    yield sim.stop()
    yield sim.start()
    assert sim.held_count == 0 and 'in_flight=0' in sim.bridge_status()


@pytest_twisted.inlineCallbacks
def test_a_one_client_bridge_closes_a_second_connection_at_once(serve):
    sim = yield serve(tc400.PfeifferTC400Simulator(one_client=True))
    request = (tc400.telegram(1, 0, 309, '=?') + '\r').encode()

    def use():
        with socket.create_connection(('127.0.0.1', sim.port), timeout=2) as first:
            with socket.create_connection(('127.0.0.1', sim.port), timeout=2) as second:
                second.sendall(request)
                try:
                    refused = second.recv(64)
                except ConnectionResetError:
                    refused = b''
            first.sendall(request)
            return refused, first.recv(64)

    refused, answered = yield in_worker(use)
    assert refused == b'' and answered.startswith(b'00110309')
    assert sim.rejected_count == 1
    sim.set_one_client(False)
    assert sim.max_connections is None


def test_bridge_refuses_a_handler_or_a_connection_limit_of_its_own():
    with pytest.raises(TypeError, match='instrument'):
        BridgeServer(None)
    with pytest.raises(TypeError, match='max_connections'):
        BridgeServer(str, max_connections=2)
    with pytest.raises(ValueError, match='seconds'):
        prologix.PrologixSimulator().set_late(-1)


# -- the control channel and socs-tcp simulate ------------------------------------------

@pytest_twisted.inlineCallbacks
def test_control_channel_sets_the_bridge_faults(serve):
    sim = yield serve(hwp_pid.HWPPIDSimulator())
    control = ControlChannel(sim)
    control.start()
    try:
        assert (yield control.execute('late 0.5')) == 'OK next reply 0.5 s late'
        assert (yield control.execute('one-client on')) == 'OK one client on'
        status = yield control.execute('status')
        assert 'late=0.5' in status and 'one_client=1' in status and 'setpoint=' in status
        assert (yield control.execute('late 0')) == 'OK late off'
        assert (yield control.execute('late soon')).startswith('ERR seconds must be')
        assert (yield control.execute('reset')) == 'OK faults cleared'
        echo = ControlChannel(types.SimpleNamespace())
        assert (yield echo.execute('late 1')) == 'ERR late: this simulator is not a bridge'
    finally:
        yield control.stop()


BRIDGE_KINDS = {
    'prologix': (b'++ver\n', len(prologix.VERSION) + 1),
    'moxa-dwl': (moxa.DWL_READ_XY, 12),
    'moxa-pmx': (b'OUTP?\n\r', 2),
    'pfeiffer-tc400': ((tc400.telegram(1, 0, 309, '=?') + '\r').encode(), 20),
    'hwp-pid': (b'*R01\r\n', 10),
}


def test_simulate_runs_each_bridge_device_with_its_control_channel():
    procs = {kind: subprocess.Popen(
        [sys.executable, '-m', 'socs_tcp.cli', 'simulate', kind, '--port', '0',
         '--control-port', '0'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for kind in BRIDGE_KINDS}
    try:
        for kind, proc in procs.items():
            ports = {}
            while len(ports) < 2:
                line = proc.stdout.readline()
                assert line, f'{kind} exited: {proc.stderr.read()}'
                key, value = line.split()
                ports[key] = int(value)
            control = SimControl('127.0.0.1', ports['CONTROL'])
            query, size = BRIDGE_KINDS[kind]
            reply = _exchange(ports['PORT'], query, size)
            assert len(reply) == size, (kind, reply)
            assert control.late(0.2) == 'next reply 0.2 s late'
            assert control.one_client(True) == 'one client on'
            status = control.status()
            assert status['late'] == '0.2' and status['one_client'] == '1', (kind, status)
            assert int(status['requests']) == 1
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            assert proc.wait(timeout=10) == 0
            proc.stdout.close()
            proc.stderr.close()


def _command_bytes(kind: str, request: str) -> bytes:
    if kind == 'moxa-dwl':
        return bytes.fromhex(request)
    return request.encode()


@pytest.mark.parametrize('kind, sim_class, answer', [
    ('prologix', prologix.PrologixSimulator, lambda m, r: m.answer(r.decode())),
    ('moxa-dwl', moxa.MoxaDWLSimulator, lambda m, r: m.answer(r)),
    ('moxa-pmx', moxa.MoxaPMXSimulator, lambda m, r: m.answer(r.decode())),
    ('pfeiffer-tc400', tc400.PfeifferTC400Simulator, lambda m, r: m.answer(r)),
    ('hwp-pid', hwp_pid.HWPPIDSimulator, lambda m, r: m.answer(r.decode())),
])
def test_each_bridge_command_set_is_what_its_instrument_understands(kind, sim_class, answer):
    model = sim_class().model
    if kind == 'prologix':
        model.answer('++auto 1')
    for request, what in sim_class.command_set:
        if kind == 'prologix':
            target = prologix.CG635_ADDRESS if what.startswith('CG635') else prologix.PSU_ADDRESS
            if not request.startswith('++'):
                model.answer(f'++addr {target}')
        reply = answer(model, _command_bytes(kind, request))
        if '?' in request or kind in ('pfeiffer-tc400', 'hwp-pid') or request == '++ver':
            assert reply not in (None, '?43', '?46'), request
            if kind == 'pfeiffer-tc400':
                assert b'NO_DEF' not in reply and b'_RANGE' not in reply, request
        elif kind == 'moxa-dwl':
            assert (reply is None) == ('no reply' in what), request


def test_every_simulated_socs_device_is_run_by_a_simulate_test():
    from socs_tcp.sim.devices import SIMULATORS
    from tests.test_socs_device_sims import QUERIES

    assert set(SIMULATORS) == set(QUERIES) | set(BRIDGE_KINDS)
