"""The demo's own pieces without a stack: its terminal view, its arguments, and
a start that fails. The demo itself runs end to end in test_e2e.py."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

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


@pytest.mark.parametrize('where', ['a file', 'under a file'])
def test_demo_bad_workdir_is_one_line_without_a_traceback(tmp_path, where):
    (tmp_path / 'f').write_text('')
    bad = tmp_path / 'f' if where == 'a file' else tmp_path / 'f' / 'sub'
    done = subprocess.run([Path(sys.executable).parent / 'socs-tcp', 'demo', '--workdir', str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f'socs-tcp demo: --workdir {bad}: ') and done.stderr.count('\n') == 1, \
        done.stderr


# Ignores SIGINT (as a process stuck in a blocking call would), announces itself, waits.
_STUBBORN = ('import signal, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); '
             'print("PORT 1", flush=True); time.sleep(60)')


def test_a_second_ctrl_c_during_shutdown_says_what_it_does_and_blames_no_agent(tmp_path):
    from socs_tcp._demo.run import Demo
    from socs_tcp.testing import OcsStack

    out = io.StringIO()
    with OcsStack(tmp_path, stop_waits=(30.0, 5.0, 5.0)) as stack:
        stack.start_service('stubborn', [sys.executable, '-c', _STUBBORN])
        demo = Demo(make_parser().parse_args([]), stack, LiveView(out, ansi=False))
        # The user presses Ctrl-C again while the demo waits (up to 30 s) after SIGINT.
        again = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
        again.start()
        started = time.monotonic()
        try:
            records = demo.shutdown()
        finally:
            again.cancel()
        took = time.monotonic() - started
    assert records[0].ended_by == 'SIGTERM' and took < 10, (records, took)
    text = out.getvalue()
    assert 'Ctrl-C again skips the wait' in text                      # said before
    assert 'Ctrl-C again: not waiting for stubborn to exit cleanly; sending SIGTERM' in text   # said when
    step = demo.steps['shutdown']
    assert step.ok and 'because Ctrl-C was pressed again' in step.detail and 'needed' not in step.detail
