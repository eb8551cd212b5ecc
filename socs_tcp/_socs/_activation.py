"""Take over SOCS's transports when SOCS's modules are first imported.

``SOCS_TCP=1`` in a process's environment runs :func:`from_environment` at
interpreter start (the ``socs_tcp-activation.pth`` file installed with the
package holds one line that does nothing else when the variable is unset).
It imports no SOCS module: it puts a finder on ``sys.meta_path`` that lets
each selected transport's SOCS module (``socs.tcp``,
``socs.common.prologix_interface``, ``serial``...) be imported as usual and,
right after, swaps SOCS's class for socs_tcp's, before any driver module can
bind SOCS's. ``socs-tcp agent`` calls :func:`activate` the same way.

Once the reactor runs (so that the line reaches the OCS log file), the log
says once which transports were taken over.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import threading
from typing import Any

from twisted.logger import Logger

from socs_tcp._socs._registry import ENV, TRANSPORTS, SelectionError, parse_selection

__all__ = ['activate', 'deactivate', 'describe', 'from_environment', 'taken_over', 'selected']

log = Logger(namespace='socs_tcp.activation')

_REACTOR = 'twisted.internet.reactor'

_lock = threading.RLock()
_selected: list[str] = []          # transports asked for, TRANSPORTS order
_taken: list[str] = []             # transports installed, in the order it happened
_announced = False
_announcement_scheduled = False


class _Loader(importlib.abc.Loader):
    """SOCS's own loader for a module, then ``after(module)`` once the module has run."""

    def __init__(self, inner, after) -> None:
        self._inner, self._after = inner, after

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        self._inner.exec_module(module)
        self._after(module.__name__)

    def __getattr__(self, name):
        # is_package, get_code, get_source, get_resource_reader...: coverage and
        # importlib.resources ask the loader for these
        return getattr(self._inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of the modules it watches (see :class:`_Loader`)."""

    def __init__(self) -> None:
        self.watched: dict[str, object] = {}   # module name -> callable(name) run after it is imported
        self._local = threading.local()

    def find_spec(self, fullname, path, target=None):
        after = self.watched.get(fullname)
        if after is None or getattr(self._local, 'busy', False):
            return None
        self._local.busy = True
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, 'find_spec'):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._local.busy = False
        if spec.loader is None or not hasattr(spec.loader, 'exec_module'):
            return spec
        spec.loader = _Loader(spec.loader, after)
        return spec


_finder = _Finder()


def selected() -> list[str]:
    """The transports asked for so far in this process."""
    return list(_selected)


def taken_over() -> list[str]:
    """The transports installed so far in this process."""
    return list(_taken)


def activate(names: list[str]) -> None:
    """Take over the transports ``names`` (see ``_registry.TRANSPORTS``), now or when SOCS imports them.

    A transport whose SOCS module is imported already is installed at once;
    the others when their module is first imported. Idempotent; a later call
    adds to the selection.

    Raises
    ------
    SelectionError
        An unknown name.
    socs_tcp.compat.CompatError
        From a transport installed at once: a SOCS of another shape.
    """
    unknown = [name for name in names if name not in TRANSPORTS]
    if unknown:
        raise SelectionError(f'unknown transport {unknown[0]!r}; valid: {", ".join(TRANSPORTS)}')
    with _lock:
        for name in TRANSPORTS:
            if name in names and name not in _selected:
                _selected.append(name)
        _selected.sort(key=list(TRANSPORTS).index)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
        for name in names:
            target = TRANSPORTS[name].target
            if name in _taken:
                continue
            if target in sys.modules:
                _install(name)
            else:
                _finder.watched[target] = _imported
        if _REACTOR in sys.modules:
            _schedule_announcement()
        elif not _announced:
            _finder.watched[_REACTOR] = _reactor_imported


def deactivate() -> list[str]:
    """Put SOCS's transports back and stop watching imports; return those that were installed.

    Only modules imported afterwards see SOCS's classes again.
    """
    global _announced, _announcement_scheduled
    with _lock:
        undone = list(_taken)
        for name in reversed(undone):
            importlib.import_module(TRANSPORTS[name].module).uninstall()
        _taken.clear()
        _selected.clear()
        _finder.watched.clear()
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        _announced = _announcement_scheduled = False
    return undone


def from_environment() -> None:
    """Activate what ``SOCS_TCP`` selects; the ``.pth`` line's entry point.

    A bad value ends the process at once with one line on stderr naming the
    bad part and the valid names (exit status 2): it runs at interpreter
    start, where an exception would only be printed and ignored.
    """
    try:
        names = parse_selection(os.environ.get(ENV, ''))
    except SelectionError as exc:
        sys.stderr.write(f'socs_tcp: {exc}\n')
        sys.stderr.flush()
        os._exit(2)
    if names:
        activate(names)


def _imported(module_name: str) -> None:
    """A watched SOCS module has just been imported: install the transports that patch it."""
    with _lock:
        for name in _selected:
            if TRANSPORTS[name].target == module_name and name not in _taken:
                _install(name, exit_on_refusal=True)


def _install(name: str, exit_on_refusal: bool = False) -> None:
    from socs_tcp.compat import CompatError
    transport = TRANSPORTS[name]
    try:
        importlib.import_module(transport.module).install()
    except CompatError as exc:
        if not exit_on_refusal:
            raise
        # Raised inside the program's own import of SOCS: a traceback through
        # the import machinery would bury the reason.
        sys.stderr.write(f'socs_tcp: {ENV}: {exc}\n')
        sys.stderr.flush()
        raise SystemExit(2) from None
    _taken.append(name)
    _finder.watched.pop(transport.target, None)
    if _announced:
        log.info('{env}: {transport} now on socs_tcp too ({replaces})', env=ENV, transport=name,
                 replaces=transport.replaces)


def _reactor_imported(module_name: str) -> None:
    _finder.watched.pop(_REACTOR, None)
    _schedule_announcement()


def _schedule_announcement() -> None:
    global _announcement_scheduled
    if _announced or _announcement_scheduled:
        return
    # the installed reactor replaces twisted.internet.reactor's module object
    reactor: Any = sys.modules.get(_REACTOR)
    if not hasattr(reactor, 'callWhenRunning'):
        return
    _announcement_scheduled = True
    # Once it runs: by then OCS has attached its log file observer, so the
    # line is in the agent's log file as well as on its stdout.
    reactor.callWhenRunning(_announce)


def describe() -> str:
    """One line: which transports are on socs_tcp, which were selected but not (yet) imported."""
    with _lock:
        taken = [f'{name} ({TRANSPORTS[name].replaces})' for name in _taken]
        waiting = [name for name in _selected if name not in _taken]
    line = f'{ENV}: on socs_tcp: {", ".join(taken) or "nothing yet"}'
    if waiting:
        line += f'; selected, not imported by this process (yet): {", ".join(waiting)}'
    if 'tcp' in _taken:
        from socs_tcp import compat
        line += f'; {compat.describe()}'
    return line


def _announce() -> None:
    global _announced
    with _lock:
        if _announced:
            return
        _announced = True
        if not _taken and 'socs' not in sys.modules:
            return   # not a SOCS program (crossbar, a tool): nothing to say
    log.info('{line}', line=describe())
