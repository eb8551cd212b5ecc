"""Unit tier for the sample agents: driver parsing against byte strings, and
agent operations with a mocked OCS agent, a plain OpSession and a fake driver.

No sockets, no crossbar: each test runs in well under a second.
"""

import math
import struct
import threading
import time
from unittest.mock import MagicMock

import pytest
from ocs.ocs_agent import OpSession, ParamError, ParamHandler

from socs_tcp import NotConnected, _mbap
from socs_tcp.agents import polled_device
from socs_tcp.agents.compressor import drivers as cpa
from socs_tcp.agents.compressor.agent import CompressorAgent
from socs_tcp.agents.compressor.agent import make_parser as compressor_parser
from socs_tcp.agents.errors import DeviceReportedError, ReplyError
from socs_tcp.agents.outages import OutageTracker
from socs_tcp.agents.power_supply import drivers as scpi
from socs_tcp.agents.power_supply.agent import PowerSupplyAgent

# -- Modbus-TCP frames, built by hand (not with the code under test) ----------------


def read_reply(tid, values, unit=1, fc=0x04, byte_count=None):
    body = bytes([fc, 2 * len(values) if byte_count is None else byte_count])
    body += b''.join(struct.pack('>H', v) for v in values)
    return struct.pack('>HHHB', tid, 0, len(body) + 1, unit) + body


def float_words(value):
    """A float as the CPA stores it: two registers, low word first."""
    hi, lo = struct.unpack('>HH', struct.pack('>f', value))
    return [lo, hi]


def status_block(**floats):
    regs = [0] * 33
    regs[0], regs[1] = 3, 1                 # running, energized
    regs[28], regs[29], regs[30] = 0, 1, 4242
    regs[31] = (20 << 8) | 5                # model 20_5
    regs[32] = (1 << 8) | 4                 # software 1.4
    offsets = {'coolant_in_temp': 6, 'helium_temp': 12, 'motor_current': 24, 'alarm_state': 4}
    for name, value in floats.items():
        regs[offsets[name]:offsets[name] + 2] = float_words(value)
    return regs


def test_read_request_is_the_cpa_frame():
    assert cpa.build_read_request(0x0999, 1, 1, 0x21) == bytes(
        [0x09, 0x99, 0, 0, 0, 6, 1, 0x04, 0, 1, 0, 0x21])


def test_write_request_and_its_echo():
    frame = cpa.build_write_request(7, 1, 1, 0x00FF)
    assert frame == bytes([0, 7, 0, 0, 0, 6, 1, 0x06, 0, 1, 0, 0xFF])
    cpa.parse_write_reply(frame, 7, 1, 1, 0x00FF)      # a write is acknowledged by its echo
    with pytest.raises(ReplyError, match='echoes register 1=1'):
        cpa.parse_write_reply(cpa.build_write_request(7, 1, 1, 1), 7, 1, 1, 0x00FF)


def test_mbap_frames_carry_their_pdu_length_and_refuse_what_no_frame_can_carry():
    frame = _mbap.pack_frame(0x1234, 7, b'\x04\x00\x01\x00\x02')
    assert frame == b'\x12\x34\x00\x00\x00\x06\x07\x04\x00\x01\x00\x02'   # by hand
    assert _mbap.unpack_header(frame) == (0x1234, 0, 6, 7)
    assert _mbap.LENGTH_PREFIX.size + _mbap.unpack_header(frame).length == len(frame)
    with pytest.raises(ValueError, match='1..253 bytes, got 0'):
        _mbap.pack_frame(1, 1, b'')
    with pytest.raises(ValueError, match='got 254'):
        _mbap.pack_frame(1, 1, bytes(254))
    with pytest.raises(struct.error):
        _mbap.pack_frame(0x10000, 1, b'\x04')


def test_status_block_decodes_words_low_first_and_identity():
    regs = status_block(coolant_in_temp=21.5, helium_temp=-3.25, motor_current=12.0,
                        alarm_state=4.0)
    data = cpa.decode_status(cpa.parse_read_reply(read_reply(9, regs), 9, 1, 33))
    assert data['coolant_in_temp'] == 21.5 and data['helium_temp'] == -3.25
    assert data['motor_current'] == 12.0
    assert data['alarm_state'] == 4 and isinstance(data['alarm_state'], int)
    assert data['operating_state'] == 3 and data['compressor_state'] == 1
    assert (data['model'], data['software_revision'], data['serial_number']) == ('20_5', '1.4', 4242)


def test_non_finite_register_float_reads_as_nan_not_inf():
    regs = status_block(helium_temp=float('inf'))
    assert math.isnan(cpa.decode_status(regs)['helium_temp'])


@pytest.mark.parametrize('frame, message', [
    (read_reply(8, [1, 2]), 'transaction id 8 does not match request 9'),
    (read_reply(9, [1, 2], unit=3), 'unit id 3'),
    (b'\x00\x09\x00\x07\x00\x06\x01\x04\x04\x00\x01\x00\x02', 'protocol id 7'),
    (read_reply(9, [1, 2], fc=0x03), 'function code 0x03'),
    (read_reply(9, [1, 2], byte_count=6), 'byte count 6, expected 4'),
    (read_reply(9, [1, 2])[:-1], 'truncated or overlong'),
    (read_reply(9, [1, 2]) + b'\x00', 'truncated or overlong'),
    (b'\x00\x09\x00', 'truncated reply: 3 bytes'),
    (b'HTTP/1.1 400 Bad Request\r\n\r\n', 'not a Modbus-TCP reply'),
    (b'\x00\x09\x00\x00\x01\x00\x01\x04', 'length field 256 out of range'),
])
def test_bad_read_replies_raise_reply_error(frame, message):
    with pytest.raises(ReplyError, match=message):
        cpa.parse_read_reply(frame, 9, 1, 2)


def test_modbus_exception_reply_is_the_device_refusing():
    frame = struct.pack('>HHHB', 9, 0, 3, 1) + bytes([0x84, 0x02])
    with pytest.raises(cpa.ModbusExceptionReply, match='illegal data address') as info:
        cpa.parse_read_reply(frame, 9, 1, 2)
    assert info.value.code == 2 and isinstance(info.value, DeviceReportedError)


# -- SCPI replies -------------------------------------------------------------------

def test_scpi_numbers_booleans_errors_and_identity_parse():
    assert scpi.parse_float(b'+1.234500E+01') == 12.345
    assert scpi.parse_bool(b'1') is True and scpi.parse_bool(b'OFF') is False
    assert scpi.parse_error(b'-222,"Data out of range"') == (-222, 'Data out of range')
    assert scpi.parse_error(b'+0,"No error"') == (0, 'No error')
    assert scpi.parse_idn(b'ACME,PSU-30,SN1,2.0')['model'] == 'PSU-30'


@pytest.mark.parametrize('parse, reply, message', [
    (scpi.parse_float, b'\xff\xfe12', 'not ASCII'),
    (scpi.parse_float, b'', 'empty reply'),
    (scpi.parse_float, b'12.3V', 'expected a number'),
    (scpi.parse_float, b'+9.91E+37', 'no valid number'),
    (scpi.parse_float, b'nan', 'no valid number'),
    (scpi.parse_bool, b'2', 'expected 0 or 1'),
    (scpi.parse_error, b'No error', 'expected <code>'),
    (scpi.parse_idn, b'ACME,PSU-30', '4 comma-separated'),
])
def test_bad_scpi_replies_raise_reply_error(parse, reply, message):
    with pytest.raises(ReplyError, match=message):
        parse(reply)


# -- OutageTracker ---------------------------------------------------------------------

def test_outage_tracker_logs_each_outage_once_and_the_recovery():
    log, now = MagicMock(), [100.0]
    state = OutageTracker(log, 'psu at x:1', clock=lambda: now[0])
    assert state.failed(NotConnected('refused')) is True
    assert log.error.call_args.args[0].startswith('Cannot reach')   # never answered yet
    for _ in range(5):
        now[0] += 1
        assert state.failed(ConnectionError('still refused')) is False
    assert log.error.call_count == 1
    assert state.as_dict() == {'connected': False, 'last_error': 'ConnectionError: still refused',
                               'outage_started': 100.0, 'outages': 1}
    assert state.succeeded() is True and state.succeeded() is False
    assert log.info.call_count == 1
    assert 'Connection re-established' in log.info.call_args.args[0]
    assert log.info.call_args.kwargs['failures'] == 6
    assert state.as_dict()['outage_started'] is None and state.connected
    state.failed(ConnectionError('again'))
    assert log.error.call_count == 2 and state.outages == 2
    assert log.error.call_args.args[0].startswith('Lost contact')


# -- agents with a mocked OCS agent and a fake driver -------------------------------------

class FakeDevice:
    """Stands in for a driver: ``script`` items are returned or raised in turn."""

    def __init__(self, script, connected=False):
        self.script = list(script)
        self.calls = 0
        self.connected = connected
        self.on_call = None

    def next(self):
        self.calls += 1
        if self.on_call:
            self.on_call(self.calls)
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, BaseException):
            raise item
        return item

    get_data = identify = next

    def set_voltage(self, volts):
        return self.next()


def make_psu(device, **kwargs):
    agent = MagicMock()
    psu = PowerSupplyAgent(agent, '127.0.0.1', 5025, **kwargs)
    psu._device = device
    return psu, agent


def new_session(name='acq'):
    return OpSession(1, name, app=MagicMock(), status='running')


SAMPLE = {'voltage': 5.0, 'current': 0.5, 'voltage_setpoint': 5.0, 'current_setpoint': 1.0,
          'output': 1}


def test_acq_publishes_and_keeps_readings_time_and_link_state():
    psu, agent = make_psu(FakeDevice([SAMPLE]))
    session = new_session()
    ok, msg = psu.acq(session, {'test_mode': True})
    assert ok, msg
    feed, message = agent.publish_to_feed.call_args.args
    assert feed == 'psu' and message['data'] == SAMPLE and message['block_name'] == 'psu'
    assert session.data['fields'] == SAMPLE and session.data['connected'] is True
    assert abs(session.data['timestamp'] - time.time()) < 5
    assert not session.degraded
    assert psu.lock.acquire(timeout=0)      # acq let the lock go


def test_acq_survives_an_outage_logs_once_retries_quickly_and_recovers(monkeypatch):
    monkeypatch.setattr(polled_device, 'RETRY_INTERVAL', 0.01)
    down = NotConnected('connection refused')
    device = FakeDevice([SAMPLE, down, down, down, ReplyError('garbage'), SAMPLE, SAMPLE])
    psu, agent = make_psu(device, sample_interval=0.01)
    session = new_session()
    seen = []

    def observe(call):
        seen.append((session.degraded, session.data.get('connected')))
        if call == 7:
            psu._stop_acq(session, {})
    device.on_call = observe
    ok, msg = psu.acq(session, {'test_mode': False})
    assert ok and msg == 'Acquisition exited cleanly.'
    assert seen[2] == (True, False)               # degraded during the outage
    assert seen[6] == (False, True)               # recovered before the 7th call
    errors = [c for c in agent.log.error.call_args_list if 'Lost contact' in c.args[0]]
    assert len(errors) == 1
    infos = [c for c in agent.log.info.call_args_list if 're-established' in c.args[0]]
    assert len(infos) == 1
    assert session.data['last_error'] == 'ReplyError: garbage'
    assert agent.publish_to_feed.call_count == 3


def test_acq_retries_every_retry_interval_and_stops_promptly(monkeypatch):
    monkeypatch.setattr(polled_device, 'RETRY_INTERVAL', 0.02)
    device = FakeDevice([ConnectionError('down')])
    psu, _ = make_psu(device, sample_interval=60.0)
    session = new_session()
    device.on_call = lambda n: n == 5 and psu._stop_acq(session, {})
    start = time.monotonic()
    psu.acq(session, {'test_mode': False})
    assert device.calls == 5 and time.monotonic() - start < 2
    assert session.degraded and session.data['outage_started'] is not None


def test_stop_is_prompt_even_with_a_long_sample_interval():
    device = FakeDevice([SAMPLE])
    psu, _ = make_psu(device, sample_interval=60.0)
    # A mocked session: the stop request comes from a plain thread, which a real
    # OpSession would want to hop into the (here absent) reactor from.
    session = MagicMock(session_id=1, status='running', degraded=False, data={})
    timer = threading.Timer(0.2, psu._stop_acq, (session, {}))
    timer.start()
    start = time.monotonic()
    psu.acq(session, {'test_mode': False})
    timer.join()
    assert time.monotonic() - start < 2 and device.calls == 1
    session.set_status.assert_called_with('stopping')


def test_a_task_gets_the_lock_at_once_while_acq_waits_between_samples():
    device = FakeDevice([SAMPLE, SAMPLE, SAMPLE])
    psu, _ = make_psu(device, sample_interval=60.0)
    session = MagicMock(session_id=1, status='running', degraded=False, data={})
    sampled = threading.Event()
    device.on_call = lambda n: sampled.set()
    acq = threading.Thread(target=psu.acq, args=(session, {'test_mode': False}))
    acq.start()
    try:
        assert sampled.wait(5)
        start = time.monotonic()
        ok, msg = psu.set_voltage(new_session('set_voltage'), {'voltage': 2.0})
        assert ok, msg
        assert time.monotonic() - start < 1.0       # not one 60 s sample interval
    finally:
        psu._stop_acq(session, {})
        acq.join(5)
    assert not acq.is_alive()


def test_task_while_device_known_down_fails_fast_without_touching_it():
    device = FakeDevice([SAMPLE])
    psu, _ = make_psu(device)
    psu.outages.failed(NotConnected('connection refused'))
    ok, msg = psu.set_voltage(new_session('set_voltage'), {'voltage': 5.0})
    assert not ok and 'not attempted' in msg and 'unreachable since' in msg
    assert 'connection refused' in msg and device.calls == 0
    assert psu.lock.acquire(timeout=0)      # the lock is free


def test_task_tries_again_once_the_interface_reconnected():
    device = FakeDevice([None], connected=True)
    psu, _ = make_psu(device)
    psu.outages.failed(NotConnected('connection refused'))
    ok, msg = psu.set_voltage(new_session('set_voltage'), {'voltage': 5.0})
    assert ok and msg == 'Voltage set to 5 V' and device.calls == 1


@pytest.mark.parametrize('error, words', [
    (NotConnected('refused'), 'device unreachable (NotConnected: refused)'),
    (ReplyError('bad'), 'bad reply from device (bad)'),
    (DeviceReportedError([(-222, 'Data out of range')]), 'refused by the device'),
])
def test_task_device_faults_end_the_task_false_and_free_the_lock(error, words):
    psu, _ = make_psu(FakeDevice([error]))
    ok, msg = psu.set_voltage(new_session('set_voltage'), {'voltage': 5.0})
    assert not ok and msg.startswith('set_voltage failed: ') and words in msg
    assert psu.lock.acquire(timeout=0)


def test_task_fails_when_the_lock_stays_busy():
    psu, _ = make_psu(FakeDevice([None]), timeout=0.1, sample_interval=0.1)
    psu.lock_wait = 0.05
    assert psu.lock.acquire(job='acq')
    ok, msg = psu.set_voltage(new_session('set_voltage'), {'voltage': 5.0})
    assert not ok and 'held by acq' in msg


@pytest.mark.parametrize('op, params', [
    ('set_voltage', {'voltage': 30.5}), ('set_voltage', {'voltage': -1}),
    ('set_voltage', {'voltage': 'five'}), ('set_current', {'current': 5.01}),
    ('set_output', {'state': 'maybe'}), ('set_voltage', {}),
])
def test_params_outside_the_supply_limits_are_rejected(op, params):
    with pytest.raises(ParamError, match="Param '"):
        ParamHandler(params).batch(getattr(PowerSupplyAgent, op)._ocs_prescreen)


def test_params_inside_the_limits_pass_and_are_normalized():
    assert ParamHandler({'voltage': 30}).batch(
        PowerSupplyAgent.set_voltage._ocs_prescreen) == {'voltage': 30.0}
    assert ParamHandler({'state': 'ON'}).batch(
        CompressorAgent.power._ocs_prescreen) == {'state': 'on'}


def test_compressor_sample_keeps_identity_out_of_the_feed():
    data = cpa.decode_status(status_block(helium_temp=70.0))
    agent = MagicMock()
    comp = CompressorAgent(agent, '127.0.0.1')
    comp._device = FakeDevice([data])
    session = new_session()
    comp.acq(session, {'test_mode': True})
    published = agent.publish_to_feed.call_args.args[1]['data']
    assert published['helium_temp'] == 70.0 and 'model' not in published
    assert all(isinstance(v, (int, float)) for v in published.values())
    assert session.data['fields']['operating_state_name'] == 'running'


def test_agent_arguments_are_socs_style_and_checked():
    args = compressor_parser().parse_args(['--ip-address', '10.0.0.5', '--mode', 'acq'])
    assert (args.port, args.timeout, args.sample_interval, args.mode) == (502, 5.0, 1.0, 'acq')
    for bad in (['--port', '70000'], ['--sample-interval', '0'], ['--timeout', 'x']):
        with pytest.raises(SystemExit):
            compressor_parser().parse_args(['--ip-address', 'h'] + bad)
