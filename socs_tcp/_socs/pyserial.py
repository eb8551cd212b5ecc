"""pyserial's ``socket://`` URLs (``serial.serial_for_url``) on socs_tcp connections.

pyserial looks up the module for a URL scheme in each package listed in
``serial.protocol_handler_packages``, in order; :func:`install` puts
``socs_tcp._socs`` first, so ``socket://`` opens
:class:`socs_tcp._socs.protocol_socket.Serial` (every other scheme is still
pyserial's own). SOCS's pfeiffer_tc400 driver opens its Moxa port this way.
"""

from __future__ import annotations

import sys

from socs_tcp._socs._shape import require

TARGET = 'serial'
PACKAGE = 'socs_tcp._socs'


def install() -> None:
    """Serve ``socket://`` from socs_tcp. Idempotent.

    Raises
    ------
    socs_tcp.compat.CompatError
        This pyserial has no ``protocol_handler_packages`` list or its
        ``SerialBase`` is not the one the handler is built on (the socs release
        is checked too).
    """
    import serial
    import serial.serialutil
    packages = getattr(serial, 'protocol_handler_packages', None)
    if not isinstance(packages, list):
        from socs_tcp.compat import CompatError
        raise CompatError('not switching socket:// to socs_tcp: serial.protocol_handler_packages '
                          f'is not a list but {packages!r}')
    require('serial.serialutil.SerialBase', serial.serialutil.SerialBase, {
        '__init__': ('port', 'baudrate', 'timeout', 'write_timeout')})
    if PACKAGE not in packages:
        packages.insert(0, PACKAGE)


def uninstall() -> bool:
    """pyserial's own ``socket://`` again; return whether ours was in use."""
    serial = sys.modules.get(TARGET)
    packages = getattr(serial, 'protocol_handler_packages', None)
    if not isinstance(packages, list) or PACKAGE not in packages:
        return False
    packages.remove(PACKAGE)
    return True
