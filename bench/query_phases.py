#!/usr/bin/env python
"""Where an isolated query's time goes, per client, timed by the kernel: ``perf trace``.

``query_path.py`` counts the bytecodes a client runs before its request
leaves and after its reply arrives; this times them. On an agent's cold
caches (a query every 20 ms) what a step costs depends less on how many
bytecodes it runs than on how many objects, functions and modules it
touches, which only a clock shows. The clients take turns on one echo device
(another process), a query each, 20 ms apart; before each query the client's
own descriptor on ``/dev/null`` is written one byte, and after it a shared
one, so that ``perf trace``'s record of every syscall tells the clients
apart. Per client, medians in µs of:

- *to the request*: from the mark to the ``sendto`` carrying the request;
- *of which after the first syscall*: from the end of the first syscall
  after the mark (socs_tcp's check for stale input; socs.tcp's wait for the
  socket to be writable, inside its ``sendall``) to the ``sendto``;
- *device and wake-ups*: from the ``sendto`` to the end of the ``recvfrom``
  that brought the reply's end;
- *after the reply*: from there to the closing mark.

Tracing adds a few µs to every syscall, so compare clients with each other,
not with the plain latency figures. Needs ``perf`` and the rights to trace
(root, or ``kernel.perf_event_paranoid`` <= 1); without them it says so and
exits 2.

Usage::

    python bench/query_phases.py [--queries 200] [--kinds raw,socs.tcp,socs_tcp]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from statistics import median

from support.clients import KINDS, available_kinds, make_client, wait_connected
from support.devices import HOST, start_echo_process

#: Seconds between two queries (an agent polling its device).
GAP = 0.02

_LINE = re.compile(r'^\s*([\d.]+) \(\s*([\d.]*)\s*ms\): \S+?/(\d+) (\w+)\((.*?)\)\s+=')
_CONTINUED = re.compile(r'^\s*([\d.]+) \(\s*([\d.]+)\s*ms\): \S+?/(\d+)\s+\.\.\. \[continued\]: (\w+)\(')
_FD = re.compile(r'fd: (\d+)')


def run_clients(kinds: tuple[str, ...], queries: int) -> None:
    """The traced part: the clients' queries, marked. Prints the marks' descriptors first."""
    marks = {kind: os.open(os.devnull, os.O_WRONLY) for kind in kinds}
    end = os.open(os.devnull, os.O_WRONLY)
    with start_echo_process() as echo:
        clients = {kind: make_client(kind, HOST, echo.port, 5.0) for kind in kinds}
        try:
            for kind, client in clients.items():
                if not wait_connected(client):
                    raise RuntimeError(f'{kind}: no connection to the echo server on {echo.port}')
            print(' '.join(f'{kind}={fd}' for kind, fd in marks.items()), f'END={end}', flush=True)
            for i in range(queries):
                shift = i % len(kinds)
                for kind in kinds[shift:] + kinds[:shift]:
                    payload = f'phase-{kind}-{i}'.encode()
                    time.sleep(GAP)
                    os.write(marks[kind], b'.')
                    reply = clients[kind].query(payload)
                    os.write(end, b'.')
                    if reply != payload:
                        raise RuntimeError(f'{kind}: a wrong reply {reply!r} to {payload!r}')
        finally:
            for client in clients.values():
                client.close()


def parse(trace: str, marks_line: str) -> dict[str, dict[str, float]]:
    """Per client, the medians (µs) of each phase, from ``perf trace``'s output."""
    marks = dict(item.split('=') for item in marks_line.split())
    end = int(marks.pop('END'))
    kind_of = {int(fd): kind for kind, fd in marks.items()}
    events = []  # (start s, duration s, tid, syscall, args)
    for line in trace.splitlines():
        found = _LINE.match(line) or _CONTINUED.match(line)
        if found:
            start, duration, tid, name = found.group(1), found.group(2), found.group(3), found.group(4)
            args = found.group(5) if found.re is _LINE else ''
            events.append((float(start) / 1000, float(duration or 0) / 1000, int(tid), name, args))

    def fd(event) -> int | None:
        found = _FD.match(event[4])
        return int(found.group(1)) if found else None
    # The clients' thread: the one that wrote the closing marks.
    writers = defaultdict(int)
    for event in events:
        if event[3] == 'write' and fd(event) == end:
            writers[event[2]] += 1
    tid = max(writers, key=writers.get)
    ours = sorted(e for e in events if e[2] == tid)
    phases: dict[str, dict[str, list[float]]] = {kind: defaultdict(list) for kind in kind_of.values()}
    i = 0
    while i < len(ours):
        event = ours[i]
        kind = kind_of.get(fd(event)) if event[3] == 'write' else None
        if kind is None:
            i += 1
            continue
        j, inside = i + 1, []
        while j < len(ours) and not (ours[j][3] == 'write' and fd(ours[j]) == end):
            inside.append(ours[j])
            j += 1
        sends = [e for e in inside if e[3] == 'sendto']
        recvs = [e for e in inside if e[3] == 'recvfrom']
        if j < len(ours) and sends and recvs:
            marked, first, send, reply = event[0] + event[1], inside[0], sends[0], recvs[-1]
            p = phases[kind]
            p['to the request'].append(send[0] - marked)
            p['of which after the first syscall'].append(
                send[0] - first[0] - first[1] if first is not send else 0.0)
            p['device and wake-ups'].append(reply[0] + reply[1] - send[0])
            p['after the reply'].append(ours[j][0] - reply[0] - reply[1])
        i = j + 1
    return {kind: {phase: median(values) * 1e6 for phase, values in p.items()}
            for kind, p in phases.items() if p}


def format_results(results: dict[str, dict[str, float]], queries: int) -> str:
    names = ('to the request', 'of which after the first syscall', 'device and wake-ups',
             'after the reply')
    lines = [f'an isolated query\'s phases, µs (perf trace; medians of {queries} queries '
             f'{int(GAP * 1000)} ms apart; tracing adds a few µs per syscall):',
             f'{"client":10}' + ''.join(f'{n:>34}' for n in names)]
    for kind, phases in results.items():
        lines.append(f'{kind:10}' + ''.join(f'{phases[n]:>34.1f}' for n in names))
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--queries', type=int, default=200, help='queries per client (default 200)')
    parser.add_argument('--kinds', default=','.join(KINDS),
                        help=f'clients to measure, comma-separated (default {",".join(KINDS)})')
    parser.add_argument('--traced', action='store_true', help=argparse.SUPPRESS)  # the run under perf
    args = parser.parse_args(argv)
    if args.queries < 1:
        parser.error(f'--queries must be at least 1, got {args.queries}')
    wanted = tuple(k for k in args.kinds.split(',') if k)
    unknown = [k for k in wanted if k not in KINDS]
    if unknown:
        parser.error(f'--kinds: unknown {", ".join(unknown)} (choose from {", ".join(KINDS)})')
    kinds = tuple(k for k in wanted if k in available_kinds())
    if args.traced:
        run_clients(kinds, args.queries)
        return 0
    perf = shutil.which('perf')
    if perf is None:
        print('query_phases: needs perf (linux-perf / linux-tools) on PATH', file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, 'trace.txt')
        proc = subprocess.run([perf, 'trace', '-o', trace, sys.executable, os.path.abspath(__file__),
                               '--traced', '--queries', str(args.queries), '--kinds', ','.join(kinds)],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not proc.stdout.strip():
            print(f'query_phases: perf trace failed (rc {proc.returncode}): '
                  f'{proc.stderr.strip()[-500:]}', file=sys.stderr)
            return 2
        with open(trace) as f:
            results = parse(f.read(), proc.stdout.strip().splitlines()[-1])
    print(format_results(results, args.queries))
    return 0


if __name__ == '__main__':
    sys.exit(main())
