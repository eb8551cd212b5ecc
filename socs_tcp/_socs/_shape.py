"""Refuse to replace a SOCS class that is not the one socs_tcp's replacement was written for."""

from __future__ import annotations

import os

from twisted.logger import Logger

from socs_tcp import compat

log = Logger(namespace='socs_tcp.compat')


def require(what: str, cls: object, expected: dict[str, tuple[str, ...]]) -> None:
    """Check the installed socs release and the shape of SOCS's ``cls`` (named ``what``).

    ``expected`` maps each method the replacement relies on to the parameters
    it must take. ``SOCS_TCP_FORCE=1`` turns a refusal into a logged warning.

    Raises
    ------
    socs_tcp.compat.CompatError
        A socs release outside :data:`socs_tcp.compat.KNOWN_SOCS`, or a
        ``cls`` without one of the methods (all problems named).
    """
    low, high = compat.KNOWN_SOCS
    version = compat._socs_version()
    parsed = compat._parse_version(version)
    problems = []
    if parsed is None or not low <= parsed < high:
        problems.append(f'socs {version} is outside the releases socs_tcp was checked against '
                        f'({low[0]}.{low[1]}.x)')
    if not isinstance(cls, type):
        problems.append(f'{what} is not a class but {cls!r}')
    else:
        for name, params in expected.items():
            func = getattr(cls, name, None)
            if not callable(func):
                problems.append(f'{what} has no {name}()')
            elif not compat._has_parameters(func, params):
                problems.append(f'{what}.{name}() does not take ({", ".join(params)})')
    if not problems:
        return
    message = (f'not switching {what} to socs_tcp: ' + '; '.join(problems)
               + f'. If it still works as in socs 0.6, set {compat.FORCE_ENV}=1.')
    if os.environ.get(compat.FORCE_ENV, '') != '1':
        raise compat.CompatError(message)
    log.warn('{error} Forced: switching anyway.', error=message)
