"""The simulated compressor and power supply, their fault-control channel, and
``socs-tcp simulate`` run as a real subprocess.
"""

import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads

from socs_tcp.agents.compressor import drivers as cpa
from socs_tcp.agents.compressor.simulator import CompressorSimulator
from socs_tcp.agents.power_supply.simulator import PowerSupplyModel, PowerSupplySimulator
from socs_tcp.sim import cli as sim_cli
from socs_tcp.sim._commands import COMMANDS
from socs_tcp.sim.control import HELP, ControlChannel, SimControl, SimControlError
from socs_tcp.sim.devices.cryomech_cpa import IDLING, RUNNING, STARTING, STOPPING, CompressorModel

# -- compressor model ---------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def read_status(model, tid=1):
    frame = model.handle(cpa.build_read_request(tid, 1, cpa.FIRST_REGISTER, cpa.REGISTER_COUNT))
    return cpa.decode_status(cpa.parse_read_reply(frame, tid, 1, cpa.REGISTER_COUNT))


def power(model, state, tid=2):
    value = cpa.POWER_VALUES[state]
    frame = model.handle(cpa.build_write_request(tid, 1, cpa.POWER_REGISTER, value))
    cpa.parse_write_reply(frame, tid, 1, cpa.POWER_REGISTER, value)


def test_compressor_power_cycle_moves_state_and_readings():
    clock = FakeClock()
    model = CompressorModel(clock=clock, start_duration=2.0, stop_duration=1.0,
                            time_constant=5.0, seed=1)
    off = read_status(model)
    assert off['operating_state'] == IDLING and off['motor_current'] == 0.0
    assert abs(off['high_pressure'] - off['low_pressure']) < 5        # equalized
    power(model, 'on')
    assert read_status(model)['operating_state'] == STARTING
    clock.now += 2.5
    assert read_status(model)['operating_state'] == RUNNING
    clock.now += 60
    on = read_status(model)
    assert on['compressor_state'] == 1 and on['motor_current'] > 10
    assert on['helium_temp'] > off['helium_temp'] + 30
    assert on['high_pressure'] - on['low_pressure'] > 150
    assert on['hours_of_operation'] > off['hours_of_operation']
    power(model, 'off')
    assert read_status(model)['operating_state'] == STOPPING
    clock.now += 1.5
    stopped = read_status(model)
    assert stopped['operating_state'] == IDLING and stopped['motor_current'] == 0.0
    clock.now += 60
    assert read_status(model)['helium_temp'] < on['helium_temp'] - 20


@pytest.mark.parametrize('pdu, code', [
    (bytes([0x03, 0, 1, 0, 1]), 1),           # unsupported function
    (bytes([0x04, 0, 30, 0, 10]), 2),         # past the end of the map
    (bytes([0x04, 0, 1, 0, 0]), 3),           # zero registers
    (bytes([0x06, 0, 9, 0, 1]), 2),           # not the power register
    (bytes([0x06, 0, 1, 0, 7]), 3),           # neither on nor off
])
def test_compressor_refuses_bad_requests_with_modbus_exceptions(pdu, code):
    model = CompressorModel()
    frame = model.handle(bytes([0, 5, 0, 0, 0, len(pdu) + 1, 1]) + pdu)
    # Same transaction and unit, length 3, function with the exception bit, the code.
    assert frame == bytes([0, 5, 0, 0, 0, 3, 1, pdu[0] | 0x80, code])


def test_compressor_ignores_frames_that_are_not_modbus_tcp():
    assert CompressorModel().handle(b'\x00\x01\x00\x05\x00\x02\x01\x04') is None


# -- power supply model ----------------------------------------------------------------

def ask(model, line):
    return model.handle(line.encode())


def test_psu_regulates_constant_voltage_then_constant_current():
    model = PowerSupplyModel(load_ohms=10.0, noise_volts=0, noise_amps=0)
    for line in ('VOLT 12', 'CURR 2', 'OUTP ON'):
        assert ask(model, line) is None
    assert float(ask(model, 'MEAS:VOLT?')) == 12.0 and float(ask(model, 'MEAS:CURR?')) == 1.2
    ask(model, 'CURR 0.5')                      # 12 V / 10 ohm needs more than 0.5 A
    assert model.mode == 'CC'
    assert float(ask(model, 'MEAS:CURR?')) == 0.5 and float(ask(model, 'MEAS:VOLT?')) == 5.0
    ask(model, 'OUTP OFF')
    assert float(ask(model, 'MEAS:VOLT?')) == 0.0 and ask(model, 'OUTP?') == '0'
    assert float(ask(model, 'VOLT?')) == 12.0   # set points survive the output switch


def test_psu_accepts_long_forms_any_case_and_min_max():
    model = PowerSupplyModel()
    ask(model, 'source:voltage max')     # not a command we know: SOURce isn't modelled
    assert ask(model, 'SYST:ERR?') == '-113,"Undefined header"'
    ask(model, 'voltage MAX')
    assert float(ask(model, 'Volt?')) == 30.0
    assert ask(model, 'SYSTEM:ERROR?') == '0,"No error"'
    assert ask(model, '*idn?').startswith('SOCS-TCP,')


def test_psu_error_queue_reports_bad_commands_oldest_first():
    model = PowerSupplyModel()
    ask(model, 'VOLT 31')
    ask(model, 'CURR abc')
    ask(model, 'FOO?')
    ask(model, 'OUTP MAYBE')
    ask(model, 'VOLT')
    assert [ask(model, 'SYST:ERR?') for _ in range(6)] == [
        '-222,"Data out of range"', '-104,"Data type error"', '-113,"Undefined header"',
        '-224,"Illegal parameter value"', '-109,"Missing parameter"', '0,"No error"']
    assert model.voltage == 0.0                 # the refused value was not applied


def test_psu_error_queue_overflows_like_a_real_one():
    model = PowerSupplyModel()
    for _ in range(25):
        ask(model, 'BOGUS')
    errors = [ask(model, 'SYST:ERR?') for _ in range(21)]
    assert errors[18] == '-113,"Undefined header"'
    assert errors[19] == '-350,"Queue overflow"' and errors[20] == '0,"No error"'


# -- control channel, in process ---------------------------------------------------------

@pytest.fixture
def channel():
    sim = CompressorSimulator()
    sim.start()
    ctl = ControlChannel(sim)
    yield ctl
    pytest_twisted.blockon(ctl.stop())
    pytest_twisted.blockon(sim.stop())


@pytest_twisted.inlineCallbacks
def test_control_commands_set_faults_and_report_status(channel):
    sim = channel.server
    assert (yield channel.execute('silent on')) == 'OK silent on'
    assert sim.faults.silent
    assert (yield channel.execute('delay 0.25')) == 'OK delay 0.25'
    assert sim.faults.delay == 0.25
    assert (yield channel.execute('garbage dead')) == 'OK garbage 2 bytes before the next reply'
    assert sim.faults.garbage == b'\xde\xad'
    assert (yield channel.execute('fragments 3 0.01')) == 'OK fragments 3 0.01'
    status = yield channel.execute('status')
    assert status.startswith('OK listening=1') and 'silent=1' in status
    assert 'state=idling' in status                     # the device's own state
    assert (yield channel.execute('reset')) == 'OK faults cleared'
    assert not sim.faults.silent and sim.faults.delay == 0 and sim.faults.fragment_size is None


@pytest_twisted.inlineCallbacks
def test_control_stop_start_and_timed_restart(channel):
    sim = channel.server
    assert (yield channel.execute('stop')) == 'OK stopped'
    assert not sim.listening
    assert (yield channel.execute('start')) == f'OK listening on {sim.port}'
    assert sim.listening
    assert (yield channel.execute('restart 0.2')) == 'OK stopped; back in 0.2 s'
    assert not sim.listening
    start = time.monotonic()
    while not sim.listening and time.monotonic() - start < 3:
        yield task.deferLater(reactor, 0.02, lambda: None)
    assert sim.listening and time.monotonic() - start >= 0.15


@pytest_twisted.inlineCallbacks
def test_control_hangup_closes_device_connections_cleanly(channel):
    sock = yield threads.deferToThread(socket.create_connection,
                                       ('127.0.0.1', channel.server.port), 3)
    try:
        yield channel.server.when_connections(1, timeout=3)
        assert (yield channel.execute('hangup')) == 'OK closed 1 connections'
        # the end of the stream, where a reset (drop) raises ConnectionResetError
        assert (yield threads.deferToThread(sock.recv, 10)) == b''
        assert channel.server.listening
    finally:
        sock.close()


@pytest_twisted.inlineCallbacks
def test_control_blackhole_on_then_off(channel):
    sim = channel.server
    assert (yield channel.execute('blackhole on')) == \
        'OK blackholed: connections silent, new ones hang'
    assert sim.blackholed and not sim.listening and sim.faults.silent
    assert 'blackhole=1' in (yield channel.execute('status'))
    assert (yield channel.execute('blackhole off')) == f'OK back: listening on {sim.port}'
    assert sim.listening and not sim.blackholed and not sim.faults.silent


@pytest.mark.parametrize('line, error', [
    ('bogus', "ERR unknown command 'bogus'"),
    ('silent maybe', "ERR silent must be 'on' or 'off', got 'maybe' (usage: silent on|off)"),
    ('delay -1', "ERR seconds must be a finite number of seconds >= 0, got '-1' (usage: delay <seconds>)"),
    ('delay', 'ERR usage: delay <seconds>'),
    ('delay 1 2', 'ERR usage: delay <seconds>'),
    ('status now', 'ERR usage: status'),
    ('garbage xyz', "ERR hex must be hex digits, got 'xyz' (usage: garbage <hex>)"),
    ('fragments some', "ERR size must be an integer or 'off'"),
    ('drop-after 0', 'ERR n must be > 0'),
])
@pytest_twisted.inlineCallbacks
def test_control_rejects_bad_commands_with_err(channel, line, error):
    answer = yield channel.execute(line)
    assert answer.startswith(error), answer


# -- the fault commands, defined once -------------------------------------------------------

def test_every_control_command_has_one_channel_handler_and_one_client_method():
    names = {c.method_name for c in COMMANDS}
    handlers = {name[len('_cmd_'):] for name in vars(ControlChannel) if name.startswith('_cmd_')}
    methods = {name for name in vars(SimControl) if not name.startswith('_')} - {'send'}
    assert handlers == names
    assert methods == names          # one name per command: no second spelling (hang_up)
    assert HELP.split(' | ') == [c.usage for c in COMMANDS]


@pytest_twisted.inlineCallbacks
def test_sim_control_methods_send_what_the_channel_reads(channel):
    sim = channel.server
    ctl = SimControl('127.0.0.1', channel.start())
    sock = yield threads.deferToThread(socket.create_connection, ('127.0.0.1', sim.port), 3)
    try:
        yield sim.when_connections(1, timeout=3)
        assert (yield threads.deferToThread(ctl.hangup)) == 'closed 1 connections'
        assert (yield threads.deferToThread(sock.recv, 10)) == b''      # FIN, not a reset
    finally:
        sock.close()
    assert (yield threads.deferToThread(ctl.fragments, 3, 0.5)) == 'fragments 3 0.5'
    assert (sim.faults.fragment_size, sim.faults.fragment_interval) == (3, 0.5)
    assert (yield threads.deferToThread(ctl.fragments, None)) == 'fragments off'
    assert sim.faults.fragment_size is None
    yield threads.deferToThread(ctl.garbage, b'\x00\xff')
    yield threads.deferToThread(ctl.drop_after, 2)
    yield threads.deferToThread(ctl.delay, 0.125)
    yield threads.deferToThread(ctl.silent, True)
    faults = sim.faults
    assert (faults.garbage, faults.drop_countdown, faults.delay, faults.silent) == \
        (b'\x00\xff', 2, 0.125, True)
    assert (yield threads.deferToThread(ctl.help)) == HELP


@pytest.mark.parametrize('call, error', [
    (lambda ctl: ctl.garbage(b''), ValueError),
    (lambda ctl: ctl.drop_after('2'), TypeError),
    (lambda ctl: ctl.delay(-1), ValueError),
    (lambda ctl: ctl.fragments(2.5), TypeError),
])
def test_sim_control_refuses_bad_values_before_sending(call, error):
    with socket.socket() as s:                   # nothing listens there: a send would fail
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    with pytest.raises(error):
        call(SimControl('127.0.0.1', port, timeout=1))


def simulate_help(capsys, *args):
    with pytest.raises(SystemExit) as exit:
        sim_cli.main([*args, '--help'])
    assert exit.value.code == 0
    return capsys.readouterr().out


def test_simulate_help_lists_each_devices_commands_and_every_fault_control(capsys):
    out = simulate_help(capsys)
    lines = [line.strip() for line in out.splitlines()]
    for c in COMMANDS:
        assert any(line.startswith(c.usage) and line.endswith(c.summary) for line in lines), c.name
    for device in sim_cli.DEVICES:
        assert f'{device}:' in lines
        for request, what in sim_cli._simulator_class(device).command_set:
            assert any(line.startswith(request) and line.endswith(what) for line in lines), request


def test_simulate_device_help_lists_that_devices_commands_only(capsys):
    out = simulate_help(capsys, 'psu')
    assert 'psu:' in out and 'SYST:ERR?' in out and 'hangup' in out
    assert 'lakeshore372:' not in out and 'KRDG?' not in out


def test_psu_command_set_is_what_the_model_understands():
    model = PowerSupplyModel()
    for request, _what in PowerSupplySimulator.command_set:
        reply = ask(model, request)
        assert (reply is not None) == request.endswith('?'), request
        assert ask(model, 'SYST:ERR?') == '0,"No error"', request


# -- socs-tcp simulate, as a process --------------------------------------------------------

def read_lines(proc, n, timeout=10.0):
    """Read ``n`` stdout lines from ``proc`` within ``timeout`` seconds."""
    lines, buf = [], b''
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while len(lines) < n:
        left = deadline - time.monotonic()
        assert left > 0, f'simulator printed only {lines!r}'
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f'simulator exited early (rc={proc.poll()}), printed {lines!r}'
            buf += chunk
            *done, buf = buf.split(b'\n')
            lines += [line.decode() for line in done]
    return lines


@pytest.fixture
def simulate():
    """Start ``socs-tcp simulate ...``; kill it (by pid) if the test didn't stop it."""
    procs = []

    def run(*args):
        proc = subprocess.Popen([sys.executable, '-m', 'socs_tcp.cli', 'simulate', *args],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def scpi(port, line):
    with socket.create_connection(('127.0.0.1', port), timeout=3) as sock:
        sock.sendall(line.encode() + b'\n')
        return sock.makefile('rb').readline().decode().strip()


def test_cli_prints_ports_obeys_its_control_channel_and_exits_on_sigterm(simulate):
    proc = simulate('psu', '--host', '127.0.0.1', '--port', '0', '--control-port', '0')
    port_line, control_line = read_lines(proc, 2)
    assert port_line.startswith('PORT ') and control_line.startswith('CONTROL ')
    port, control = int(port_line.split()[1]), int(control_line.split()[1])
    assert scpi(port, '*IDN?').startswith('SOCS-TCP,SIM-PSU')
    ctl = SimControl('127.0.0.1', control)
    assert ctl.stop() == 'stopped'
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(('127.0.0.1', port), timeout=3).close()
    assert ctl.status()['listening'] == '0'
    assert ctl.start() == f'listening on {port}'
    assert scpi(port, 'OUTP?') == '0'
    with pytest.raises(SimControlError, match='unknown command'):
        ctl.send('explode')
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_cli_compressor_on_a_given_port_exits_on_sigint(simulate):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    proc = simulate('compressor', '--port', str(port))
    assert read_lines(proc, 1) == [f'PORT {port}']
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0


def test_cli_says_so_and_exits_nonzero_when_the_port_is_taken():
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, '-m', 'socs_tcp.cli', 'simulate', 'psu',
                                 '--port', str(port)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and 'cannot listen' in result.stderr
    assert 'PORT' not in result.stdout


def test_cli_rejects_a_bad_device_name():
    result = subprocess.run([sys.executable, '-m', 'socs_tcp.cli', 'simulate', 'toaster'],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and 'invalid choice' in result.stderr


def test_sim_control_reports_a_channel_that_is_not_there():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError):
        SimControl('127.0.0.1', port, timeout=1).status()
