"""The demo's own pieces without a stack: its terminal view, its arguments, and
a start that fails. The demo itself runs end to end in test_e2e.py."""

from __future__ import annotations

import io
import re

import pytest

from socs_tcp._demo.run import make_parser
from socs_tcp._demo.view import LiveView


def test_live_view_redraws_in_place_only_on_a_terminal():
    tty = io.StringIO()
    view = LiveView(tty, ansi=True)
    view.live(['a', 'b'])
    view.event('happened')
    view.live(['c', 'd'])
    text = tty.getvalue()
    # the event clears the two live lines, prints itself, the block comes back below
    assert text.startswith('a\nb\n\x1b[2F\x1b[J[')
    assert text.endswith('happened\nc\nd\n')

    plain = io.StringIO()
    view = LiveView(plain, ansi=False, plain_interval=60)
    view.live(['a', 'b'])
    view.live(['c', 'd'])            # within plain_interval: not repeated
    view.event('happened')
    assert '\x1b' not in plain.getvalue()
    assert plain.getvalue().count('\n') == 3 and 'c' not in plain.getvalue()


@pytest.mark.parametrize('argv, name', [(['--duration', '-1'], 'duration'),
                                        (['--outage', 'soon'], 'outage')])
def test_demo_rejects_bad_arguments_naming_them(argv, name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert f'--{name}' in capsys.readouterr().err


def test_demo_reports_a_failed_start_and_exits_non_zero(tmp_path, monkeypatch, capsys):
    import socs_tcp.testing._stack as stack_module
    from socs_tcp._demo import run

    def missing(name, hint):
        raise FileNotFoundError(f'{name!r} not found: {hint}')

    monkeypatch.setattr(stack_module, 'find_executable', missing)
    assert run.main(['--duration', '0', '--workdir', str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"FAIL start\s+FileNotFoundError: 'crossbar' not found: pip install "
                     r"crossbar", out), out
    assert re.search(r'ok\s+shutdown\s+0 processes stopped', out), out
    assert (tmp_path / 'demo.log').exists()
