"""Run existing SOCS drivers on socs_tcp: make ``socs.tcp.TCPInterface`` ours.

SOCS drivers subclass ``socs.tcp.TCPInterface``, which they import when their
module is imported (``from socs.tcp import TCPInterface``). :func:`install`
replaces that attribute of the ``socs.tcp`` module with
:class:`socs_tcp.TCPInterface`, so every driver module imported *afterwards*
stands on socs_tcp, without a line of it changed::

    import socs_tcp.compat
    socs_tcp.compat.install()            # before any SOCS agent or driver is imported

    from socs.agents.cryomech_cpa.agent import main
    main()

``socs-tcp agent ARGS...`` (:mod:`socs_tcp._agent_cli`) does exactly this, then
runs the agent as ``ocs-agent-cli ARGS...`` would: that is the launcher to put
in a site's command line or docker entrypoint.

However the agent is started (``ocs-agent-cli``, ``python -m coverage run
agent.py`` as OCS's test runner does, a systemd unit, SOCS's image),
``SOCS_TCP=1`` in its environment does the same at interpreter start, for
this and SOCS's other TCP transports (Prologix GPIB, the SCPI supplies'
LAN port, pyserial's ``socket://``...); ``SOCS_TCP=tcp,prologix,...``
selects some. A ``.pth`` file installed with socs_tcp reads the variable;
unset, nothing is imported. ``socs-tcp agent`` selects all of them unless
``SOCS_TCP`` says otherwise.

Nothing changes unless asked: importing socs_tcp (or this module) leaves
``socs.tcp`` alone.

The switch is refused, with a :class:`CompatError` saying why, when

- ``socs`` is not installed;
- the installed ``socs`` is a release whose ``socs.tcp`` has not been checked
  against socs_tcp (see :data:`KNOWN_SOCS`), or its ``TCPInterface`` does not
  have the shape socs_tcp replaces (``__init__(ip_address, port, timeout)``,
  ``_connect(address)``, ``send(msg)``, ``recv(bufsize, reset_on_error)``).
  ``install(force=True)``, or ``SOCS_TCP_FORCE=1`` in the environment (for a
  launcher you cannot edit, e.g. a docker entrypoint), switches anyway and logs
  a warning;
- a driver built on SOCS's own class is already imported: it would silently
  keep socs.tcp while the site believes it runs on socs_tcp. ``force`` does not
  override this: call :func:`install` earlier.

Some SOCS drivers fix their device's port (the Lakeshore 372 always connects
to 7777). To run such an agent against a device elsewhere (a simulator on a
free port, a tunnel), ``SOCS_TCP_REDIRECT=HOST:PORT=HOST:PORT[,...]`` in the
agent's environment (or ``install(redirects=...)``) makes a driver that
connects to the first address reach the second; each redirect is logged.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import re
import sys

from twisted.logger import Logger

import socs_tcp
from socs_tcp import _arguments as arguments

__all__ = ['KNOWN_SOCS', 'FORCE_ENV', 'REDIRECT_ENV', 'CompatError', 'install', 'uninstall',
           'installed', 'describe', 'parse_redirects']

log = Logger(namespace='socs_tcp.compat')

#: Releases of ``socs`` whose ``socs.tcp`` socs_tcp was checked against, as a
#: half-open range of (major, minor) versions: 0.6.x (tested with 0.6.4).
KNOWN_SOCS = ((0, 6), (0, 7))

#: Environment variable that, set to ``1``, makes :func:`install` accept an
#: unknown ``socs`` release or shape (as ``force=True`` does).
FORCE_ENV = 'SOCS_TCP_FORCE'

#: Environment variable: ``HOST:PORT=HOST:PORT[,...]``, device addresses that
#: drivers connect to, each mapped to where the device really is.
REDIRECT_ENV = 'SOCS_TCP_REDIRECT'

Address = tuple[str, int]

# SOCS's own class, remembered by the first install() (None: never installed).
_original: type | None = None


class CompatError(RuntimeError):
    """``socs.tcp.TCPInterface`` cannot (or must not) be switched to socs_tcp's."""


def _socs_version() -> str:
    try:
        return importlib.metadata.version('socs')
    except importlib.metadata.PackageNotFoundError:
        # importable but not installed as a distribution (a source tree on sys.path)
        socs = sys.modules.get('socs')
        return str(getattr(socs, '__version__', 'unknown'))


def _parse_version(text: str) -> tuple[int, int] | None:
    match = re.match(r'(\d+)\.(\d+)', text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _import_socs_tcp():
    """Return the ``socs.tcp`` module, or raise CompatError if socs is missing."""
    try:
        return importlib.import_module('socs.tcp')
    except ModuleNotFoundError as exc:
        if exc.name not in ('socs', 'socs.tcp'):
            raise    # socs is there but one of its own imports is broken: show that
        raise CompatError(
            f'socs is not installed in this Python ({sys.executable}), so there is no '
            'socs.tcp.TCPInterface to replace: pip install socs, or run the agent with '
            'ocs-agent-cli') from exc


def _has_parameters(func, names: tuple[str, ...]) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return all(name in params for name in names)


def _shape_problems(cls) -> list[str]:
    """What SOCS's class lacks of the interface socs_tcp stands in for (empty: fine)."""
    if not isinstance(cls, type):
        return [f'socs.tcp.TCPInterface is not a class but {cls!r}']
    expected = {
        '__init__': ('ip_address', 'port', 'timeout'),
        '_connect': ('address',),
        'send': ('msg',),
        'recv': ('bufsize', 'reset_on_error'),
    }
    problems = []
    for name, params in expected.items():
        func = getattr(cls, name, None)
        if not callable(func):
            problems.append(f'no {name}()')
        elif not _has_parameters(func, params):
            problems.append(f'{name}() does not take ({", ".join(params)})')
    return problems


def _check_known(module, version: str) -> None:
    """Raise CompatError if this socs.tcp is a release or shape we have not checked."""
    low, high = KNOWN_SOCS
    parsed = _parse_version(version)
    problems = []
    if parsed is None or not low <= parsed < high:
        problems.append(f'socs {version} is outside the releases socs_tcp was checked against '
                        f'({low[0]}.{low[1]}.x)')
    problems += _shape_problems(getattr(module, 'TCPInterface', None))
    if problems:
        raise CompatError(
            'not switching socs.tcp.TCPInterface to socs_tcp: ' + '; '.join(problems) + '. '
            f'If its drivers still use it as socs.tcp 0.6 did, call install(force=True) '
            f'or set {FORCE_ENV}=1.')


def _live_subclasses(cls: type) -> list[str]:
    """``module.Name`` of the classes built on ``cls`` whose module is imported now.

    A class whose module was dropped from ``sys.modules`` (a test re-importing
    drivers) may still be alive; it is not counted, the next import builds anew.
    """
    found, todo, seen = [], list(cls.__subclasses__()), set()
    while todo:
        sub = todo.pop()
        if sub in seen:
            continue
        seen.add(sub)
        todo.extend(sub.__subclasses__())
        module = sys.modules.get(sub.__module__)
        if module is not None and getattr(module, sub.__name__, None) is sub:
            found.append(f'{sub.__module__}.{sub.__qualname__}')
    return sorted(found)


def parse_redirects(text: str) -> dict[Address, Address]:
    """Parse ``HOST:PORT=HOST:PORT[,...]`` (the form of ``SOCS_TCP_REDIRECT``).

    Raises
    ------
    CompatError
        An entry that is not ``HOST:PORT=HOST:PORT`` with ports in 1..65535 (named).
    """
    table: dict[Address, Address] = {}
    for entry in filter(None, (part.strip() for part in text.split(','))):
        try:
            source, target = (_address(side) for side in entry.split('='))
        except (TypeError, ValueError) as exc:
            raise CompatError(f'{REDIRECT_ENV}: {entry!r} is not HOST:PORT=HOST:PORT ({exc})') from None
        table[source] = target
    return table


def _address(text: str) -> Address:
    host, _, port = text.strip().rpartition(':')
    if not host:
        raise ValueError(f'no host in {text!r}')
    return host, arguments.port(port)


def _redirecting(table: dict[Address, Address]) -> type:
    """socs_tcp's TCPInterface, connecting to ``table[(ip, port)]`` for the addresses in it."""
    class RedirectingTCPInterface(socs_tcp.TCPInterface):
        __doc__ = socs_tcp.TCPInterface.__doc__

        def __init__(self, ip_address, port, timeout=10, **options):
            target = table.get((ip_address, arguments.port(port)))
            if target is not None:
                log.info('{source} redirected to {target} ({env})', source=f'{ip_address}:{port}',
                         target='{}:{}'.format(*target), env=REDIRECT_ENV)
                ip_address, port = target
            super().__init__(ip_address, port, timeout, **options)
    return RedirectingTCPInterface


def installed() -> bool:
    """Whether ``socs.tcp.TCPInterface`` is socs_tcp's class now (redirecting or not).

    False as well when socs is not installed (nothing was switched).
    """
    module = sys.modules.get('socs.tcp')
    current = getattr(module, 'TCPInterface', None) if module is not None else None
    return isinstance(current, type) and issubclass(current, socs_tcp.TCPInterface)


def install(*, force: bool | None = None, redirects: dict[Address, Address] | None = None) -> None:
    """Make ``socs.tcp.TCPInterface`` :class:`socs_tcp.TCPInterface`. Idempotent.

    Call it before any SOCS agent or driver module is imported: drivers bind
    the base class when their module is imported. A test that patches
    ``socs.tcp.TCPInterface._connect`` afterwards patches socs_tcp's class.

    Parameters
    ----------
    force : bool, optional
        Switch even if the installed socs is a release or shape not checked
        against socs_tcp (a warning is logged). Default: True when the
        environment has ``SOCS_TCP_FORCE=1``, else False.
    redirects : dict, optional
        ``{(host, port): (host, port)}``: drivers that connect to a key reach
        its value. Default: ``SOCS_TCP_REDIRECT`` from the environment.

    Raises
    ------
    CompatError
        socs is not installed; its ``socs.tcp`` is unknown (and not ``force``);
        a driver built on SOCS's own class is already imported (named in the
        message; ``force`` does not help, importing it later does); or
        ``SOCS_TCP_REDIRECT`` is malformed.
    """
    global _original
    if force is None:
        force = os.environ.get(FORCE_ENV, '') == '1'
    if redirects is None:
        redirects = parse_redirects(os.environ.get(REDIRECT_ENV, ''))
    module = _import_socs_tcp()
    current = getattr(module, 'TCPInterface', None)
    if installed():
        return
    version = _socs_version()
    try:
        _check_known(module, version)
    except CompatError as exc:
        if not force:
            raise
        log.warn('{error} Forced: switching anyway.', error=str(exc))
    if isinstance(current, type):
        early = _live_subclasses(current)
        if early:
            raise CompatError(
                'too late to switch socs.tcp.TCPInterface to socs_tcp: already imported on '
                f'SOCS\'s own class: {", ".join(early)}. Call socs_tcp.compat.install() before '
                'importing any SOCS agent or driver (socs-tcp agent does).')
    _original = current
    module.TCPInterface = _redirecting(dict(redirects)) if redirects else socs_tcp.TCPInterface


def uninstall() -> bool:
    """Put SOCS's own ``socs.tcp.TCPInterface`` back; return whether it was switched.

    Only modules imported afterwards see SOCS's class again: a driver class
    defined while socs_tcp's was installed keeps it as its base.
    """
    global _original
    module = sys.modules.get('socs.tcp')
    if module is None or _original is None or not installed():
        return False
    module.TCPInterface, _original = _original, None
    return True


def describe() -> str:
    """One line saying which class ``socs.tcp.TCPInterface`` is, for a startup log."""
    try:
        ours = importlib.metadata.version('socs_tcp')
    except importlib.metadata.PackageNotFoundError:
        ours = 'unknown'
    if 'socs.tcp' not in sys.modules:
        try:
            importlib.import_module('socs.tcp')
        except ImportError:
            return f'TCP base: socs is not installed (socs_tcp {ours} available, nothing switched)'
    version = _socs_version()
    if installed():
        current = sys.modules['socs.tcp'].TCPInterface
        how = ('is socs_tcp.TCPInterface' if current is socs_tcp.TCPInterface
               else f'is socs_tcp.TCPInterface with {REDIRECT_ENV}')
        return f'TCP base: socs_tcp {ours} (socs.tcp.TCPInterface {how}; socs {version})'
    return f'TCP base: socs.tcp.TCPInterface of socs {version} (not switched to socs_tcp)'
