#!/usr/bin/env python
"""Simulated line-echo devices in their own process, faults driven over stdin.

``python bench/device_process.py --devices M`` starts M
``socs_tcp.sim.DeviceServer`` echo devices on 127.0.0.1 (one port each),
prints ``PORT <n>`` per device, then reads one command per line on stdin and
answers ``OK <monotonic time> [value]`` (``ERR <reason>`` on failure) once the
command has taken effect. ``time.monotonic()`` is CLOCK_MONOTONIC, shared by
all processes on Linux, so the benchmark can compare it with its own clock.

Commands (``i`` is the device index):

``down i``         stop listening and drop every connection (device off)
``up i``           listen again on the same port (device back)
``drop i``         drop every connection, keep listening (device reboot)
``silent i 0|1``   read requests, never answer
``delay i S``      answer S seconds late
``fragments i N S``  answer in N-byte chunks S seconds apart (N=0: whole)
``reset i``        all reply faults off
``blackhole i``    silent, and new connections hang: see `Blackhole`
``unblackhole i``  undo blackhole (reply faults off, listening again)
``connections``    answer the total of open connections

Exits on stdin EOF, SIGTERM or SIGINT. The devices live here and not in the
benchmark's process because they would otherwise share its interpreter lock
and (for socs_tcp) its reactor, so server work would count as client latency.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time

from twisted.internet import reactor, task

from socs_tcp.sim import DeviceServer


class Blackhole:
    """New connections to ``port`` hang instead of being refused or accepted.

    Loopback can't drop packets, but a listening socket with a backlog of 0,
    whose one queue slot is taken and which never accepts, makes Linux drop
    every further SYN: a connect then waits until its own timeout, as for a
    host that has vanished. Together with a silent server on the connections
    already open, that is a blackholed device as far as loopback allows.
    """

    def __init__(self, port: int):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(('127.0.0.1', port))
        self.listener.listen(0)
        # Fill the accept queue ourselves so the next client's SYN is dropped.
        self.fillers = []
        for _ in range(2):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(('127.0.0.1', port))
            self.fillers.append(s)

    def close(self) -> None:
        for s in (*self.fillers, self.listener):
            s.close()


class Devices:
    """The devices and the command interpreter (commands run in the reactor)."""

    def __init__(self, count: int):
        self.servers = [DeviceServer(lambda line: line) for _ in range(count)]
        self.blackholes: dict[int, Blackhole] = {}

    def start(self) -> list[int]:
        return [s.start() for s in self.servers]

    def run(self, line: str) -> str:
        """Execute one command line (called from the stdin thread)."""
        words = line.split()
        if not words:
            return ''
        name, args = words[0], words[1:]
        if name == 'connections':
            return str(sum(s.connection_count for s in self.servers))
        srv = self.servers[int(args[0])]
        i = int(args[0])
        if name == 'down':
            srv.stop()
        elif name == 'up':
            srv.start()
        elif name == 'drop':
            srv.drop_connections()
        elif name == 'silent':
            srv.set_silent(bool(int(args[1])))
        elif name == 'delay':
            srv.set_delay(float(args[1]))
        elif name == 'fragments':
            size = int(args[1])
            srv.set_fragments(size or None, float(args[2]))
        elif name == 'reset':
            srv.reset_faults()
        elif name == 'blackhole':
            srv.set_silent(True)
            srv.stop_listening()
            self.blackholes[i] = Blackhole(srv.port)
        elif name == 'unblackhole':
            hole = self.blackholes.pop(i, None)
            if hole is not None:
                hole.close()
            srv.reset_faults()
            srv.start()
        else:
            raise ValueError(f'unknown command {name!r}')
        return ''

    def forget_requests(self) -> None:
        # DeviceServer records every request; a long soak must not grow here.
        for s in self.servers:
            s.clear_requests()


def serve_stdin(devices: Devices) -> None:
    """Read commands until EOF, answer each, then stop the reactor."""
    for line in sys.stdin:
        try:
            value = devices.run(line)
            answer = f'OK {time.monotonic():.6f} {value}'.rstrip()
        except Exception as exc:  # reported to the parent, which raises
            answer = f'ERR {type(exc).__name__}: {exc}'
        sys.stdout.write(answer + '\n')
        sys.stdout.flush()
    reactor.callFromThread(lambda: reactor.running and reactor.stop())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--devices', type=int, default=1, help='how many devices (default 1)')
    args = parser.parse_args(argv)
    if args.devices < 1:
        parser.error('--devices must be >= 1')
    # The scale benchmark holds ~1000 connections here: raise the fd limit.
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    devices = Devices(args.devices)

    def announce() -> None:
        # Only once the reactor runs: commands from the stdin thread must hop
        # into a running reactor.
        for port in devices.start():
            print(f'PORT {port}')
        sys.stdout.flush()
        threading.Thread(target=serve_stdin, args=(devices,), name='commands',
                         daemon=True).start()

    reactor.callWhenRunning(announce)
    task.LoopingCall(devices.forget_requests).start(10, now=False)
    reactor.run()
    return 0


if __name__ == '__main__':
    sys.exit(main())
