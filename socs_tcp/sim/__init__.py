"""Simulated TCP devices for tests, sample agents, the demo and benchmarks.

``DeviceServer`` answers requests through a handler and injects the faults
real lab devices show (see `socs_tcp.sim._server`); its methods run in the
reactor thread, and ``server.blocking`` (a ``BlockingDeviceServer``) serves
other threads. ``mbap_framer`` and ``TerminatorFramer`` frame requests (see
`socs_tcp._framing`, shared with the client). A running simulator takes fault commands on its
control port (`socs_tcp.sim.control`: ``ControlChannel``, and ``SimControl``
to send them). ``socs-tcp simulate`` runs one (`socs_tcp.sim.cli`), and
``python -m socs_tcp.sim.echo`` runs line echo devices in their own process.
"""

from socs_tcp._framing import TerminatorFramer, mbap_framer
from socs_tcp.sim._blocking import BlockingDeviceServer
from socs_tcp.sim._faults import Faults
from socs_tcp.sim._server import DeviceServer

__all__ = ['BlockingDeviceServer', 'DeviceServer', 'Faults', 'TerminatorFramer', 'mbap_framer']
