"""Simulators of SOCS devices (socs_tcp.sim.devices): their pure reply functions,
SOCS's own drivers (on SOCS's own socs.tcp, the reference) reading them over
TCP, and ``socs-tcp simulate <kind>`` with its control channel.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import types

import pytest
import pytest_twisted

from socs_tcp.sim.cli import make_simulator
from socs_tcp.sim.control import SimControl
from socs_tcp.sim.devices import cryomech_cpa as cpa
from socs_tcp.sim.devices import lakeshore372 as ls
from socs_tcp.sim.devices import pfeiffer_tpg366 as tpg
from tests.conftest import in_worker


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def serve():
    """``yield serve(kind)``: a simulator of ``kind`` listening on a free port; stopped after the test."""
    started = []

    def start(kind: str):
        sim = make_simulator(kind)
        started.append(sim)
        return sim.start().addCallback(lambda _port: sim)   # the reactor API: a Deferred

    yield start
    for sim in started:
        pytest_twisted.blockon(sim.stop())


# -- Cryomech CPA --------------------------------------------------------------------

PTC_QUERY = bytes([0x09, 0x99, 0, 0, 0, 6, 1, 0x04, 0, 1, 0, 0x35])   # what the PTC sends


def test_cpa_answers_the_ptc_register_query_with_53_registers():
    regs = list(range(100, 153))
    reply = cpa.modbus_reply(PTC_QUERY, lambda: regs, lambda on: None)
    tid, protocol, length, unit, function, count = struct.unpack_from('>HHHBBB', reply)
    assert (tid, protocol, unit, function, count) == (0x0999, 0, 1, 0x04, 106)
    assert length == len(reply) - 6
    assert list(struct.unpack_from('>53H', reply, 9)) == regs


def test_cpa_power_write_is_echoed_and_switches_the_model():
    calls = []
    write_on = bytes([0x09, 0x99, 0, 0, 0, 6, 1, 0x06, 0, 1, 0, 1])
    write_off = write_on[:-2] + b'\x00\xff'
    assert cpa.modbus_reply(write_on, list, calls.append) == write_on
    assert cpa.modbus_reply(write_off, list, calls.append) == write_off
    assert calls == [True, False]


@pytest.mark.parametrize('frame, code', [
    (bytes([0, 1, 0, 0, 0, 6, 1, 0x03, 0, 1, 0, 1]), 1),       # unsupported function
    (bytes([0, 1, 0, 0, 0, 6, 1, 0x04, 0, 50, 0, 10]), 2),     # past register 53
    (bytes([0, 1, 0, 0, 0, 6, 1, 0x06, 0, 1, 0, 7]), 3),       # power value not 1/0xFF
    (bytes([0, 1, 0, 0, 0, 6, 1, 0x06, 0, 2, 0, 1]), 2),       # not the power register
])
def test_cpa_refuses_bad_requests_with_the_modbus_exception(frame, code):
    reply = cpa.modbus_reply(frame, lambda: [0] * 53, lambda on: None)
    assert reply[7] == frame[7] | 0x80 and reply[8] == code


def test_cpa_ignores_frames_that_are_not_modbus_tcp():
    assert cpa.modbus_reply(b'\x00\x01\x00\x07\x00\x06\x01\x04\x00\x01\x00\x35', list,
                            print) is None     # protocol id 7
    assert cpa.modbus_reply(b'\x00\x01\x00', list, print) is None


def test_cpa_simulator_heads_for_running_values_and_readings_vary():
    from socs.agents.cryomech_cpa.drivers import PTC

    sim = cpa.CryomechCPASimulator()
    decoder = types.SimpleNamespace(fake_errors=False)   # what breakdownReplyData uses of self
    first_flag, first = PTC.breakdownReplyData(decoder, sim.handle(PTC_QUERY))
    second_flag, second = PTC.breakdownReplyData(decoder, sim.handle(PTC_QUERY))
    assert first_flag is False and second_flag is False
    assert first['Compressor_State'] == 1 and first['Operating_State'] in (2, 3)   # on
    assert first['Helium_Temp'] != second['Helium_Temp']                            # noise
    assert 10 < first['Coolant_In_Temp'] < 30 and first['Temperature_Unit'] == 1
    assert decoder.serial == sim.model.serial


@pytest_twisted.inlineCallbacks
def test_socs_ptc_driver_reads_and_powers_the_simulated_cpa(serve):
    from socs.agents.cryomech_cpa.drivers import PTC

    sim = yield serve('cryomech-cpa')

    def use():
        ptc = PTC('127.0.0.1', port=sim.port, timeout=3)
        flag, data = ptc.get_data()
        ptc.power('off')
        return flag, data, ptc.model, ptc.software_revision

    flag, data, model, revision = yield in_worker(use)
    assert flag is False and set(data) >= {'Helium_Temp', 'Motor_Current', 'High_Pressure'}
    assert model == '20_5' and revision == '1.4'
    assert not sim.model.running or sim.model.state == 5    # switched off: stopping


# -- Lakeshore 372 -------------------------------------------------------------------

def test_ls372_identifies_and_reports_its_scanner():
    state = ls.LS372State()
    assert ls.answer(state, '*IDN?') == 'LSCI,MODEL372,LSASIM,1.3'
    assert ls.answer(state, 'SCAN?') == '01,0'
    assert ls.answer(state, 'SCAN 5,0') is None          # settings are not answered
    assert ls.answer(state, 'SCAN?') == '05,0'


def test_ls372_command_set_is_what_the_bridge_understands():
    state = ls.LS372State()
    for request, _what in ls.Lakeshore372Simulator.command_set:
        word, args = ls._split(request)
        if word.endswith('?'):
            assert ls._query(state, word, args) is not None, request
        else:
            ls._setting(state, word, args)       # raises for what the bridge ignores


def test_ls372_input_settings_round_trip_in_the_devices_formats():
    state = ls.LS372State()
    assert ls.answer(state, 'INSET? 1') == '1,007,003,21,1'
    assert ls.answer(state, 'INTYPE? 1') == '0,07,1,10,0,1'
    assert ls.answer(state, 'INTYPE? A') == '1,04,0,15,0,2'
    assert ls.answer(state, 'INNAME? 1') == 'MXC'
    ls.answer(state, 'INSET 2,0,10,5,3,2')
    ls.answer(state, 'INTYPE 2,1,12,0,8,1,2')
    ls.answer(state, 'INNAME 2,"Plate, cold"')
    ls.answer(state, 'TLIMIT 2,4.5')
    assert ls.answer(state, 'INSET? 2') == '0,010,005,03,2'
    assert ls.answer(state, 'INTYPE? 2') == '1,12,0,08,1,2'
    assert ls.answer(state, 'INNAME? 2') == 'Plate, cold'
    assert float(ls.answer(state, 'TLIMIT? 2')) == 4.5


def test_ls372_readings_vary_around_each_stage_and_follow_the_sensor_curve():
    state = ls.LS372State(seed=3)
    temps = [float(ls.answer(state, 'KRDG? 1')) for _ in range(20)]
    base = ls.STAGES[1][1]
    assert all(0.95 * base < t < 1.05 * base for t in temps) and len(set(temps)) > 15
    ohms = float(ls.answer(state, 'SRDG? 1'))
    assert ohms == pytest.approx(ls.ruox_resistance(base), rel=0.05)
    assert ls.answer(state, 'KRDG? 1').startswith('+1.0') and 'E-02' in ls.answer(state, 'KRDG? 1')
    assert float(ls.answer(state, 'KRDG? 5')) > 40          # the 50 K stage


def test_ls372_heaters_take_space_or_comma_parameters():
    state = ls.LS372State()
    assert ls.answer(state, 'RANGE? 0') == '0' and ls.answer(state, 'RANGE? 2') == '1'
    ls.answer(state, 'RANGE 0 4')                           # SOCS sends a space
    ls.answer(state, 'MOUT 0,12.5')
    assert ls.answer(state, 'RANGE? 0') == '4'
    assert float(ls.answer(state, 'HTR?')) == 12.5
    ls.answer(state, 'STILL 42.5')
    assert float(ls.answer(state, 'STILL?')) == 42.5
    ls.answer(state, 'PID 0,50,3,1')
    assert ls.answer(state, 'PID?') == '+50.0,+3.0,+1.0'
    assert ls.answer(state, 'OUTMODE? 0') == '2,6,1,0,0,001'
    assert ls.answer(state, 'HTRSET? 2') == '+120.000,8,+0000.00,1'


def test_ls372_joins_several_queries_and_ignores_what_it_does_not_know():
    state = ls.LS372State()
    assert ls.answer(state, '*IDN?;SCAN?') == 'LSCI,MODEL372,LSASIM,1.3;01,0'
    assert ls.answer(state, 'BOGUS?') is None
    assert ls.answer(state, 'KRDG? 99') is None             # no such input
    assert ls.answer(state, 'INSET 1,x') is None and ls.answer(state, 'INSET? 1') == '1,007,003,21,1'


def test_ls372_autoscan_steps_through_enabled_channels_after_pause_and_dwell():
    clock = FakeClock()
    state = ls.LS372State(clock=clock)
    ls.answer(state, 'INSET 2,0,7,3,21,1')                  # disable channel 2
    ls.answer(state, 'SCAN 1,1')
    assert ls.answer(state, 'SCAN?') == '01,1'
    clock.now += 9.9                                          # pause 3 + dwell 7 not over
    assert ls.answer(state, 'SCAN?') == '01,1'
    clock.now += 0.2
    assert ls.answer(state, 'SCAN?') == '03,1'                # 2 is disabled: skipped
    enabled = [ch for ch in ls.CHANNELS if ch in ls.STAGES and ch != 2]
    clock.now += 10.0 * (len(enabled) - 1)                    # once round
    assert ls.answer(state, 'SCAN?') == '01,1'


@pytest_twisted.inlineCallbacks
def test_socs_ls372_driver_builds_on_the_simulated_bridge(serve):
    from socs.Lakeshore.Lakeshore372 import LS372

    sim = yield serve('lakeshore372')

    def use():
        dev = LS372('127.0.0.1', port=sim.port, timeout=3)
        channel = dev.get_active_channel()
        return (dev.id, channel.name, dev.get_temp(unit='kelvin', chan=channel.channel_num),
                dev.get_temp(unit='ohms', chan=1), dev.still_heater.get_heater_range(),
                [c.name for c in dev.channels][:3])

    identity, name, kelvin, ohms, still, names = yield in_worker(use)
    assert identity.startswith('LSCI,MODEL372') and name == 'MXC' and still == 'On'
    assert kelvin == pytest.approx(ls.STAGES[1][1], rel=0.05) and ohms > 10000
    assert names == ['Input A', 'MXC', 'Cold plate']


# -- Pfeiffer TPG 366 ----------------------------------------------------------------

def test_tpg_framer_splits_enq_and_cr_terminated_mnemonics():
    buf = bytearray(b'PRX\r\n\x05PR1\r')
    assert tpg.tpg_framer(buf) == b'PRX'
    assert tpg.tpg_framer(buf) == b'\x05'
    assert tpg.tpg_framer(buf) == b'PR1'
    assert tpg.tpg_framer(buf) is None and buf == bytearray()
    part = bytearray(b'SE')
    assert tpg.tpg_framer(part) is None and part == bytearray(b'SE')
    with pytest.raises(ValueError, match='without CR'):
        tpg.tpg_framer(bytearray(b'x' * 100))


def test_tpg_acknowledges_known_mnemonics_then_transmits_on_enq():
    state = tpg.TPG366State(seed=1)
    # before any mnemonic, ENQ transmits all pressures (what the driver's constructor reads)
    assert tpg.answer(state, tpg.ENQ).count(b',') == 11
    assert tpg.answer(state, b'PR2') == tpg.ACK
    status, pressure = tpg.answer(state, tpg.ENQ).decode().split(',')
    assert status == '0' and float(pressure) == pytest.approx(4.1e-2, rel=0.1)
    assert tpg.answer(state, b'XYZ') == tpg.NAK
    assert tpg.answer(state, tpg.ENQ).startswith(b'0,')           # still PR2's data
    assert tpg.answer(state, b'PR5') == tpg.ACK
    assert tpg.answer(state, tpg.ENQ) == b'5,+0.0000E+00'          # no sensor


def test_tpg_command_set_is_what_the_controller_understands():
    state = tpg.TPG366State(seed=1)
    for request, _what in tpg.PfeifferTPG366Simulator.command_set:
        if request.startswith('\\x05'):
            assert tpg.answer(state, tpg.ENQ) not in (None, tpg.NAK)
        else:
            assert tpg.answer(state, request.encode()) == tpg.ACK, request
            assert tpg.answer(state, tpg.ENQ) not in (None, tpg.NAK), request


def test_tpg_pressures_vary_and_the_vacuum_pumps_down():
    clock = FakeClock()
    state = tpg.TPG366State(clock=clock, seed=2)
    first = [state.reading(1)[1] for _ in range(10)]
    assert len(set(first)) == 10 and all(1e-6 < p < 5e-6 for p in first)
    clock.now += 3 * 3600
    later = state.reading(1)[1]
    assert later < min(first) and later > state.gauges[0].floor * 0.9


@pytest_twisted.inlineCallbacks
def test_socs_tpg366_driver_reads_the_simulated_gauges(serve):
    from socs.agents.pfeiffer_tpg366.drivers import TPG366

    sim = yield serve('pfeiffer-tpg366')

    def use():
        gauge = TPG366('127.0.0.1', port=sim.port, timeout=3)
        return gauge.read_pressure_all(), gauge.read_pressure(3)

    pressures, ch3 = yield in_worker(use)
    assert len(pressures) == 6 and pressures[3:] == [0.0, 0.0, 0.0]
    assert 1e-6 < pressures[0] < 5e-6 and ch3 == pytest.approx(5.6, rel=0.1)
    assert sim.requests[0] == tpg.ENQ            # the constructor's ENQ, then PRX, ENQ, ...
    assert sim.requests[1:3] == [b'PRX', tpg.ENQ]


# -- socs-tcp simulate <kind> ------------------------------------------------------------

def _announced(proc: subprocess.Popen) -> dict:
    ports = {}
    while len(ports) < 2:
        line = proc.stdout.readline()
        assert line, f'simulator exited: {proc.stderr.read()}'
        key, value = line.split()
        ports[key] = int(value)
    return ports


QUERIES = {'cryomech-cpa': (PTC_QUERY, 9 + 106), 'lakeshore372': (b'*IDN?\r\n', 26),
           'pfeiffer-tpg366': (b'PR1\r\n', 3)}


def test_simulate_runs_each_socs_device_with_its_control_channel():
    host = '127.0.0.1'
    procs = {kind: subprocess.Popen(
        [sys.executable, '-m', 'socs_tcp.cli', 'simulate', kind, '--host', host, '--port', '0',
         '--control-port', '0', '--control-host', '127.0.0.1'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for kind in QUERIES}    # the bridges: tests/test_socs_bridge_sims.py
    try:
        for kind, proc in procs.items():
            ports = _announced(proc)
            query, size = QUERIES[kind]
            with socket.create_connection((host, ports['PORT']), timeout=5) as sock:
                sock.sendall(query)
                reply = b''
                while len(reply) < size:
                    chunk = sock.recv(4096)
                    assert chunk, kind
                    reply += chunk
            assert len(reply) == size, (kind, reply)
            # the control channel listens on 127.0.0.1 while the device is on `host`
            status = SimControl('127.0.0.1', ports['CONTROL']).status()
            assert status['listening'] == '1' and int(status['requests']) == 1, (kind, status)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            assert proc.wait(timeout=10) == 0
            proc.stdout.close()
            proc.stderr.close()
            proc.stdin.close()
