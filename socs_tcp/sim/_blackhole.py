"""A port where new connections hang: a device gone from the network, as far as loopback allows.

Loopback can't drop packets, but a listening socket with a backlog of 0,
whose one queue slot is taken and which never accepts, makes Linux drop every
further SYN: a connect then waits until its own timeout, as for a host that
has vanished. `DeviceServer.set_blackhole` pairs it with silence on the
connections already open.
"""

from __future__ import annotations

import socket


class Blackhole:
    """Holds ``host:port`` so that new connections to it hang (until `close`).

    Parameters
    ----------
    host : str
        Interface the device listened on.
    port : int
        The device's port, no longer listened on by anyone else.

    Raises
    ------
    OSError
        If the port can't be bound (someone else took it meanwhile).
    """

    #: Connections that fill the accept queue of a backlog-0 listener on Linux.
    FILLERS = 2

    def __init__(self, host: str, port: int):
        self.listener = socket.socket()
        self.fillers: list[socket.socket] = []
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host, port))
            self.listener.listen(0)
            # Fill the accept queue ourselves, so the next client's SYN is dropped.
            for _ in range(self.FILLERS):
                filler = socket.socket()
                self.fillers.append(filler)
                filler.setblocking(False)
                filler.connect_ex((host, port))
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        """Let the port go (connections waiting on it are then refused). Idempotent."""
        for sock in (*self.fillers, self.listener):
            sock.close()
