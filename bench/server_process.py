"""Start a server in a child process, learn its port(s), and stop it.

The benchmarks keep the device side in another process, as real hardware is:
otherwise the server would share the client's interpreter lock (and, for
socs_tcp, its reactor) and its work would show up in the client's figures.
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

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent


class ServerProcess:
    """A child process that prints ``PORT <n>`` lines when it is ready.

    Parameters
    ----------
    argv : list of str
        Arguments after ``python`` (e.g. ``['-m', 'socs_tcp.sim.echo', '--port', '0']``).
    ports : int
        How many ``PORT`` lines to wait for.
    ready_timeout : float
        Seconds to wait for the ports before giving up.

    Raises
    ------
    RuntimeError
        If the child exits or does not print its ports within ``ready_timeout``;
        the child is killed first.
    """

    def __init__(self, argv: list[str], *, ports: int = 1, ready_timeout: float = 30.0):
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
        deadline = time.monotonic() + ready_timeout
        while len(self.ports) < ports:
            line = self.readline(max(0.0, deadline - time.monotonic()))
            if line is None:
                self.stop()
                raise RuntimeError(
                    f'{argv!r} did not report {ports} port(s) within {ready_timeout} s; '
                    f'stderr: {"".join(self._stderr)[-2000:]}')
            if line.startswith('PORT '):
                self.ports.append(int(line.split()[1]))

    @property
    def port(self) -> int:
        """The first port the child reported."""
        return self.ports[0]

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

    def command(self, line: str, timeout: float = 10.0) -> str:
        """Write one command line to the child and return its ``OK ...`` answer.

        Raises
        ------
        RuntimeError
            If the child answers anything else, or nothing within ``timeout``.
        """
        self.proc.stdin.write(line + '\n')
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            answer = self.readline(max(0.0, deadline - time.monotonic()))
            if answer is None:
                raise RuntimeError(f'no answer to {line!r}; stderr: {self.stderr_text[-2000:]}')
            if answer.startswith('OK'):
                return answer
            if answer.startswith('ERR'):
                raise RuntimeError(f'{line!r} failed: {answer}')
            # Anything else is chatter (e.g. a late PORT line): skip it.

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

    def __enter__(self) -> 'ServerProcess':
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_echo_process() -> ServerProcess:
    """Start the line echo server (``socs_tcp.sim.echo``) in another process."""
    return ServerProcess(['-m', 'socs_tcp.sim.echo', '--port', '0'])
