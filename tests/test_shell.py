"""socs-tcp shell: the command parsing (no terminal), and the shell fed by a pipe against simulators."""

from __future__ import annotations

import argparse
import os
import subprocess

import pytest

from socs_tcp import _record as record
from socs_tcp._shell import (
    Command,
    ShellError,
    hexdump,
    make_parser,
    parse_address,
    parse_line,
    parse_termination,
    show_bytes,
    unescape,
)
from tests._tools_support import SOCS_TCP, simulator

# -- parsing ------------------------------------------------------------------------

@pytest.mark.parametrize('line, expected', [
    ('', None),
    ('   ', None),
    ('*IDN?', Command('query', b'*IDN?')),
    ('OUTP 1', Command('write', b'OUTP 1')),
    ('query *R02', Command('query', b'*R02')),
    ('QUERY  MEAS:VOLT? ', Command('query', b'MEAS:VOLT?')),
    ('write SYST:REM', Command('write', b'SYST:REM')),
    (r'write \x02\x05', Command('write', b'\x02\x05')),
    ('read', Command('read')),
    ('read 12', Command('read', number=12)),
    ('timeout', Command('timeout')),
    ('timeout 0.5', Command('timeout', number=0.5)),
    ('stats', Command('stats')),
    ('help', Command('help')),
    ('quit', Command('exit')),
    ('exit', Command('exit')),
])
def test_parse_line(line, expected):
    assert parse_line(line) == expected


def test_bare_lines_follow_the_bare_option():
    assert parse_line('*R02', bare='query') == Command('query', b'*R02')
    assert parse_line('VOLT?', bare='write') == Command('write', b'VOLT?')


@pytest.mark.parametrize('line, message', [
    ('query', 'usage: query TEXT'),
    ('write', 'usage: write TEXT'),
    ('read some', 'N must be a whole number'),
    ('read 0', 'at least 1'),
    ('timeout never', 'usage: timeout'),
    ('timeout -1', 'timeout must be a number of seconds > 0'),
    ('timeout inf', 'timeout must be a number of seconds > 0'),
    ('exit now', 'exit takes no argument'),
    (r'write \x4', 'bad escape'),
    ('write Ω', 'only Latin-1 text'),
])
def test_bad_lines_say_why(line, message):
    with pytest.raises(ShellError, match=message):
        parse_line(line)


def test_escapes_and_terminations():
    assert unescape(r'a\r\n\t\\') == b'a\r\n\t\\'
    assert unescape("it's") == b"it's"
    assert parse_termination('CRLF') == b'\r\n'
    assert parse_termination(r'\r') == b'\r'
    assert parse_termination('none') == b''
    with pytest.raises(argparse.ArgumentTypeError):
        parse_termination(r'\x')


def test_addresses():
    assert parse_address('10.10.10.3:4001') == ('10.10.10.3', 4001)
    assert parse_address('[::1]:5025') == ('::1', 5025)
    for bad in ('10.10.10.3', ':5025', 'host:port', 'host:0'):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_address(bad)


def test_command_line_errors_name_the_option(capsys):
    for argv, word in ((['h:1', '--gpib', '31'], '--gpib'),
                       (['h:1', '--timeout', '0'], '--timeout'),
                       (['h:1', '--read-termination', r'\x'], '--read-termination')):
        with pytest.raises(SystemExit):
            make_parser().parse_args(argv)
        assert word in capsys.readouterr().err


def test_reply_views():
    assert show_bytes(b'+1.5E+00', False, 'utf-8') == '+1.5E+00'
    assert show_bytes(b'ok\x00\xff', False, 'utf-8') == "ok\\x00\\xff"
    assert hexdump(b'\x01\x03AB') == '0000  01 03 41 42' + ' ' * 36 + '  |..AB|'
    assert hexdump(bytes(range(20))).splitlines()[1].startswith('0010  10 11 12 13')


# -- the shell, fed by a pipe --------------------------------------------------------

def run_shell(port: int, lines: list[str], *options: str, env_extra=None) -> str:
    env = {k: v for k, v in os.environ.items() if k != record.RECORD_ENV}
    env.update(env_extra or {})
    out = subprocess.run([*SOCS_TCP, 'shell', f'127.0.0.1:{port}', '--history', '', *options],
                         input='\n'.join(lines) + '\n', capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_queries_writes_reads_timing_and_transcript(tmp_path):
    transcript = tmp_path / 'session.txt'
    with simulator('psu') as psu:
        out = run_shell(psu.port, ['*IDN?', 'write VOLT 4.5', 'query VOLT?', 'write MEAS:CURR?',
                                   'read', 'timeout 0.3', 'bogus?', 'exit', 'VOLT?'],
                        '--transcript', str(transcript))
    lines = out.splitlines()
    assert f'[connected to 127.0.0.1:{psu.port}]' in lines
    assert any(line.startswith('SOCS-TCP,SIM-PSU') and line.endswith(' ms]') for line in lines), out
    assert any(line.startswith('+4.500000E+00  [') for line in lines), out   # query
    assert any(line.startswith('+0.000000E+00  [') for line in lines), out   # write, then read
    assert '(sent 9 bytes)' in out                                           # 'VOLT 4.5\n'
    assert 'timeout 0.3 s' in out
    assert 'error: no reply from' in out                                     # bogus? timed out
    assert out.count('+4.500000E+00') == 1                                   # nothing after exit
    text = transcript.read_text()
    assert "> b'query VOLT?'" not in text and "> b'VOLT?'" in text and "< b'+4.500000E+00'" in text


def test_binary_view_and_trace():
    with simulator('psu') as psu:
        out = run_shell(psu.port, ['*IDN?'], '--binary', '--trace')
    assert "  >> b'*IDN?\\n'" in out
    assert '0000  53 4f 43 53' in out and '|SOCS-TCP,SIM-PSU|' in out


def test_a_device_that_is_down_says_so_and_each_command_fails_at_once():
    with simulator('psu') as psu:
        psu.control.send('stop')
        out = run_shell(psu.port, ['*IDN?'])
        assert 'is not reachable now; trying again in the background' in out
        assert 'error: cannot connect' in out


def test_gpib_sets_up_the_prologix_after_each_connect(tmp_path):
    # The recording shows what went on the wire: the box set up, then the query.
    folder = tmp_path / 'rec'
    with simulator('psu') as psu:
        out = run_shell(psu.port, ['*IDN?'], '--gpib', '7',
                        env_extra={record.RECORD_ENV: str(folder) + os.sep})
    assert '[Prologix: controller mode, read-after-write, GPIB address 7]' in out
    sent = b''.join(e.data for e in record.read(next(folder.iterdir())) if e.kind == '>')
    assert sent == b'++mode 1\n++auto 1\n++addr 7\n*IDN?\n'


def test_moxa_flushes_what_the_bridge_kept(tmp_path):
    # A bridge delivering a late reply as soon as we connect: a recording with a "greeting".
    path = tmp_path / 'moxa.rec'
    path.write_text("0 m:1 open\n0.1 m:1 < 'LATE 1.0\\r'\n0.2 m:1 > 'PR1\\r'\n0.3 m:1 < '2.0\\r'\n")
    with simulator('replay', str(path)) as bridge:
        out = run_shell(bridge.port, ['PR1'], '--moxa', '--bare', 'query',
                        '--read-termination', 'cr', '--write-termination', 'cr')
    assert '[flushed 9 stale bytes the bridge kept]' in out
    assert '2.0  [' in out and 'LATE' not in out.replace('flushed', '')
