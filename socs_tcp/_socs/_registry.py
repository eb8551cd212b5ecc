"""The SOCS transports socs_tcp can take over, and how ``SOCS_TCP`` selects them.

Each transport is replaced by a module ``socs_tcp._socs.<name>`` (its
``install()``/``uninstall()``), applied once SOCS's module that holds the
original (its *target*) has been imported. A transport whose module is not
part of this socs_tcp is left out of ``SOCS_TCP=1`` and refused when named.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

__all__ = ['ENV', 'TRANSPORTS', 'Transport', 'SelectionError', 'available', 'parse_selection']

#: The environment variable that switches a process over.
ENV = 'SOCS_TCP'


@dataclass(frozen=True)
class Transport:
    """One SOCS transport: ``name`` in ``SOCS_TCP``, the SOCS module it patches, what it replaces."""

    name: str
    target: str
    replaces: str
    module_name: str = ''   # in socs_tcp._socs; default: the transport's name

    @property
    def module(self) -> str:
        return f'socs_tcp._socs.{self.module_name or self.name}'


#: Every transport by name, in the order they are applied and reported.
TRANSPORTS: dict[str, Transport] = {t.name: t for t in (
    Transport('tcp', 'socs.tcp', 'socs.tcp.TCPInterface'),
    Transport('prologix', 'socs.common.prologix_interface',
              'socs.common.prologix_interface.PrologixInterface'),
    Transport('scpi_psu', 'socs.agents.scpi_psu.drivers', 'socs.agents.scpi_psu.drivers.ScpiPsuInterface'),
    Transport('serial', 'serial', "pyserial's socket:// handler", 'pyserial'),
    Transport('moxa', 'socs.common.moxa_serial', 'socs.common.moxa_serial.Serial_TCPServer'),
    Transport('hwp_pid', 'socs.agents.hwp_pid.drivers.pid_controller',
              'socs.agents.hwp_pid.drivers.pid_controller.PID'),
    Transport('hwp_gripper', 'socs.agents.hwp_gripper.drivers.gripper_client',
              'socs.agents.hwp_gripper.drivers.gripper_client.GripperClient'),
)}


class SelectionError(ValueError):
    """A ``SOCS_TCP`` value that names no transport (the message says which part and lists the names)."""


def available(name: str) -> bool:
    """Whether this socs_tcp has the module that replaces transport ``name``."""
    return importlib.util.find_spec(TRANSPORTS[name].module) is not None


def parse_selection(value: str) -> list[str]:
    """The transports ``SOCS_TCP=value`` selects, in :data:`TRANSPORTS` order.

    ``1`` (or ``all``): every transport this socs_tcp has; ``0`` or empty:
    none; else a comma-separated list of names (spaces ignored).

    Raises
    ------
    SelectionError
        A part that is no transport's name, or a transport whose module this
        socs_tcp does not have.
    """
    text = value.strip().lower()
    if text in ('', '0'):
        return []
    if text in ('1', 'all'):
        return [name for name in TRANSPORTS if available(name)]
    names = set()
    for part in text.split(','):
        part = part.strip()
        if part not in TRANSPORTS:
            raise SelectionError(
                f'{ENV}={value!r}: {part!r} is not a transport; valid: 1 (all), 0 (none) or '
                f'a comma-separated list of {", ".join(TRANSPORTS)}')
        if not available(part):
            raise SelectionError(
                f'{ENV}={value!r}: transport {part!r} is not part of this socs_tcp '
                f'({TRANSPORTS[part].module} is missing)')
        names.add(part)
    return [name for name in TRANSPORTS if name in names]
