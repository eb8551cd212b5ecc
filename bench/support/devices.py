"""Simulated devices in a child process: start them, learn their ports, fault them, stop them.

The benchmarks keep the device side in another process, as real hardware is:
otherwise the server would share the client's interpreter lock (and, for
socs_tcp, its reactor) and its work would show up in the client's figures.
The devices are ``socs_tcp.sim.echo``'s, faulted through their control
channels with the commands every simulator takes (`socs_tcp.sim.control`).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from socs_tcp.sim.control import SimControl

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
HOST = '127.0.0.1'


class ServerProcess:
    """A child process that prints ``PORT <n>`` (and ``CONTROL <n>``) lines when ready.

    Parameters
    ----------
    argv : list of str
        Arguments after ``python`` (e.g. ``['-m', 'socs_tcp.sim.echo', '--port', '0']``).
    ports : int
        How many ``PORT`` lines to wait for.
    controls : int
        How many ``CONTROL`` lines to wait for (one per device with a control channel).
    ready_timeout : float
        Seconds to wait for the ports before giving up.

    Raises
    ------
    RuntimeError
        If the child exits or does not print its ports within ``ready_timeout``;
        the child is killed first.
    """

    def __init__(self, argv: list[str], *, ports: int = 1, controls: int = 0,
                 ready_timeout: float = 30.0):
        env = dict(os.environ)
        # The child must import this checkout's socs_tcp even without an install.
        env['PYTHONPATH'] = os.pathsep.join(
            p for p in (str(REPO_DIR), env.get('PYTHONPATH', '')) if p)
        env['PYTHONUNBUFFERED'] = '1'
        self.proc = subprocess.Popen(
            [sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, cwd=str(REPO_DIR), text=True, bufsize=1)
        self.pid = self.proc.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        # Readers drain both pipes so the child never blocks on a full pipe.
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()
        self.ports: list[int] = []
        self.control_ports: list[int] = []
        self._controls: dict[int, SimControl] = {}
        announced = {'PORT': self.ports, 'CONTROL': self.control_ports}
        deadline = time.monotonic() + ready_timeout
        while len(self.ports) < ports or len(self.control_ports) < controls:
            line = self.readline(max(0.0, deadline - time.monotonic()))
            if line is None:
                self.stop()
                raise RuntimeError(
                    f'{argv!r} did not report {ports} port(s) and {controls} control port(s) '
                    f'within {ready_timeout} s; stderr: {"".join(self._stderr)[-2000:]}')
            name, _, value = line.partition(' ')
            if name in announced:
                announced[name].append(int(value))

    @property
    def port(self) -> int:
        """The first port the child reported."""
        return self.ports[0]

    def control(self, device: int) -> SimControl:
        """The fault-control client of device number ``device`` (0-based).

        Raises
        ------
        IndexError
            If the child has no control channel for that device.
        """
        if device not in self._controls:
            self._controls[device] = SimControl(HOST, self.control_ports[device])
        return self._controls[device]

    def _pump_stdout(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line.rstrip('\n'))
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def stderr_text(self) -> str:
        """Everything the child wrote to stderr so far."""
        return ''.join(self._stderr)

    def readline(self, timeout: float) -> str | None:
        """Return the child's next stdout line, or None on EOF or timeout."""
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the child (SIGTERM, then SIGKILL) and reap it. Idempotent."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_echo_process() -> ServerProcess:
    """Start one line echo device (``socs_tcp.sim.echo``) in another process."""
    return ServerProcess(['-m', 'socs_tcp.sim.echo', '--port', '0'])


def start_echo_devices(count: int) -> ServerProcess:
    """Start ``count`` line echo devices, each with a control channel, in one other process.

    Device ``i`` listens on ``ports[i]``; ``control(i)`` faults it.
    """
    return ServerProcess(['-m', 'socs_tcp.sim.echo', '--devices', str(count), '--control'],
                         ports=count, controls=count)
