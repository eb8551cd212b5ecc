"""Exceptions raised by socs_tcp.

Every failure to talk to the device is a builtin ``ConnectionError``, so the
``except ConnectionError:`` of existing OCS agents catches all of them.
"""


class DeviceTimeout(ConnectionError, TimeoutError):
    """The device did not answer (or accept data) within the timeout."""


class DeviceDisconnected(ConnectionError):
    """The connection was lost: the peer closed it, reset it, or we dropped it."""


class NotConnected(ConnectionError):
    """No connection to the device could be made (refused, unreachable, timed out)."""


class ReactorThreadError(RuntimeError):
    """A blocking call was made from the reactor thread, where it would deadlock."""
