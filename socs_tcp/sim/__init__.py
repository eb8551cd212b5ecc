"""Simulated TCP devices for tests, sample agents, the demo and benchmarks.

``DeviceServer`` answers requests through a handler and injects the faults
real lab devices show (see `socs_tcp.sim._server`); its methods run in the
reactor thread, and ``server.blocking`` (a ``BlockingDeviceServer``) serves
other threads. ``mbap_framer`` and ``TerminatorFramer`` frame requests (see
`socs_tcp.sim._framing`). A running simulator takes fault commands on its
control port (`socs_tcp.sim.control`: ``ControlChannel``, and ``SimControl``
to send them; the commands are defined once, in `socs_tcp.sim._commands`).
``socs-tcp simulate`` runs one (`socs_tcp.sim.cli`; its ``--help`` lists each
device's commands and the fault controls), and ``python -m socs_tcp.sim.echo``
runs line echo devices in their own process.

How a simulated device stops using a connection, one word each:

drop
    End it at once with a reset (RST): the client's next read or write
    fails with ``ConnectionResetError``. Queued replies are discarded. The
    ``drop`` and ``drop-after`` faults, ``DeviceServer.drop_connections``,
    and ``stop`` (which also stops listening) do this.
hang up
    End it cleanly (FIN), as a device that closes the connection on purpose:
    the client reads the end of the stream (``b''``). Queued replies are
    discarded. The ``hangup`` fault, ``DeviceServer.hangup``.
refuse
    End a new connection as soon as it is accepted, before it carries
    anything: a one-client device that already has its client
    (``max_connections``). A device that is not listening refuses too,
    in TCP's own sense (``ConnectionRefusedError``).
gone
    The connection has ended, whoever ended it (``connection_count`` no
    longer counts it; ``when_connections`` waits for it).

A blackholed device does none of these: its connections stay open and
silent, as they do when a device vanishes from the network.
"""

from socs_tcp.sim._blocking import BlockingDeviceServer
from socs_tcp.sim._faults import Faults
from socs_tcp.sim._framing import TerminatorFramer, mbap_framer
from socs_tcp.sim._server import DeviceServer

__all__ = ['BlockingDeviceServer', 'DeviceServer', 'Faults', 'TerminatorFramer', 'mbap_framer']
