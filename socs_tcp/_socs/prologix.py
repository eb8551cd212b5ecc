"""``socs.common.prologix_interface.PrologixInterface`` (GPIB over Ethernet) on socs_tcp.

The drivers of scpi_psu (``--gpib-slot``), srs_cg635 and tektronix3021c
subclass SOCS's class when their module is imported; :func:`install` makes
the name in SOCS's module a subclass of SOCS's own whose ``conn_socket``,
``write`` and ``read`` run on a :class:`socs_tcp._socs._line.LineLink`
(everything else, the constructor included, stays SOCS's):

- ``read()`` returns one whole reply line, within 5 s (SOCS's timeout), or a
  reply that ends without a terminator once the line has been quiet for
  0.2 s (see ``LineDevice.reply_quiet``); SOCS's single ``recv(128)`` returned
  part of a reply, or two glued together;
- the ``++mode 1``/``++auto 1``/``++addr N`` set-up is sent again on every
  new connection, before anything else;
- connecting is bounded by the timeout too;
- a late reply never answers a later query (see ``_line``), and every failure
  raises ``LinkDown``, which these agents catch, instead of returning ``''``
  for ``float()`` to choke on.
"""

from __future__ import annotations

import sys
from typing import Any

from socs_tcp._socs._line import Address, LineDevice
from socs_tcp._socs._shape import require

TARGET = 'socs.common.prologix_interface'

#: The port SOCS's driver always connects to (the Prologix GPIB-ETHERNET's).
PORT = 1234

_original: type | None = None


def _replacement(base: type) -> type[LineDevice]:
    class PrologixInterface(LineDevice, base):
        __doc__ = (f'{base.__module__}.{base.__qualname__} on a socs_tcp connection: one reply line per '
                   'read(), set-up re-sent after every reconnect, failures raise socs_tcp LinkDown '
                   '(a ConnectionError and a TimeoutError).')

        def link_address(self) -> Address:
            return self.ip_address, PORT

        def after_reconnect(self) -> None:
            self.configure()

    return PrologixInterface


def install() -> None:
    """Make ``PrologixInterface`` in SOCS's module socs_tcp's. Idempotent.

    Raises
    ------
    socs_tcp.compat.CompatError
        SOCS's class is not the one this replaces (or the socs release is unknown).
    """
    global _original
    import socs.common.prologix_interface as module
    current = module.PrologixInterface
    if getattr(current, '_socs_tcp_replaces', None) is not None:
        return
    require(f'{TARGET}.PrologixInterface', current, {
        '__init__': ('ip_address', 'gpibAddr'), 'conn_socket': (), 'configure': (),
        'write': ('msg',), 'read': ()})
    replacement = _replacement(current)
    replacement._socs_tcp_replaces = current
    _original, module.PrologixInterface = current, replacement


def uninstall() -> bool:
    """Put SOCS's class back; return whether it was replaced."""
    global _original
    module: Any = sys.modules.get(TARGET)   # SOCS's module: its attributes are not typed
    if module is None or _original is None:
        return False
    module.PrologixInterface, _original = _original, None
    return True
