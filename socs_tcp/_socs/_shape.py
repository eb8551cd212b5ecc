"""Refuse to replace a SOCS class that is not the one socs_tcp's replacement was written for."""

from __future__ import annotations

import inspect
import os
from typing import Any, cast

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


def require_class(what: str, cls: object, methods: tuple[str, ...], leading: tuple[str, ...]) -> None:
    """:func:`require` the ``methods``, and a constructor whose parameters start with ``leading``, in order.

    The order matters where SOCS's drivers pass the arguments positionally.

    Raises
    ------
    socs_tcp.compat.CompatError
        As :func:`require`; or ``cls`` is not a class, or its constructor's
        parameters do not start with ``leading`` (``SOCS_TCP_FORCE`` does not
        accept these).
    """
    require(what, cls, {name: () for name in methods})
    if not isinstance(cls, type):
        raise compat.CompatError(f'{what} is not a class but {cls!r}: refusing to replace it')
    # a class here (checked above): its own constructor, the one SOCS's drivers
    # call; mypy's objection is to __init__ read off an instance
    params = list(inspect.signature(cast(Any, cls).__init__).parameters)
    if params[:len(leading)] != list(leading):
        raise compat.CompatError(f'{what}.__init__{tuple(params)} is not '
                                 f'({", ".join(leading)}): refusing to replace it')
