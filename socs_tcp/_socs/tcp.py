"""``socs.tcp.TCPInterface``: the drivers that subclass it stand on :class:`socs_tcp.TCPInterface`.

The switch itself is :mod:`socs_tcp.compat`'s (release and shape checks,
``SOCS_TCP_REDIRECT``); this module gives it the transport interface.
"""

from __future__ import annotations

from socs_tcp import compat


def install() -> None:
    """Make ``socs.tcp.TCPInterface`` socs_tcp's (:func:`socs_tcp.compat.install`)."""
    compat.install()


def uninstall() -> bool:
    """Put SOCS's ``socs.tcp.TCPInterface`` back; return whether it was switched."""
    return compat.uninstall()
