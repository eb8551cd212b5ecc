#!/usr/bin/env python
"""CPU cost of one query, in instructions, for each client: load-independent.

Wall-clock figures need a quiet machine; instruction counts do not. Each
client runs ``base`` queries and then ``base + queries`` queries, each in a
fresh process under ``valgrind --tool=callgrind`` (every thread of the
client process counted: for socs_tcp the reactor thread too), against a line
echo device in another process. The difference of the two totals divided by
``queries`` is the cost of one query, without start-up and shutdown.

Two patterns: back to back (the next query as soon as the reply is there)
and isolated (``gap`` seconds apart, an agent polling every 20 ms: the link
is idle between queries, as in most agents).

Usage::

    python bench/query_instructions.py [--queries N] [--gap S] [--kinds raw,socs.tcp,socs_tcp]

Needs ``valgrind``; prints nothing but a note when it is missing.
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

from support.devices import BENCH_DIR, HOST, REPO_DIR, start_echo_process

PATTERNS = {'back to back': 0.0, 'isolated': 0.02}
_TOTAL = re.compile(r'^(?:summary|totals):\s+(\d+)', re.MULTILINE)


def valgrind_available() -> bool:
    return shutil.which('valgrind') is not None


def _child(kind: str, port: int, count: int, gap: float) -> None:
    """Run ``count`` queries with ``kind``'s client (what runs under callgrind)."""
    sys.path.insert(0, str(BENCH_DIR))
    from support.clients import make_client, wait_connected
    client = make_client(kind, HOST, port, 10.0)
    if not wait_connected(client, 30.0):
        raise SystemExit(f'{kind}: no connection to port {port}')
    payload = b'READ? 1'
    for _ in range(count):
        if client.query(payload) != payload:
            raise SystemExit(f'{kind}: a wrong reply')
        if gap:
            time.sleep(gap)
    client.close()


def _instructions(kind: str, port: int, count: int, gap: float) -> int:
    """Total instructions of one child process running ``count`` queries."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'callgrind.out')
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(REPO_DIR), os.environ.get('PYTHONPATH', '')) if p))
        subprocess.run(['valgrind', '--tool=callgrind', f'--callgrind-out-file={out}',
                        sys.executable, __file__, '--child', kind, str(port), str(count), str(gap)],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(out) as fh:
            match = _TOTAL.search(fh.read())
    if match is None:
        raise RuntimeError(f'no instruction total in callgrind output for {kind}')
    return int(match.group(1))


def measure(kinds: tuple[str, ...], queries: int, base: int = 50,
            patterns: dict[str, float] = PATTERNS) -> dict[str, dict[str, float]]:
    """Instructions per query: ``{pattern: {kind: instructions}}``."""
    results: dict[str, dict[str, float]] = {}
    with start_echo_process() as device:
        for pattern, gap in patterns.items():
            n = queries if not gap else max(50, queries // 4)  # isolated queries cost wall time
            results[pattern] = {
                kind: (_instructions(kind, device.port, base + n, gap)
                       - _instructions(kind, device.port, base, gap)) / n
                for kind in kinds}
    return results


def format_results(results: dict[str, dict[str, float]]) -> str:
    lines = ['instructions per query (callgrind, whole client process):']
    for pattern, by_kind in results.items():
        cells = '  '.join(f'{kind} {value / 1000:.1f}k' for kind, value in by_kind.items())
        lines.append(f'  {pattern:<13} {cells}')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv and argv[0] == '--child':
        _child(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--queries', type=int, default=1000)
    parser.add_argument('--kinds', default='raw,socs.tcp,socs_tcp')
    args = parser.parse_args(argv)
    if not valgrind_available():
        print('valgrind not found: no instruction counts')
        return 0
    print(format_results(measure(tuple(args.kinds.split(',')), args.queries)))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
