"""Child processes an `OcsStack` starts, and the one way they are stopped.

Every process runs in its own process group (so the terminal's Ctrl-C reaches
only the parent, which then stops the children in order) with its output in a
log file (never a pipe nobody reads), and its stdin a pipe the parent holds
open and never writes: when the parent dies, even by SIGKILL, the pipe closes,
and children that watch stdin (the simulators) exit by themselves.

Stopping escalates SIGINT, SIGTERM, SIGKILL with a bounded wait at each step,
for many processes at once. Every process still running when the interpreter
exits is stopped by an ``atexit`` hook (registered when the first process
starts, not on import), so a crashed or interrupted parent leaves no orphans
behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from twisted.logger import Logger

from socs_tcp import _arguments as arguments

try:  # psutil tracks grandchildren (crossbar's router worker); optional at run time
    import psutil
except ImportError:  # pragma: no cover - psutil is in the test extras
    psutil = None

log = Logger()

#: Default waits (seconds) after SIGINT, SIGTERM and SIGKILL. OCS agents sleep
#: 3 s in their SIGINT handler before stopping the reactor; crossbar needs ~3 s.
STOP_WAITS = (10.0, 3.0, 2.0)

_POLL = 0.05  # how often waits re-check their condition

# Processes started and not yet stopped, in this interpreter (for atexit).
_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()
_exit_hook_registered = False


@dataclass(frozen=True)
class StopRecord:
    """How one process ended.

    Attributes
    ----------
    name : str
        The name it was started under.
    pid : int
        Its process id.
    ended_by : str
        ``'exited'`` when it had ended before being stopped, otherwise the last
        signal sent: ``'SIGINT'``, ``'SIGTERM'`` or ``'SIGKILL'``.
    returncode : int or None
        Exit status (negative: killed by that signal); ``None`` only if it
        survived SIGKILL, which means the kernel could not stop it.
    seconds : float
        Time from the first signal until it was gone (0 when it had exited).
    """

    name: str
    pid: int
    ended_by: str
    returncode: int | None
    seconds: float

    @property
    def clean(self) -> bool:
        """True when the process stopped on SIGINT or had exited by itself."""
        return self.ended_by in ('exited', 'SIGINT') and self.returncode is not None


class ManagedProcess:
    """A child process in its own process group, logging to a file.

    Parameters
    ----------
    name : str
        Short name used in logs and summaries (e.g. ``'crossbar'``).
    argv : sequence of str
        Command line; ``argv[0]`` is a path or a name on ``PATH``.
    log_path : path
        File that receives the process's stdout and stderr (truncated).
    env : mapping, optional
        Complete environment for the child (default: this process's).
    cwd : path, optional
        Working directory for the child.

    Raises
    ------
    OSError
        When the program cannot be started (e.g. not installed).
    """

    def __init__(self, name: str, argv: Sequence[str], *, log_path: str | os.PathLike,
                 env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike | None = None) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.stop_record: StopRecord | None = None
        self._descendants: list = []
        with open(self.log_path, 'wb') as out:
            # start_new_session: own process group and no controlling terminal,
            # so Ctrl-C in the terminal is delivered to the parent only.
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None, cwd=cwd,
                start_new_session=True, close_fds=True)
        self.pid = self.popen.pid
        self.started_at = time.monotonic()
        _track_until_exit(self)
        log.info('started {name} (pid {pid}): {argv}', name=name, pid=self.pid,
                 argv=' '.join(self.argv))

    def __repr__(self) -> str:
        return f'<ManagedProcess {self.name} pid={self.pid} running={self.running}>'

    @property
    def running(self) -> bool:
        """True while the process itself has not exited."""
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status once it has exited, else ``None``."""
        return self.popen.poll()

    def read_log(self) -> str:
        """Return everything the process has written so far (text, lossy)."""
        try:
            return self.log_path.read_bytes().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def log_tail(self, lines: int = 25) -> str:
        """Return the last ``lines`` lines of its log, for error messages."""
        return '\n'.join(self.read_log().splitlines()[-lines:])

    # -- stopping ---------------------------------------------------------------

    def _snapshot_descendants(self) -> None:
        """Remember the process's descendants, so they can be stopped after it."""
        if psutil is None or not self.running:
            return
        try:
            kids = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            return
        known = {p.pid for p in self._descendants}
        self._descendants.extend(p for p in kids if p.pid not in known)

    def _live_descendants(self) -> list:
        alive = []
        for proc in self._descendants:
            try:
                # is_running() compares creation times: a recycled pid is not ours
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.Error:
                pass
        return alive

    def tree_running(self) -> bool:
        """True while the process or any descendant seen at stop time runs."""
        return self.running or bool(self._live_descendants())

    def send_signal(self, sig: int) -> None:
        """Signal the process group, or the surviving descendants once the
        leader has been reaped (its pid, hence its group id, may be reused)."""
        if self.running:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            except PermissionError:  # pragma: no cover - group left by a setuid child
                self.popen.send_signal(sig)
        for proc in self._live_descendants():
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass

    def stop(self, waits: Sequence[float] = STOP_WAITS) -> StopRecord:
        """Stop this process; see :func:`stop_processes`."""
        return stop_processes([self], waits)[0]


def _track_until_exit(proc: ManagedProcess) -> None:
    """Remember ``proc`` until stopped; the first one registers the exit hook."""
    global _exit_hook_registered
    with _live_lock:
        _live.add(proc)
        if not _exit_hook_registered:
            atexit.register(_stop_leftovers)
            _exit_hook_registered = True


def _forget(proc: ManagedProcess) -> None:
    with _live_lock:
        _live.discard(proc)


@contextlib.contextmanager
def _ctrl_c_hurries(hurry: threading.Event) -> Iterator[None]:
    """While inside, Ctrl-C sets ``hurry`` instead of raising (main thread only)."""
    restore = None
    if threading.current_thread() is threading.main_thread():
        try:
            restore = signal.signal(signal.SIGINT, lambda *_: hurry.set())
        except ValueError:  # pragma: no cover - not in the main interpreter
            restore = None
    try:
        yield
    finally:
        if restore is not None:
            signal.signal(signal.SIGINT, restore)


@dataclass
class _Escalation:
    """When each process got its first and last signal, and when it was gone."""

    first_signal: dict
    last_signal: dict
    ended_at: dict


def _escalate(todo: list[ManagedProcess], waits: Sequence[float]) -> _Escalation:
    """Signal SIGINT, SIGTERM, SIGKILL in turn to every process still running."""
    seen = _Escalation({}, {}, {})
    hurry = threading.Event()
    with _ctrl_c_hurries(hurry):
        for sig, wait in zip((signal.SIGINT, signal.SIGTERM, signal.SIGKILL), waits, strict=True):
            alive = [p for p in todo if p not in seen.ended_at and p.tree_running()]
            if not alive:
                break
            now = time.monotonic()
            for proc in alive:
                seen.first_signal.setdefault(proc, now)
                seen.last_signal[proc] = sig.name
                proc.send_signal(sig)
            deadline = now + wait
            hurry.clear()
            while alive and not hurry.is_set():
                for proc in list(alive):
                    if not proc.tree_running():
                        seen.ended_at[proc] = time.monotonic()
                        alive.remove(proc)
                if not alive or time.monotonic() >= deadline:
                    break
                time.sleep(_POLL)
    return seen


def _record(proc: ManagedProcess, already_gone: bool, seen: _Escalation) -> StopRecord:
    """Write down how ``proc`` ended, close its stdin, log it; forget it once gone."""
    if already_gone:
        record = StopRecord(proc.name, proc.pid, 'exited', proc.returncode, 0.0)
    else:
        end = seen.ended_at.get(proc, time.monotonic())
        record = StopRecord(proc.name, proc.pid, seen.last_signal.get(proc, 'exited'),
                            proc.returncode, end - seen.first_signal.get(proc, end))
    proc.stop_record = record
    if proc.popen.stdin is not None and record.returncode is not None:
        proc.popen.stdin.close()
    if record.returncode is None:
        log.error('{name} (pid {pid}) survived SIGKILL', name=proc.name, pid=proc.pid)
    else:
        log.info('{name} (pid {pid}) stopped by {how} in {s:.1f} s, status {rc}',
                 name=proc.name, pid=proc.pid, how=record.ended_by, s=record.seconds,
                 rc=record.returncode)
        _forget(proc)
    return record


def stop_processes(procs: Iterable[ManagedProcess],
                   waits: Sequence[float] = STOP_WAITS) -> list[StopRecord]:
    """Stop processes together: SIGINT, then SIGTERM, then SIGKILL.

    Each step signals every process still running and waits until all are
    gone or its wait (``waits[i]`` seconds) runs out. A Ctrl-C while waiting
    (main thread only) skips the rest of the current wait instead of
    abandoning the cleanup. Processes already stopped keep their record.

    Parameters
    ----------
    procs : iterable of ManagedProcess
    waits : three floats
        Bounded waits after SIGINT, SIGTERM and SIGKILL.

    Returns
    -------
    list of StopRecord
        One per process, in the order given.

    Raises
    ------
    ValueError
        If ``waits`` is not three numbers of seconds >= 0.
    """
    procs = list(procs)
    if len(waits) != 3:
        raise ValueError(f'waits must be three non-negative seconds, got {waits!r}')
    for wait in waits:
        arguments.seconds(wait, 'waits', allow_zero=True)
    todo = [p for p in procs if p.stop_record is None]
    for proc in todo:
        proc._snapshot_descendants()
    already_gone = {p for p in todo if not p.tree_running()}
    seen = _escalate(todo, waits)
    for proc in todo:
        _record(proc, proc in already_gone, seen)
    return [record_of(p) for p in procs]


def record_of(proc: ManagedProcess) -> StopRecord:
    """How ``proc`` was stopped.

    Raises
    ------
    RuntimeError
        If it wasn't stopped by `stop_processes` (or `ManagedProcess.stop`).
    """
    if proc.stop_record is None:
        raise RuntimeError(f'{proc.name} (pid {proc.pid}) was not stopped')
    return proc.stop_record


def live_processes() -> list[ManagedProcess]:
    """Processes started in this interpreter and not yet stopped."""
    with _live_lock:
        return list(_live)


def _stop_leftovers() -> None:
    # Last line of defence: whatever a crashed or interrupted caller left running.
    leftovers = live_processes()
    if leftovers:
        stop_processes(leftovers, waits=(5.0, 2.0, 2.0))


def processes_with_env(name: str, value: str) -> list:
    """Running processes (of any parent) whose environment has ``name=value``.

    Used to prove that no process a stack started survived it: every child
    gets the stack's id in its environment, and so do their children.
    Requires psutil; processes whose environment cannot be read are skipped.
    """
    if psutil is None:  # pragma: no cover
        raise RuntimeError('processes_with_env needs psutil (pip install psutil)')
    found = []
    for proc in psutil.process_iter(['pid']):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(name) == value:
                found.append(proc)
        except psutil.Error:
            continue
    return found
