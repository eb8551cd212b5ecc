"""``socs.agents.scpi_psu.drivers.ScpiPsuInterface`` (an SCPI supply on its own LAN port) on socs_tcp.

The scpi_psu agent imports the class by name from the drivers module;
:func:`install` replaces it there, once that module has been imported, with
a subclass of SOCS's whose ``conn_socket``, ``write`` and ``read`` run on a
:class:`socs_tcp._socs._line.LineLink`: one whole reply line per ``read()``,
connect and reads bounded by 5 s, late replies never answering a later
query, and every failure a ``LinkDown``, which the agent's ``except
socket.timeout`` catches. Every other method is SOCS's.

(``PsuInterface``, the Prologix variant in the same module, stands on the
``prologix`` transport.)
"""

from __future__ import annotations

import sys
from typing import Any

from socs_tcp._socs._line import Address, LineDevice
from socs_tcp._socs._shape import require

TARGET = 'socs.agents.scpi_psu.drivers'

_original: type | None = None


def _replacement(base: type) -> type[LineDevice]:
    class ScpiPsuInterface(LineDevice, base):
        __doc__ = (f'{base.__module__}.{base.__qualname__} on a socs_tcp connection: one reply line per '
                   'read(), failures raise socs_tcp LinkDown (a ConnectionError and a TimeoutError).')

        def link_address(self) -> Address:
            return self.ip_address, int(self.port)

    return ScpiPsuInterface


def install() -> None:
    """Make ``ScpiPsuInterface`` in SOCS's drivers module socs_tcp's. Idempotent.

    Raises
    ------
    socs_tcp.compat.CompatError
        SOCS's class is not the one this replaces (or the socs release is unknown).
    """
    global _original
    import socs.agents.scpi_psu.drivers as module
    current = module.ScpiPsuInterface
    if getattr(current, '_socs_tcp_replaces', None) is not None:
        return
    require(f'{TARGET}.ScpiPsuInterface', current, {
        '__init__': ('ip_address', 'port'), 'conn_socket': (), 'configure': (),
        'write': ('msg',), 'read': (), 'identify': ()})
    replacement = _replacement(current)
    replacement._socs_tcp_replaces = current
    _original, module.ScpiPsuInterface = current, replacement


def uninstall() -> bool:
    """Put SOCS's class back; return whether it was replaced."""
    global _original
    module: Any = sys.modules.get(TARGET)   # SOCS's module: its attributes are not typed
    if module is None or _original is None:
        return False
    module.ScpiPsuInterface, _original = _original, None
    return True
