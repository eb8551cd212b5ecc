"""Simulated TCP devices for tests, sample agents, the demo and benchmarks.

``DeviceServer`` answers requests through a handler and injects the faults
real lab devices show (see `socs_tcp.sim.server`); ``mbap_framer`` and
``TerminatorFramer`` frame requests (see `socs_tcp.sim.framing`).
``python -m socs_tcp.sim.echo`` runs a line echo device in its own process.
"""

from socs_tcp.sim.faults import Faults
from socs_tcp.sim.framing import TerminatorFramer, mbap_framer
from socs_tcp.sim.server import DeviceServer

__all__ = ['DeviceServer', 'Faults', 'TerminatorFramer', 'mbap_framer']
