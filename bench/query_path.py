#!/usr/bin/env python
"""What each client runs on a query's critical path, in Python bytecodes: load-independent.

A query's latency is the device's time plus what the client runs before its
request leaves and after the reply arrives; what it runs in between (while
the device answers) costs nothing. On an idle machine (an agent polling
every few ms) that code runs on cold caches, so its length shows in every
query. This counts, for one query on a link polled every 20 ms, the bytecodes each
client executes in the three phases, with ``sys.settrace``: before the
first ``send``/``sendall``, between that and the ``recv`` that returns the
reply, and after it, and names the Python functions of each phase.

Usage::

    python bench/query_path.py [--kinds raw,socs.tcp,socs_tcp]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from support.clients import KINDS, available_kinds, make_client, wait_connected
from support.devices import HOST, start_echo_process

#: Seconds between the warm-up queries (an agent polling its device).
GAP = 0.02

PHASES = ('before the request', 'while the device answers', 'after the reply')
_SENDS = frozenset({'send', 'sendall'})
_RECVS = frozenset({'recv'})


def trace_one_query(client, payload: bytes) -> dict[str, tuple[int, list[str]]]:
    """Bytecodes and functions per phase of ``client.query(payload)``."""
    phase = [0]
    opcodes = [0, 0, 0]
    functions: list[Counter] = [Counter(), Counter(), Counter()]

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        if event == 'opcode':
            opcodes[phase[0]] += 1
        elif event == 'call':
            functions[phase[0]][frame.f_code.co_qualname] += 1
        return tracer

    def profiler(frame, event, arg):
        # C calls bound the phases: the request leaves in send/sendall, the reply comes from recv.
        name = getattr(arg, '__name__', '')
        if event == 'c_call' and name in _SENDS and phase[0] == 0:
            phase[0] = 1
        elif event == 'c_return' and name in _RECVS:
            phase[0] = 2

    sys.setprofile(profiler)
    sys.settrace(tracer)
    try:
        reply = client.query(payload)
    finally:
        sys.settrace(None)
        sys.setprofile(None)
    if reply != payload:
        raise RuntimeError(f'a wrong reply: {reply!r}')
    return {name: (opcodes[i], sorted(functions[i])) for i, name in enumerate(PHASES)}


def measure(port: int, kinds: tuple[str, ...]) -> dict[str, dict[str, tuple[int, list[str]]]]:
    results = {}
    for kind in kinds:
        client = make_client(kind, HOST, port, 5.0)
        try:
            if not wait_connected(client):
                raise RuntimeError(f'{kind}: no connection to the echo server on {port}')
            for _ in range(20):   # an agent polling: connected, on_connect run, the link settled
                client.query(b'READ? 1')
                time.sleep(GAP)
            results[kind] = trace_one_query(client, b'READ? 1')
        finally:
            client.close()
    return results


def format_results(results: dict[str, dict[str, tuple[int, list[str]]]]) -> str:
    lines = ['bytecodes on a query\'s path (sys.settrace, one query on a link polled every 20 ms):',
             f'{"client":10}' + ''.join(f'{p:>28}' for p in PHASES)]
    for kind, phases in results.items():
        lines.append(f'{kind:10}' + ''.join(f'{phases[p][0]:>28}' for p in PHASES))
    for kind, phases in results.items():
        for p in (PHASES[0], PHASES[2]):
            lines.append(f'  {kind}, {p}: {", ".join(phases[p][1]) or "-"}')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--kinds', default=','.join(KINDS),
                        help=f'clients to measure, comma-separated (default {",".join(KINDS)})')
    args = parser.parse_args(argv)
    wanted = tuple(k for k in args.kinds.split(',') if k)
    unknown = [k for k in wanted if k not in KINDS]
    if unknown:
        parser.error(f'--kinds: unknown {", ".join(unknown)} (choose from {", ".join(KINDS)})')
    kinds = tuple(k for k in wanted if k in available_kinds())
    with start_echo_process() as echo:
        print(format_results(measure(echo.port, kinds)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
