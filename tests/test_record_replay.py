"""Record (SOCS_TCP_RECORD) and replay (socs-tcp simulate replay): a session becomes a device."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from socs_tcp import _record as record
from socs_tcp.sim.devices.replay import ReplaySimulator, exchanges
from tests._tools_support import SOCS_TCP, simulator

# The sample agent's driver, unchanged: set a voltage, switch the output on, read everything.
DRIVER_SCRIPT = """
import json, sys
from socs_tcp.agents.power_supply.drivers import PowerSupply
psu = PowerSupply('127.0.0.1', int(sys.argv[1]), timeout=float(sys.argv[2]))
if sys.argv[3] == 'set':
    psu.set_voltage(3.25)
    psu.set_output(True)
data = psu.get_data()
data['idn'] = psu.identify()
psu.close()
print(json.dumps(data, sort_keys=True))
"""


def run_driver(port: int, *, set_values: bool, env_extra: dict | None = None,
               timeout: float = 2.0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != record.RECORD_ENV}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, '-c', DRIVER_SCRIPT, str(port), str(timeout),
                           'set' if set_values else 'read'],
                          capture_output=True, text=True, env=env, timeout=60)


# -- the format ---------------------------------------------------------------------

def test_bytes_round_trip_through_the_text_format():
    for data in (b'VOLT?\n', b'\x00\xff\r\n', b"it's \"quoted\" \\ ", b''):
        assert record.decode_bytes(record.encode_bytes(data)) == data


def test_parse_reads_each_event_and_names_a_bad_line():
    text = ("# socs_tcp recording 1\n\n"
            "0.0 10.0.0.5:5025 open\n"
            "0.1 10.0.0.5:5025 > 'VOLT?\\n'\n"
            "0.2 10.0.0.5:5025 < '1.5\\n'\n"
            "0.3 10.0.0.5:5025 close 'gone'\n")
    events = record.parse(text)
    assert [(e.kind, e.data, e.reason) for e in events] == [
        ('open', b'', ''), ('>', b'VOLT?\n', ''), ('<', b'1.5\n', ''), ('close', b'', 'gone')]
    with pytest.raises(ValueError, match=r'site\.rec:2: expected quoted bytes'):
        record.parse("0.0 h:1 open\n0.1 h:1 > VOLT?\n", 'site.rec')
    with pytest.raises(ValueError, match=r'x:1: time must be a number'):
        record.parse("soon h:1 open\n", 'x')
    with pytest.raises(ValueError, match=r'x:1: expected'):
        record.parse("0.0 h:1 opened\n", 'x')


def test_recorder_writes_one_file_per_device_in_a_directory(tmp_path):
    rec = record.Recorder(str(tmp_path / 'session') + os.sep)
    rec.opened('10.0.0.5:5025')
    rec.sent('10.0.0.5:5025', b'*IDN?\n')
    rec.opened('10.0.0.6:4001')
    rec.received('10.0.0.5:5025', b'ACME\n')
    rec.closed('10.0.0.5:5025', 'Connection lost.')
    rec.close()
    files = sorted(p.name for p in (tmp_path / 'session').iterdir())
    assert files == ['10.0.0.5_5025.rec', '10.0.0.6_4001.rec']
    events = record.read(tmp_path / 'session' / '10.0.0.5_5025.rec')
    assert [(e.kind, e.data) for e in events] == [
        ('open', b''), ('>', b'*IDN?\n'), ('<', b'ACME\n'), ('close', b'')]
    assert events[-1].reason == 'Connection lost.'
    assert [e.time for e in events] == sorted(e.time for e in events)


def test_recording_is_off_unless_the_variable_is_set():
    code = 'import socs_tcp, socs_tcp._tap as t; print(len(t.taps))'
    env = {k: v for k, v in os.environ.items() if k != record.RECORD_ENV}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == '0', out.stderr
    env[record.RECORD_ENV] = os.devnull
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == '1', out.stderr


# -- matching requests to replies -----------------------------------------------------

def _events(lines: str) -> list[record.Event]:
    return record.parse('\n'.join(f'{i * 0.01:.2f} d:1 {line}' for i, line in
                                  enumerate(lines.strip().splitlines())))


def test_exchanges_split_writes_from_the_query_a_reply_answers():
    found, term, greeting = exchanges(_events("""
        open
        < 'READY\\r\\n'
        > 'OUT 1\\r\\nVOLT?\\r\\n'
        < '1.'
        < '5\\r\\n'
        > 'VOLT?\\r\\n'
        < '1.6\\r\\n'
        """))
    assert term == b'\r\n'
    assert greeting == b'READY\r\n'
    assert [(x.request, x.reply) for x in found] == [
        (b'OUT 1', None), (b'VOLT?', b'1.5\r\n'), (b'VOLT?', b'1.6\r\n')]
    assert found[1].latency == pytest.approx(0.01)


def test_requests_without_a_common_terminator_are_one_read_each():
    found, term, _ = exchanges(_events("""
        open
        > '\\x01\\x03\\x00\\x01'
        < '\\x01\\x03\\x02\\x00\\x07'
        """))
    assert term is None
    assert found[0].request == b'\x01\x03\x00\x01'


def test_replay_rejects_a_recording_it_cannot_serve(tmp_path):
    path = tmp_path / 'two.rec'
    path.write_text("0 a:1 open\n0.1 a:1 > 'X\\n'\n0 b:2 open\n")
    with pytest.raises(ValueError, match=r"2 devices \['a:1', 'b:2'\]; say which"):
        ReplaySimulator(path)
    with pytest.raises(ValueError, match='link must be one of'):
        ReplaySimulator(path, link='c:3')
    with pytest.raises(ValueError, match='nothing was sent to b:2'):
        ReplaySimulator(path, link='b:2')
    assert ReplaySimulator(path, link='a:1').exchanges[0].request == b'X'


# -- end to end: record a driver against a simulator, replay, read the same values ------

def test_a_recorded_driver_reads_the_same_values_from_the_replay(tmp_path):
    folder = tmp_path / 'site'
    with simulator('psu') as psu:
        recorded = run_driver(psu.port, set_values=True,
                              env_extra={record.RECORD_ENV: str(folder) + os.sep})
        assert recorded.returncode == 0, recorded.stderr
        port = psu.port
    values = json.loads(recorded.stdout)
    assert values['voltage_setpoint'] == 3.25 and values['output'] == 1
    [path] = folder.iterdir()
    assert path.name == f'127.0.0.1_{port}.rec'
    text = path.read_text()
    assert "> 'VOLT 3.25\\n'" in text or "> 'VOLT 3.25" in text, text

    with simulator('replay', str(path)) as replay:
        replayed = run_driver(replay.port, set_values=True)
        assert replayed.returncode == 0, replayed.stderr
        assert json.loads(replayed.stdout) == values
        # The fault vocabulary on top: a late device times the unchanged driver out.
        replay.control.send('delay 1.5')
        late = run_driver(replay.port, set_values=False, timeout=0.5)
        assert late.returncode != 0
        assert 'DeviceTimeout' in late.stderr, late.stderr[-2000:]


def test_replay_keeps_the_recorded_timing_when_asked(tmp_path):
    path = tmp_path / 'slow.rec'
    path.write_text("# a slow gauge\n0.0 g:1 open\n1.0 g:1 > 'PR1\\r'\n1.4 g:1 < '1.0E-03\\r'\n")

    def ask(port: int) -> tuple[bytes, float]:
        with socket.create_connection(('127.0.0.1', port), timeout=5) as sock:
            start = time.monotonic()
            sock.sendall(b'PR1\r')
            reply = b''
            while not reply.endswith(b'\r'):
                reply += sock.recv(100)
            return reply, time.monotonic() - start

    with simulator('replay', str(path), '--recorded-timing') as replay:
        reply, took = ask(replay.port)
        assert reply == b'1.0E-03\r' and took >= 0.4
    with simulator('replay', str(path)) as replay:
        reply, took = ask(replay.port)
        assert reply == b'1.0E-03\r' and took < 0.4


def test_simulate_replay_says_what_is_wrong_with_its_arguments(tmp_path):
    out = subprocess.run([*SOCS_TCP, 'simulate', 'replay'], capture_output=True, text=True)
    assert out.returncode == 2 and 'replay needs a recording' in out.stderr
    out = subprocess.run([*SOCS_TCP, 'simulate', 'replay', str(tmp_path / 'nope.rec')],
                         capture_output=True, text=True)
    assert out.returncode == 2 and 'nope.rec' in out.stderr
    out = subprocess.run([*SOCS_TCP, 'simulate', 'psu', 'file.rec'], capture_output=True, text=True)
    assert out.returncode == 2 and 'for replay only' in out.stderr
