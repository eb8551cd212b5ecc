"""A line echo device in its own process, for benchmarks.

``python -m socs_tcp.sim.echo --port 0`` listens on 127.0.0.1, sends each
newline-terminated line back (newline included), and prints ``PORT <n>`` on
stdout once listening. It exits cleanly on SIGTERM or SIGINT, and when its
stdin reaches end of file, so a parent that dies (closing the pipe) never
leaves it behind: start it with ``stdin=subprocess.PIPE``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import Optional, Sequence


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the echo device until a signal or stdin EOF; return the exit status."""
    parser = argparse.ArgumentParser(prog='python -m socs_tcp.sim.echo',
                                     description='Line echo device on 127.0.0.1.')
    parser.add_argument('--port', type=int, default=0, help='port (0: pick a free one)')
    parser.add_argument('--host', default='127.0.0.1', help='interface (default 127.0.0.1)')
    parser.add_argument('--ignore-stdin', action='store_true',
                        help='keep running when stdin is closed (e.g. under nohup)')
    args = parser.parse_args(argv)

    from twisted.internet import reactor

    from socs_tcp.sim.server import DeviceServer

    # Benchmarks run for long: keep no request history.
    server = DeviceServer(lambda line: line, host=args.host, port=args.port, max_recorded=0)
    port = server.start()

    def announce():
        # The parent reads this line to learn the port (CLI output, not a log).
        # Printed once running, so SIGTERM/SIGINT handlers are in place by then.
        print(f'PORT {port}', flush=True)

    reactor.callWhenRunning(announce)
    if not args.ignore_stdin:
        _watch_stdin(reactor)
    # reactor.run() installs SIGINT/SIGTERM handlers that stop the reactor.
    reactor.run()
    return 0


if __name__ == '__main__':
    sys.exit(main())
