"""The argument checks shared by the library, the simulators and the command lines."""

import argparse

import pytest

from socs_tcp import _arguments as arguments


@pytest.mark.parametrize('check, value, exc, words', [
    (arguments.port, 0, ValueError, 'port must be in 1..65535'),
    (lambda v: arguments.port(v, allow_zero=True), -1, ValueError, 'port must be in 0..65535'),
    (arguments.port, 65536, ValueError, 'port must be in 1..65535'),
    (arguments.port, True, TypeError, 'port must be an int'),
    (arguments.port, 'http', TypeError, 'port must be an int'),
    (lambda v, n='timeout': arguments.seconds(v, n), 0, ValueError, 'timeout must be a finite number > 0'),
    (lambda v, n='timeout': arguments.seconds(v, n), float('nan'), ValueError, 'timeout must be'),
    (lambda v, n='timeout': arguments.seconds(v, n), float('inf'), ValueError, 'timeout must be'),
    (lambda v, n='timeout': arguments.seconds(v, n), '1', TypeError, 'timeout must be a number of seconds'),
    (lambda v, n='bufsize': arguments.count(v, n), 0, ValueError, 'bufsize must be > 0'),
    (lambda v, n='bufsize': arguments.count(v, n), 1.0, TypeError, 'bufsize must be an int'),
    (lambda v, n='msg': arguments.as_bytes(v, n), 5, TypeError, 'msg must be bytes or str'),
])
def test_bad_values_raise_naming_the_argument(check, value, exc, words):
    with pytest.raises(exc, match=words):
        check(value)


def test_good_values_come_back_in_the_stored_form():
    assert arguments.port('502') == 502
    assert arguments.port(0, allow_zero=True) == 0   # a port to listen on: pick a free one
    assert arguments.seconds(2, 'timeout') == 2.0 and isinstance(arguments.seconds(2, 't'), float)
    assert arguments.seconds(0, 'delay', allow_zero=True) == 0.0
    assert arguments.count(0, 'n', allow_zero=True) == 0
    assert arguments.as_bytes('µ', 'msg') == 'µ'.encode()
    assert arguments.as_bytes(None, 'reply', allow_none=True) is None


def test_command_lines_refuse_the_same_values_with_the_same_words(capsys):
    parser = argparse.ArgumentParser(prog='prog')
    parser.add_argument('--port', type=arguments.command_line(arguments.port, int))
    parser.add_argument('--timeout', type=arguments.command_line(arguments.seconds))
    assert parser.parse_args(['--port', '8000', '--timeout', '0.5']).timeout == 0.5
    for argv, words in ((['--port', '70000'], 'must be in 1..65535'),
                        (['--port', 'x'], "expected a number, got 'x'"),
                        (['--timeout', '-1'], 'must be a finite number > 0')):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert words in capsys.readouterr().err
