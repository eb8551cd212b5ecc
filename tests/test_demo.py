"""``socs-tcp demo``: run end to end as a user runs it (a real crossbar, both
sample agents launched by ``ocs-agent-cli``, driven by ``OCSClient``), and its
own pieces without a stack: its terminal view, its arguments, a start that
fails, a second Ctrl-C."""

from __future__ import annotations

import io
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from socs_tcp._demo.run import make_parser
from socs_tcp._demo.view import LiveView
from socs_tcp.testing import processes_with_env


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


# -- the demo command -------------------------------------------------------------------

def _read_lines(stream, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_demo_command_runs_every_step_then_stops_cleanly_on_ctrl_c(tmp_path):
    """``socs-tcp demo --keep-running`` as a user runs it, then Ctrl-C."""
    # Every process the demo starts inherits this marker, so survivors can be found
    # whatever their parent became.
    marker = uuid.uuid4().hex
    env = dict(os.environ, SOCS_TCP_E2E_DEMO=marker)
    env.pop('TERM', None)
    # Run the console script's code with the default SIGINT handler, whatever this
    # process inherited (a shell may start background jobs with SIGINT ignored).
    launcher = ('import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); '
                'from socs_tcp.cli import main; sys.exit(main())')
    started = time.monotonic()
    demo = subprocess.Popen(
        [sys.executable, '-c', launcher, 'demo', '--duration', '0', '--outage', '3',
         '--keep-running', '--workdir', str(tmp_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(demo.stdout, lines), daemon=True).start()
    out: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any('running until Ctrl-C' in line for line in out):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, 'demo exited early:\n' + ''.join(out)
            out.append(line)
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    while (line := lines.get(timeout=5)) is not None:
        out.append(line)
    text = ''.join(out)
    elapsed = time.monotonic() - started
    # all steps done, then Ctrl-C in --keep-running mode is the normal way out
    assert demo.returncode == 0, f'exit {demo.returncode}\n{text}'
    assert re.search(r'readings arriving \(compressor-1 \d+, psu-1 \d+\)', text), text
    assert 'DEGRADED' in text and 're-established' in text, text
    assert re.search(r'set_voltage\(12\) read back 1[12]\.\d+ V', text), text
    assert 'FAIL' not in text and 'Traceback' not in text, text
    assert 'Ctrl-C: shutting down' in text, text
    # summary: five processes, each stopped by SIGINT with status 0
    stopped = re.findall(r'stopped\s+(\S+)\s+pid (\d+)\s+by (\S+)\s+in\s+[\d.]+ s, '
                         r'exit status (-?\d+)', text)
    assert {s[0] for s in stopped} == {'crossbar', 'compressor-sim', 'psu-sim',
                                       'compressor-1', 'psu-1'}, text
    assert all(how == 'SIGINT' and rc == '0' for _, _, how, rc in stopped), text
    assert processes_with_env('SOCS_TCP_E2E_DEMO', marker) == []
    assert elapsed < 60, f'demo --duration 0 took {elapsed:.0f} s'
    # not a terminal: plain lines, never cursor movement
    assert '\x1b[' not in text
