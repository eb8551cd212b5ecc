"""Line echo devices in their own process, for benchmarks.

``python -m socs_tcp.sim.echo --port 0`` listens on 127.0.0.1, sends each
newline-terminated line back (newline included), and prints ``PORT <n>`` on
stdout once listening. ``--devices M`` runs M such devices (a ``PORT`` line
each), and ``--control`` gives each a fault-control channel (a ``CONTROL <n>``
line after its ``PORT`` line; commands in `socs_tcp.sim.control`), so a
benchmark injects faults with the same commands as every other simulator.

It exits cleanly on SIGTERM or SIGINT, and when its stdin reaches end of
file, so a parent that dies (closing the pipe) never leaves it behind: start
it with ``stdin=subprocess.PIPE``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
from collections.abc import Sequence

from socs_tcp import _arguments as arguments
from socs_tcp._arguments import command_line, count


def _watch_stdin(reactor) -> None:
    """Stop the reactor once stdin reaches EOF (the parent closed it or died)."""
    fd = sys.stdin.fileno()

    def wait_for_eof():
        # os.read on the raw descriptor, not sys.stdin: a daemon thread blocked
        # inside the buffered reader holds its lock and makes the interpreter
        # abort at exit ("could not acquire lock for <stdin>").
        try:
            while os.read(fd, 65536):
                pass
        except OSError:
            pass
        reactor.callFromThread(_stop, reactor)

    threading.Thread(target=wait_for_eof, name='stdin-eof', daemon=True).start()


def _stop(reactor) -> None:
    if reactor.running:
        reactor.stop()


def _raise_descriptor_limit() -> None:
    # A benchmark holds ~1000 connections to one device: more than the usual
    # soft limit of 1024 descriptors allows.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m socs_tcp.sim.echo',
                                     description='Line echo devices on 127.0.0.1.')
    parser.add_argument('--port', type=command_line(arguments.port, int, allow_zero=True), default=0,
                        help='port (0: pick a free one; only with one device)')
    parser.add_argument('--host', default='127.0.0.1', help='interface (default 127.0.0.1)')
    parser.add_argument('--devices', type=command_line(count, int), default=1,
                        help='how many devices, each on its own free port (default 1)')
    parser.add_argument('--control', action='store_true',
                        help='a fault-control channel per device (printed as CONTROL <n>)')
    parser.add_argument('--ignore-stdin', action='store_true',
                        help='keep running when stdin is closed (e.g. under nohup)')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the echo devices until a signal or stdin EOF; return the exit status."""
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.port and args.devices > 1:
        parser.error('--port needs --devices 1 (more devices take free ports)')
    _raise_descriptor_limit()

    from twisted.internet import defer, reactor

    from socs_tcp.sim._server import DeviceServer
    from socs_tcp.sim.control import ControlChannel

    # Benchmarks run for long: keep no request history.
    servers = [DeviceServer(lambda line: line, host=args.host, port=args.port, max_recorded=0)
               for _ in range(args.devices)]
    failed = []

    def listening(ports: list[int]) -> None:
        # The parent reads these lines to learn the ports (CLI output, not a log).
        # Printed once running, so SIGTERM/SIGINT handlers are in place by then.
        lines = []
        for server, port in zip(servers, ports, strict=True):
            lines.append(f'PORT {port}')
            if args.control:
                lines.append(f'CONTROL {ControlChannel(server, args.host).start()}')
        print('\n'.join(lines), flush=True)

    def cannot_listen(failure) -> None:
        if failure.check(defer.FirstError):
            failure = failure.value.subFailure
        failed.append(failure)
        print(f'socs_tcp.sim.echo: cannot listen: {failure.getErrorMessage()}', file=sys.stderr,
              flush=True)
        reactor.stop()

    def start() -> None:
        d = defer.gatherResults([s.start() for s in servers], consumeErrors=True)
        d.addCallback(listening).addErrback(cannot_listen)

    reactor.callWhenRunning(start)
    if not args.ignore_stdin:
        _watch_stdin(reactor)
    # reactor.run() installs SIGINT/SIGTERM handlers that stop the reactor.
    reactor.run()
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
