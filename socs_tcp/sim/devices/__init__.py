"""Simulators of devices that SOCS agents drive, built on `socs_tcp.sim.DeviceServer`.

One module per device, each with its pure request -> reply function and the
server class that serves it:

==================  ====================================  ===========================
kind                simulator                             SOCS agent (agent-class)
==================  ====================================  ===========================
``cryomech-cpa``    `cryomech_cpa.CryomechCPASimulator`     ``CryomechCPAAgent``
``lakeshore372``    `lakeshore372.Lakeshore372Simulator`    ``Lakeshore372Agent``
``pfeiffer-tpg366`` `pfeiffer_tpg366.PfeifferTPG366Simulator`  ``PfeifferAgent``
``prologix``        `prologix.PrologixSimulator`            ``ScpiPsuAgent`` (GPIB 5),
                                                            ``SRSCG635Agent`` (GPIB 23)
``moxa-dwl``        `moxa.MoxaDWLSimulator`                 ``WiregridTiltSensorAgent``
``moxa-pmx``        `moxa.MoxaPMXSimulator`                 ``WiregridKikusuiAgent``
``pfeiffer-tc400``  `tc400.PfeifferTC400Simulator`          ``PfeifferTC400Agent``
``hwp-pid``         `hwp_pid.HWPPIDSimulator`               ``HWPPIDAgent``
==================  ====================================  ===========================

The last five sit behind a serial or GPIB bridge (`_bridge.BridgeServer`),
with the bridge faults on top of the usual ones: a late reply the bridge
holds for the next connection, and a bridge that takes one client.

``socs-tcp simulate <kind>`` runs one with its fault-control channel.
"""

from __future__ import annotations

__all__ = ['SIMULATORS']

#: kind -> (module, class) of each simulated SOCS device; ``socs-tcp simulate``
#: builds them as ``cls(host=..., port=...)`` (see `socs_tcp.sim.cli.make_simulator`).
SIMULATORS = {
    'cryomech-cpa': ('socs_tcp.sim.devices.cryomech_cpa', 'CryomechCPASimulator'),
    'lakeshore372': ('socs_tcp.sim.devices.lakeshore372', 'Lakeshore372Simulator'),
    'pfeiffer-tpg366': ('socs_tcp.sim.devices.pfeiffer_tpg366', 'PfeifferTPG366Simulator'),
    'prologix': ('socs_tcp.sim.devices.prologix', 'PrologixSimulator'),
    'moxa-dwl': ('socs_tcp.sim.devices.moxa', 'MoxaDWLSimulator'),
    'moxa-pmx': ('socs_tcp.sim.devices.moxa', 'MoxaPMXSimulator'),
    'pfeiffer-tc400': ('socs_tcp.sim.devices.tc400', 'PfeifferTC400Simulator'),
    'hwp-pid': ('socs_tcp.sim.devices.hwp_pid', 'HWPPIDSimulator'),
}
