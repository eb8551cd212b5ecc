"""Helpers for the tools' tests: ``socs-tcp simulate`` in a process of its own, on free ports."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from socs_tcp.sim.control import SimControl

SOCS_TCP = [sys.executable, '-m', 'socs_tcp.cli']


@dataclass
class SimProcess:
    proc: subprocess.Popen
    port: int
    control: SimControl


@contextlib.contextmanager
def simulator(*args: str, timeout: float = 15.0) -> Iterator[SimProcess]:
    """``socs-tcp simulate ARGS`` with a control channel, on free ports; stopped (by pid) after."""
    proc = subprocess.Popen([*SOCS_TCP, 'simulate', *args, '--port', '0', '--control-port', '0'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ports = {}
        deadline = time.monotonic() + timeout
        while len(ports) < 2:
            line = proc.stdout.readline()  # the simulator prints both lines at once, flushed
            if not line or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f'socs-tcp simulate {args} did not start: {proc.stderr.read()[-2000:]}')
            key, _, value = line.partition(' ')
            ports[key] = int(value)
        yield SimProcess(proc, ports['PORT'], SimControl('127.0.0.1', ports['CONTROL']))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll ``condition()`` until truthy (returned), or fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout} s waiting for {what}')
        time.sleep(interval)
