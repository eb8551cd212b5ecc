"""A TCP client transport whose input a waiting caller may read itself.

Between calls the reactor reads a device's connection, as any Twisted
transport does. While a call waits for its reply, the caller's thread owns
the connection's input and reads the socket itself (``Bridge.take``): the
reply reaches the caller without a hop through the reactor thread. This
transport is how the reactor keeps out of the way, without patching any
Twisted object:

- ``doRead`` asks its gate (the link's ``Bridge``) first. While a caller
  owns the input, it does not read; it stops watching the socket instead
  (``stopReading``, which is ``reactor.removeReader``: a reactor call, and
  ``doRead`` runs in the reactor thread). The bridge starts it again
  (``resumeProducing``, in the reactor thread too) once no caller owns the
  input: see ``Bridge`` for when.
- Otherwise ``doRead`` is Twisted's (``tcp.Connection.doRead``: one
  ``recv``, then ``protocol.dataReceived``), and the gate knows a read is
  under way, so a caller that wants the input waits for that read's data to
  be buffered first: nothing is reordered.
- ``_closeSocket`` (``tcp._SocketCloser``: shutdown or SO_LINGER, then
  close) runs under the gate's lock, where callers use the socket: a
  caller never reads from or writes to a descriptor that was closed (and
  perhaps reused by another connection).

Callers write through the same socket (``Bridge.write``): one descriptor per
connection.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

from twisted.internet import tcp
from twisted.internet.posixbase import PosixReactorBase


class InputGate(Protocol):
    """What an ``OwnedClient`` asks before it reads or closes (a ``Bridge``)."""

    def reactor_may_read(self, transport: OwnedClient) -> bool:
        """Whether the reactor may read now; False: a caller owns the input."""

    def reactor_read_done(self) -> None:
        """The read that ``reactor_may_read`` allowed is over (its data buffered)."""

    def socket_closing(self, transport: OwnedClient) -> AbstractContextManager[None]:
        """Held while the transport closes its socket."""


class OwnedClient(tcp.Client):
    """``tcp.Client`` that lets a waiting caller own its input (see the module).

    Attributes
    ----------
    gate : InputGate or None
        Set when the link adopts the connection; None: a plain ``tcp.Client``.
    """

    gate: InputGate | None = None

    def doRead(self) -> Any:
        gate = self.gate
        if gate is None:
            return super().doRead()
        if not gate.reactor_may_read(self):
            # A caller reads this socket itself now. removeReader is a
            # reactor call; doRead runs in the reactor thread.
            self.stopReading()
            return None
        try:
            return super().doRead()
        finally:
            gate.reactor_read_done()

    def _closeSocket(self, orderly: bool) -> None:
        gate = self.gate
        if gate is None:
            super()._closeSocket(orderly)
            return
        with gate.socket_closing(self):
            super()._closeSocket(orderly)


class OwnedConnector(tcp.Connector):
    """``tcp.Connector`` whose connections are ``OwnedClient`` transports."""

    def _makeTransport(self) -> OwnedClient:
        return OwnedClient(self.host, self.port, self.bindAddress, self, self.reactor)


def connect_tcp(reactor: Any, host: str, port: int, factory: Any, timeout: float) -> Any:
    """``reactor.connectTCP`` with ``OwnedClient`` transports (posixbase's connectTCP, with our connector).

    A reactor that is not a ``PosixReactorBase`` (a test's fake) gets the
    plain ``connectTCP``: its links are then read by the reactor only.
    """
    if isinstance(reactor, PosixReactorBase):
        connector = OwnedConnector(host, port, factory, timeout, None, reactor)
        connector.connect()
        return connector
    return reactor.connectTCP(host, port, factory, timeout=timeout)

