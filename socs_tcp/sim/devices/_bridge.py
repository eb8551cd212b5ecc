"""A serial- or GPIB-to-Ethernet bridge in front of a simulated instrument.

A Moxa serial server or a Prologix GPIB-Ethernet box is not the instrument:
it forwards bytes between one TCP client and an instrument that knows nothing
of TCP. Two consequences that a plain `~socs_tcp.sim.DeviceServer` does not
show, and that `BridgeServer` adds as faults:

- **late reply** (`BridgeServer.set_late`): the instrument answers the next
  request late. Its reply goes to whichever client is connected when it
  comes out of the instrument (it then answers that client's *next* query),
  or, while no client is connected, the bridge holds it and hands it to the
  next connection as soon as it opens.
- **one client** (`BridgeServer.set_one_client`): while a client is
  connected, a second connection is accepted and closed at once, as bridges
  configured for one TCP client do.

The instrument's state outlives TCP connections, as it does behind a real
bridge: closing the connection resets nothing but the byte stream.
"""

from __future__ import annotations

from collections.abc import Callable

from socs_tcp import _arguments as arguments
from socs_tcp.sim import DeviceServer

__all__ = ['BridgeServer']


class BridgeServer(DeviceServer):
    """A `~socs_tcp.sim.DeviceServer` whose replies come from an instrument behind a bridge.

    Parameters
    ----------
    instrument : callable
        ``instrument(request: bytes) -> bytes | str | None``: the reply of
        the instrument to one framed request (None: no reply).
    one_client : bool
        Start with the one-client limit on (see `set_one_client`).
    **kwargs
        The other arguments of `~socs_tcp.sim.DeviceServer` (framer,
        terminators, host, port, reactor, ...), not ``handler`` nor
        ``max_connections``.
    """

    def __init__(self, instrument: Callable[[bytes], bytes | str | None], *,
                 one_client: bool = False, **kwargs):
        if not callable(instrument):
            raise TypeError(f'instrument must be callable, got {type(instrument).__name__}')
        for name in ('handler', 'max_connections'):
            if name in kwargs:
                raise TypeError(f'BridgeServer sets {name} itself; use instrument / one_client')
        self._instrument = instrument
        self._late = 0.0                 # lateness of the next reply (s); 0: on time
        self._held: list[bytes] = []     # late replies that found no client
        self._late_calls: list = []      # IDelayedCall of late replies in flight
        super().__init__(self._bridge_handle, max_connections=1 if one_client else None,
                         **kwargs)

    # -- faults -----------------------------------------------------------------
    def set_late(self, seconds: float) -> None:
        """Make the instrument answer the next request ``seconds`` late (0 cancels).

        Raises
        ------
        TypeError, ValueError
            If ``seconds`` is not a finite number >= 0.
        """
        self._late = arguments.seconds(seconds, 'seconds', allow_zero=True)

    def set_one_client(self, on: bool = True) -> None:
        """Take one TCP client at a time (``on``), or any number."""
        self.max_connections = 1 if on else None

    @property
    def held_count(self) -> int:
        """Late replies the bridge holds for the next connection."""
        return len(self._held)

    def bridge_status(self) -> str:
        """Short summary of the bridge faults for the control channel's ``status``."""
        return (f'late={self._late:g} held={len(self._held)} '
                f'in_flight={len(self._late_calls)} one_client={int(self.max_connections == 1)}')

    def reset_faults(self) -> None:
        """Turn every reply fault off, the pending late reply too (replies in flight stay)."""
        super().reset_faults()
        self._late = 0.0

    def stop(self):
        """The bridge goes away: what it held and what was in flight is lost."""
        self._held.clear()
        for call in self._late_calls:
            if call.active():
                call.cancel()
        self._late_calls.clear()
        return super().stop()

    # -- the bridge ---------------------------------------------------------------
    def _bridge_handle(self, request: bytes) -> bytes | str | None:
        reply = self._instrument(request)
        if reply is None or not self._late:
            return reply
        data = arguments.as_bytes(reply, 'instrument reply') + (self.reply_terminator or b'')
        call = self.reactor.callLater(self._late, self._deliver_late, data)
        self._late_calls.append(call)
        self._late = 0.0                       # one late reply per set_late
        return None

    def _deliver_late(self, data: bytes) -> None:
        self._late_calls = [c for c in self._late_calls if c.active()]
        open_now = [c for c in self._connections if not c.closing]
        if open_now:
            open_now[-1].write_now(data)       # the client connected now gets it
        else:
            self._held.append(data)            # kept for the next connection

    def _connection_made(self, conn) -> None:
        super()._connection_made(conn)
        held, self._held = self._held, []
        for data in held:
            conn.write_now(data)
