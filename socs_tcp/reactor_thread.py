"""Who runs the reactor, and whether the calling thread may block on it.

In an OCS agent the reactor runs in the main thread and blocking operations
run in worker threads. In a plain script nobody runs it: the first interface
starts it in a daemon thread, stopped again when the interpreter exits.
"""

from __future__ import annotations

import atexit
import enum
import sys
import threading

from twisted.python import threadable

from socs_tcp.errors import NotConnected, ReactorThreadError

#: Modules whose presence means the application will run the reactor itself
#: (so starting one in the background would make its ``reactor.run()`` fail).
APP_RUNS_REACTOR_MODULES = ('ocs.ocs_agent', 'pytest_twisted')

#: What the application declared with ``set_reactor_owner`` (None: not declared).
_declared_owner: str | None = None

_start_lock = threading.Lock()
_background: threading.Thread | None = None
_STARTUP_TIMEOUT = 5.0


class Caller(enum.Enum):
    """What the calling thread is, relative to the reactor."""

    REACTOR = 'reactor'          # the reactor thread itself: must not block
    WORKER = 'worker'            # another thread: may block on the reactor
    BEFORE_RUN = 'before-run'    # the thread that will run the reactor, before it does


def set_reactor_owner(owner: str) -> None:
    """Say who runs the reactor in this process: ``'application'`` or ``'background'``.

    ``'application'``: the program runs it itself (an OCS agent's ``runner.run``).
    ``'background'``: nobody will, so socs_tcp runs it in a daemon thread.
    Undeclared, socs_tcp assumes ``'application'`` when OCS's agent module
    (or pytest-twisted) is imported, and ``'background'`` otherwise.

    Raises
    ------
    ValueError
        ``owner`` is neither of the two.
    """
    global _declared_owner
    if owner not in ('application', 'background'):
        raise ValueError(f"owner must be 'application' or 'background', got {owner!r}")
    _declared_owner = owner


def app_runs_reactor() -> bool:
    """Whether this process's own code will run the reactor (OCS agents do)."""
    if _declared_owner is not None:
        return _declared_owner == 'application'
    return any(name in sys.modules for name in APP_RUNS_REACTOR_MODULES)


def classify_caller(reactor, start_background: bool = True) -> Caller:
    """Say what the calling thread is; start a background reactor if nobody will run one.

    @raise NotConnected: the reactor ran and has stopped: nothing can be done.
    """
    if reactor.running:
        return Caller.REACTOR if threadable.isInIOThread() else Caller.WORKER
    if getattr(reactor, '_startedBefore', False):
        raise NotConnected('the reactor has stopped')
    if app_runs_reactor():
        if threading.current_thread() is threading.main_thread():
            return Caller.BEFORE_RUN
        return Caller.WORKER  # calls wait for the reactor, bounded by their timeouts
    if start_background:
        start_background_reactor(reactor)
        return Caller.WORKER
    return Caller.BEFORE_RUN


def require_worker(reactor, method: str) -> None:
    """Make sure the caller may block on the reactor.

    @raise ReactorThreadError: called in the reactor thread (or in the thread
        that will run it, before it does), where blocking would deadlock.
    """
    caller = classify_caller(reactor)
    if caller is Caller.REACTOR:
        raise ReactorThreadError(
            f'{method}() blocks and was called in the reactor thread, where it would deadlock: '
            'call it from a worker thread (OCS blocking tasks and processes run in one; '
            'otherwise use twisted.internet.threads.deferToThread), or use the Deferred API '
            'of DeviceClientFactory')
    if caller is Caller.BEFORE_RUN:
        raise ReactorThreadError(
            f'{method}() blocks and was called before the reactor runs, in the thread that will '
            'run it: do device I/O in an OCS task or process (a worker thread), not in the '
            "agent's __init__")


def start_background_reactor(reactor) -> None:
    """Run ``reactor`` in a daemon thread (once), and stop it at interpreter exit."""
    global _background
    with _start_lock:
        if _background is not None or reactor.running:
            return
        running = threading.Event()
        reactor.callWhenRunning(running.set)
        thread = threading.Thread(target=reactor.run, kwargs={'installSignalHandlers': False},
                                  name='socs_tcp-reactor', daemon=True)
        thread.start()
        _background = thread
        atexit.register(_stop_background, reactor, thread)
    running.wait(_STARTUP_TIMEOUT)


def _stop_background(reactor, thread: threading.Thread) -> None:
    """At exit: stop the background reactor so connections close cleanly."""
    if reactor.running:
        reactor.callFromThread(reactor.stop)
        thread.join(2.0)
