"""socs_tcp: reactor-owned TCP connections to lab devices for OCS agents.

``TCPInterface`` is a drop-in for ``socs.tcp.TCPInterface`` that worker
threads call; ``DeviceProtocol`` and ``DeviceClientFactory`` are the Twisted
pair it stands on, for code that runs in the reactor thread.
``set_reactor_owner`` says who runs the reactor (see `socs_tcp._reactor_owner`).
"""

from socs_tcp._backoff import Backoff
from socs_tcp._errors import DeviceDisconnected, DeviceTimeout, NotConnected, ReactorThreadError
from socs_tcp._factory import DeviceClientFactory
from socs_tcp._interface import ConnectionHandle, TCPInterface
from socs_tcp._protocol import DeviceProtocol
from socs_tcp._reactor_owner import set_reactor_owner
from socs_tcp._record import install_from_environment as _record_from_environment
from socs_tcp._version import __version__

# SOCS_TCP_RECORD=FILE records every link of this process (see socs_tcp._record);
# unset, this is one environment lookup. A place it cannot record to stops the
# process with one line, as a bad SOCS_TCP does: this import may run at
# interpreter start (SOCS_TCP's .pth line), where an exception would only be
# printed and the agent would then run on plain socs, unrecorded.
try:
    _record_from_environment()
except ValueError as _exc:
    import os as _os
    import sys as _sys

    _sys.stderr.write(f'socs_tcp: {_exc}\n')
    _sys.stderr.flush()
    _os._exit(2)

__all__ = [
    'Backoff',
    'ConnectionHandle',
    'DeviceClientFactory',
    'DeviceDisconnected',
    'DeviceProtocol',
    'DeviceTimeout',
    'NotConnected',
    'ReactorThreadError',
    'TCPInterface',
    'set_reactor_owner',
    '__version__',
]
