"""Simulators of devices that SOCS agents drive, built on `socs_tcp.sim.DeviceServer`.

One module per device, each with its pure request -> reply function and the
server class that serves it:

==================  ====================================  ===========================
kind                simulator                             SOCS agent (agent-class)
==================  ====================================  ===========================
``cryomech-cpa``    `cryomech_cpa.CryomechCPASimulator`     ``CryomechCPAAgent``
``lakeshore372``    `lakeshore372.Lakeshore372Simulator`    ``Lakeshore372Agent``
``pfeiffer-tpg366`` `pfeiffer_tpg366.PfeifferTPG366Simulator`  ``PfeifferAgent``
==================  ====================================  ===========================

``socs-tcp simulate <kind>`` runs one with its fault-control channel.
"""

from __future__ import annotations

import importlib

from socs_tcp.sim.server import DeviceServer

__all__ = ['SIMULATORS', 'make_simulator']

#: kind -> (module, class) of each simulated SOCS device.
SIMULATORS = {
    'cryomech-cpa': ('socs_tcp.sim.devices.cryomech_cpa', 'CryomechCPASimulator'),
    'lakeshore372': ('socs_tcp.sim.devices.lakeshore372', 'Lakeshore372Simulator'),
    'pfeiffer-tpg366': ('socs_tcp.sim.devices.pfeiffer_tpg366', 'PfeifferTPG366Simulator'),
}


def make_simulator(kind: str, host: str = '127.0.0.1', port: int = 0) -> DeviceServer:
    """Build (not start) the simulator of ``kind``.

    Raises
    ------
    ValueError
        If ``kind`` is not in `SIMULATORS`.
    """
    if kind not in SIMULATORS:
        raise ValueError(f'kind must be one of {sorted(SIMULATORS)}, got {kind!r}')
    module, name = SIMULATORS[kind]
    return getattr(importlib.import_module(module), name)(host=host, port=port)
