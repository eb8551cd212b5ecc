"""Who runs the reactor, and how a thread that calls socs_tcp waits for it.

Every socs_tcp link lives in the Twisted reactor; blocking calls wait for it.
Who runs the reactor is the application's choice, said once with
``set_reactor_owner``:

``'application'``
    The program runs it itself, in its main thread: an OCS agent's
    ``runner.run()`` does. Blocking calls belong in worker threads (OCS runs
    blocking tasks and processes in one). Before the reactor runs, calls in
    the main thread (a SOCS driver that talks to its device in its
    constructor, built in the agent's ``__init__``) turn the reactor
    themselves until they are done, bounded by their timeout; whatever they
    connected then belongs to the reactor once it runs. In the reactor
    thread while it runs, blocking calls raise ``ReactorThreadError``.
``'background'``
    Nobody will run it (a plain script): socs_tcp starts it in a daemon
    thread on first use and stops it at interpreter exit.

Undeclared, socs_tcp assumes ``'application'`` when OCS's agent module (or
pytest-twisted) has been imported, and ``'background'`` otherwise.
``socs-tcp agent`` and ``socs_tcp.compat.install()`` declare ``'application'``.
"""

from __future__ import annotations

import atexit
import enum
import sys
import threading
import time

from twisted.python import threadable

from socs_tcp._bridge import Pump
from socs_tcp._errors import NotConnected, ReactorThreadError


class Owner(enum.Enum):
    """Who runs the reactor."""

    APPLICATION = 'application'
    BACKGROUND = 'background'


#: Modules whose presence means the application will run the reactor itself,
#: for programs that did not declare an owner.
APP_RUNS_REACTOR_MODULES = ('ocs.ocs_agent', 'pytest_twisted')

_STARTUP_TIMEOUT = 5.0

_declared: Owner | None = None
_lock = threading.Lock()
_background: threading.Thread | None = None
_stopped: set[int] = set()   # id() of reactors that ran and stopped
_watched: set[int] = set()


def set_reactor_owner(owner: str) -> None:
    """Say who runs the reactor in this process: ``'application'`` or ``'background'``.

    Raises
    ------
    ValueError
        ``owner`` is neither of the two.
    """
    global _declared
    try:
        _declared = Owner(owner)
    except ValueError:
        raise ValueError(f"owner must be 'application' or 'background', got {owner!r}") from None


def reactor_owner() -> Owner:
    """Who runs the reactor: as declared, or else the guess described in this module."""
    if _declared is not None:
        return _declared
    if any(name in sys.modules for name in APP_RUNS_REACTOR_MODULES):
        return Owner.APPLICATION
    return Owner.BACKGROUND


def prepare_to_block(reactor, method: str, deadline: float) -> Pump | None:
    """Check that the calling thread may block on ``reactor``; say how it waits.

    Starts the background reactor if it is ours to run and not running yet
    (waiting for it no later than ``deadline``, a ``time.monotonic()`` value).

    Returns
    -------
    callable or None
        None: the reactor runs (or will run) in another thread; wait for it.
        A pump: the caller is the thread that will run the reactor, before
        it runs; it turns the reactor itself while it waits.

    Raises
    ------
    ReactorThreadError
        Called in the reactor thread while it runs, where blocking would deadlock.
    NotConnected
        The reactor ran and has stopped: nothing can be done any more.
    """
    if id(reactor) not in _watched:
        watch(reactor)
    if reactor.running:
        if threadable.ioThread == threading.get_ident():  # threadable.isInIOThread, without two calls
            raise ReactorThreadError(
                f'{method}() blocks and was called in the reactor thread, where it would deadlock: '
                'call it from a worker thread (OCS blocking tasks and processes run in one; '
                'otherwise use twisted.internet.threads.deferToThread), or use the Deferred API '
                'of DeviceClientFactory')
        return None
    if id(reactor) in _stopped:
        raise NotConnected(f'{method}(): the reactor has stopped')
    if reactor_owner() is Owner.BACKGROUND:
        start_background_reactor(reactor, max(0.0, deadline - time.monotonic()))
        return None
    if threading.current_thread() is threading.main_thread():
        return lambda seconds: _turn(reactor, seconds)
    return None  # a thread of the application's: the reactor will run; calls are bounded anyway


def in_reactor_thread(reactor) -> bool:
    """Whether the caller is the running reactor's thread (where nothing may block)."""
    return reactor.running and threadable.isInIOThread()


def watch(reactor) -> None:
    """Remember when ``reactor`` stops, so that later calls fail at once (idempotent)."""
    key = id(reactor)
    if key in _watched:  # the common case, without the lock
        return
    with _lock:
        if key in _watched:
            return
        _watched.add(key)
    if reactor.running and not threadable.isInIOThread():
        # The reactor's API is not thread-safe: register from its own thread.
        reactor.callFromThread(reactor.addSystemEventTrigger, 'after', 'shutdown', _stopped.add, key)
    else:
        reactor.addSystemEventTrigger('after', 'shutdown', _stopped.add, key)


def start_background_reactor(reactor, timeout: float = _STARTUP_TIMEOUT) -> None:
    """Run ``reactor`` in a daemon thread (once), and stop it at interpreter exit.

    Waits up to ``timeout`` seconds for it to run (a call waiting on it is
    bounded by its own deadline anyway).
    """
    global _background
    with _lock:
        if _background is not None or reactor.running:
            return
        running = threading.Event()
        reactor.callWhenRunning(running.set)
        thread = threading.Thread(target=reactor.run, kwargs={'installSignalHandlers': False},
                                  name='socs_tcp-reactor', daemon=True)
        thread.start()
        _background = thread
        atexit.register(_stop_background, reactor, thread)
    running.wait(min(timeout, _STARTUP_TIMEOUT))


def _turn(reactor, seconds: float) -> None:
    """One turn of a reactor that does not run yet, waiting at most ``seconds`` for I/O."""
    due = reactor.timeout()  # a timer (a connect timeout, a retry) may be due sooner
    reactor.iterate(seconds if due is None else min(seconds, due))


def _stop_background(reactor, thread: threading.Thread) -> None:
    """At exit: stop the background reactor so connections close cleanly."""
    if reactor.running:
        reactor.callFromThread(reactor.stop)
        thread.join(2.0)
