"""The chaos soak holds its promises: a real 30 s, 20-device run, and its counting.

The real run is bench/soak.py as a subprocess (devices in another process,
socs_tcp interfaces polled by worker threads while faults are injected). The
fast tests beside it check that the soak's worker loop really counts what it
must catch, using fake interfaces, so a broken counter can't hide a bug.

The real run is in the slow tier (``make test-slow``); the fast tests run by default.
"""

import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / 'bench'
sys.path.insert(0, str(BENCH))

import soak  # noqa: E402  (bench/ is a script folder, not a package)


def figure(text: str, name: str) -> int:
    match = re.search(rf'^{re.escape(name)}: (\d+)', text, re.MULTILINE)
    assert match, f'{name!r} missing from the soak summary:\n{text}'
    return int(match.group(1))


@pytest.mark.slow     # a real 30 s run: the slow tier
@pytest.mark.timeout(150)
def test_30_second_soak_with_20_devices():
    done = subprocess.run(
        [sys.executable, str(BENCH / 'soak.py'), '--seconds', '30', '--devices', '20'],
        capture_output=True, text=True, timeout=140)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert 'RESULT: PASS' in out
    assert figure(out, 'misattributed replies') == 0
    assert figure(out, 'late calls (> timeout + 0.25 s)') == 0
    assert figure(out, 'other exceptions') == 0
    assert figure(out, 'replies verified') > 1000
    # The chaos really happened: calls failed, and every kind of fault was injected.
    assert figure(out, 'ConnectionErrors (expected)') > 0
    chaos = re.search(r'^chaos events: (.*)$', out, re.MULTILINE).group(1)
    for fault in soak.Chaos.FAULTS:
        assert fault in chaos
    assert 'interfaces answering after the chaos: 20/20' in out
    for resource in ('fds', 'threads'):
        start, end = map(int, re.search(rf'^{resource}: (\d+) -> (\d+)', out,
                                        re.MULTILINE).groups())
        assert end <= start + soak.FD_NOISE


class FakeInterface:
    """Answers as told: echo, a wrong reply, an exception, or slowly."""

    def __init__(self, behaviour):
        self.behaviour = behaviour

    def query(self, payload):
        return self.behaviour(payload)


def run_poll(behaviour, timeout=0.05, calls=3):
    counts = soak.Counts()
    stop = threading.Event()
    iface = FakeInterface(behaviour)
    original = iface.query

    def counted(payload):
        if counts.queries >= calls:
            stop.set()
        return original(payload)
    iface.query = counted
    soak.poll(iface, 'fake', timeout, stop, counts, random.Random(0))
    return counts


def test_poll_counts_verified_replies():
    counts = run_poll(lambda p: p)
    assert counts.verified == counts.queries == 3
    assert counts.misattributed == counts.other == counts.late == 0


def test_poll_counts_misattributed_replies():
    counts = run_poll(lambda p: p + b'x')
    assert counts.misattributed == 3 and counts.verified == 0


def test_poll_counts_connection_errors_apart_from_other_exceptions():
    def fail(payload):
        raise ConnectionResetError('gone')
    assert run_poll(fail).connection_errors == 3

    def broken(payload):
        raise ValueError('bug')
    counts = run_poll(broken)
    assert counts.other == 3 and counts.connection_errors == 0


def test_poll_counts_late_calls():
    def slow(payload):
        time.sleep(0.05 + soak.LATE_MARGIN + 0.02)
        return payload
    counts = run_poll(slow, calls=1)
    assert counts.late == 1 and counts.verified == 1
