#!/usr/bin/env python
"""Query latency and throughput: raw socket vs socs.tcp vs socs_tcp, side by side.

One run measures the three clients against the same line echo server in
another process (``python -m socs_tcp.sim.echo --port 0``), interleaved in
small blocks so that drifts of the machine hit all three alike. Worker threads
make the calls, as OCS agents' blocking operations do. Every reply is checked
against its (unique) request and mismatches are counted.

With several threads on one interface, the raw socket and socs.tcp take a lock
around send+recv (they are not thread-safe without one); socs_tcp's ``query``
is atomic by itself.

Usage::

    python bench/query_latency.py [--runs 3] [--queries 2000] [--json FILE]

The last line is ``p50 ratio socs_tcp/socs: X.XX``: the median over the runs
of socs_tcp's single-thread p50 divided by socs.tcp's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field

from socs_tcp._arguments import command_line, count
from support.clients import KINDS, available_kinds, make_client, wait_connected
from support.devices import start_echo_process
from support.percentiles import median, percentile
from support.report import Progress, format_table

HOST = '127.0.0.1'
TIMEOUT = 5.0  # generous: a healthy echo never gets near it


@dataclass
class BlockResult:
    """What one block of queries (one client, N threads) measured."""

    kind: str
    threads: int
    latencies_us: list[float] = field(default_factory=list)
    queries: int = 0
    wall_s: float = 0.0
    mismatches: int = 0
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)


def run_block(client, kind: str, threads: int, per_thread: int, tag: str) -> BlockResult:
    """Run ``per_thread`` queries in each of ``threads`` worker threads on ``client``.

    Each payload is unique (``tag``, thread, sequence number) and each reply is
    compared with it. Wall time runs from the first worker's start to the last
    worker's end.
    """
    result = BlockResult(kind, threads)
    barrier = threading.Barrier(threads)
    starts: list[float] = []
    ends: list[float] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        lat: list[float] = []
        mismatches = errors = 0
        examples: list[str] = []
        clock = time.perf_counter_ns
        barrier.wait()
        start = time.perf_counter()
        for seq in range(per_thread):
            payload = f'{tag}-{index}-{seq}'.encode()
            t0 = clock()
            try:
                reply = client.query(payload)
            except Exception as exc:  # counted, never hidden
                errors += 1
                if len(examples) < 3:
                    examples.append(f'{type(exc).__name__}: {exc}')
                continue
            lat.append((clock() - t0) / 1000)
            if reply != payload:
                mismatches += 1
        end = time.perf_counter()
        with lock:
            result.latencies_us.extend(lat)
            result.queries += per_thread
            result.mismatches += mismatches
            result.errors += errors
            result.error_examples.extend(examples)
            starts.append(start)
            ends.append(end)

    workers = [threading.Thread(target=worker, args=(i,), name=f'bench-{kind}-{i}')
               for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    result.wall_s = max(ends) - min(starts)
    return result


def summarize(blocks: list[BlockResult]) -> dict:
    """p50/p99 (µs), queries/s and correctness counts over ``blocks``."""
    lat = [x for b in blocks for x in b.latencies_us]
    queries = sum(b.queries for b in blocks)
    wall = sum(b.wall_s for b in blocks)
    return {
        'p50_us': percentile(lat, 50),
        'p99_us': percentile(lat, 99),
        'qps': queries / wall if wall else math.nan,
        'queries': queries,
        'mismatches': sum(b.mismatches for b in blocks),
        'errors': sum(b.errors for b in blocks),
        'error_examples': [e for b in blocks for e in b.error_examples][:3],
    }


def measure(port: int, *, kinds: tuple[str, ...] = KINDS, runs: int = 3, blocks: int = 5,
            queries: int = 2000, threads: int = 4, warmup: int = 200,
            progress=None) -> dict:
    """Measure ``kinds`` against the echo server on ``port``, interleaved.

    Each run has ``blocks`` rounds; in each round every kind (in a rotating
    order) does ``queries // blocks`` single-thread queries, then every kind
    does the same number spread over ``threads`` threads.

    Returns
    -------
    dict
        ``runs``: per run, per kind, per thread count, a summary;
        ``summary``: per kind and thread count, the median over runs of p50,
        p99 and queries/s, and the summed mismatches and errors;
        ``p50_ratio_runs`` and ``p50_ratio``: socs_tcp's single-thread p50 over
        socs.tcp's, per run and their median (absent if either is missing);
        ``mismatches``, ``errors``: totals over everything.
    """
    if runs < 1 or blocks < 1 or queries < blocks or threads < 1:
        raise ValueError('runs, blocks, threads must be >= 1 and queries >= blocks')
    progress = progress or (lambda text: None)
    # One client for single-thread calls, one shared by the worker threads
    # (locked where the layer needs it): separate connections to one server.
    single = {k: make_client(k, HOST, port, TIMEOUT) for k in kinds}
    shared = {k: make_client(k, HOST, port, TIMEOUT, shared_lock=True) for k in kinds}
    try:
        for k in kinds:
            for client in (single[k], shared[k]):
                if not wait_connected(client):
                    raise RuntimeError(f'{k} client could not reach the echo server on {port}')
                run_block(client, k, 1, warmup, f'warm-{k}')
        per_block = queries // blocks
        per_thread = max(1, per_block // threads)
        run_results = []
        for r in range(runs):
            collected: dict[str, dict[int, list[BlockResult]]] = {
                k: {1: [], threads: []} for k in kinds}
            for b in range(blocks):
                shift = (r * blocks + b) % len(kinds)
                order = kinds[shift:] + kinds[:shift]
                progress(f'latency run {r + 1}/{runs}, block {b + 1}/{blocks}')
                for k in order:
                    collected[k][1].append(run_block(single[k], k, 1, per_block,
                                                     f'{k}-r{r}-b{b}-t1'))
                for k in order:
                    collected[k][threads].append(run_block(shared[k], k, threads, per_thread,
                                                           f'{k}-r{r}-b{b}-t{threads}'))
            run_results.append({k: {str(n): summarize(v) for n, v in per_n.items()}
                                for k, per_n in collected.items()})
    finally:
        for client in (*single.values(), *shared.values()):
            client.close()

    return combine_runs(run_results, kinds, threads)


def combine_runs(run_results: list[dict], kinds: tuple[str, ...], threads: int) -> dict:
    """The medians over runs of each kind's figures, and socs_tcp's p50 over socs.tcp's.

    See `measure` for the dict returned.
    """
    summary: dict[str, dict[str, dict]] = {}
    for k in kinds:
        summary[k] = {}
        for n in ('1', str(threads)):
            per_run = [run[k][n] for run in run_results]
            summary[k][n] = {
                'p50_us': median([s['p50_us'] for s in per_run]),
                'p99_us': median([s['p99_us'] for s in per_run]),
                'qps': median([s['qps'] for s in per_run]),
                'queries': sum(s['queries'] for s in per_run),
                'mismatches': sum(s['mismatches'] for s in per_run),
                'errors': sum(s['errors'] for s in per_run),
                'error_examples': [e for s in per_run for e in s['error_examples']][:3],
            }
    out = {'runs': run_results, 'summary': summary, 'threads': threads,
           'locked_kinds': [k for k in kinds if k != 'socs_tcp'],
           'mismatches': sum(v['mismatches'] for s in summary.values() for v in s.values()),
           'errors': sum(v['errors'] for s in summary.values() for v in s.values())}
    if 'socs_tcp' in kinds and 'socs.tcp' in kinds:
        ratios = [run['socs_tcp']['1']['p50_us'] / run['socs.tcp']['1']['p50_us']
                  for run in run_results]
        out['p50_ratio_runs'] = ratios
        out['p50_ratio'] = median(ratios)
    return out


def measure_isolated(port: int, *, kinds: tuple[str, ...] = KINDS, queries: int = 250,
                     gap: float = 0.02, progress=None) -> dict:
    """p50 of isolated queries, ``gap`` seconds apart (an agent polling its device), interleaved.

    Each kind's client makes one query in turn, then everything sleeps
    ``gap``: every query finds its link idle, as most agents' queries do.

    Returns
    -------
    dict
        ``summary``: per kind, ``p50_us``, ``p99_us``, ``queries``,
        ``mismatches``, ``errors``; ``gap_s``.
    """
    progress = progress or (lambda text: None)
    clients = {k: make_client(k, HOST, port, TIMEOUT) for k in kinds}
    latencies: dict[str, list[float]] = {k: [] for k in kinds}
    mismatches = {k: 0 for k in kinds}
    errors = {k: 0 for k in kinds}
    try:
        for k, client in clients.items():
            if not wait_connected(client):
                raise RuntimeError(f'{k} client could not reach the echo server on {port}')
        clock = time.perf_counter_ns
        for i in range(queries):
            if i % 50 == 0:
                progress(f'isolated queries {i}/{queries}')
            shift = i % len(kinds)
            for k in kinds[shift:] + kinds[:shift]:
                payload = f'iso-{k}-{i}'.encode()
                time.sleep(gap)
                t0 = clock()
                try:
                    reply = clients[k].query(payload)
                except Exception:  # counted, never hidden
                    errors[k] += 1
                    continue
                latencies[k].append((clock() - t0) / 1000)
                mismatches[k] += reply != payload
    finally:
        for client in clients.values():
            client.close()
    return {'gap_s': gap, 'summary': {
        k: {'p50_us': percentile(latencies[k], 50), 'p99_us': percentile(latencies[k], 99),
            'queries': queries, 'mismatches': mismatches[k], 'errors': errors[k]}
        for k in kinds}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    positive = command_line(count, int)
    parser.add_argument('--runs', type=positive, default=3, help='interleaved runs (default 3)')
    parser.add_argument('--queries', type=positive, default=2000,
                        help='queries per client, run and thread count (default 2000)')
    parser.add_argument('--blocks', type=positive, default=5, help='interleaving blocks per run')
    parser.add_argument('--threads', type=positive, default=4, help='threads on one interface')
    parser.add_argument('--json', metavar='FILE', help='also write the figures as JSON')
    args = parser.parse_args(argv)
    kinds = available_kinds()
    progress = Progress()
    with start_echo_process() as echo:
        progress(f'echo server pid {echo.pid} on port {echo.port}')
        result = measure(echo.port, kinds=kinds, runs=args.runs, blocks=args.blocks,
                         queries=args.queries, threads=args.threads, progress=progress)
    progress.done()
    print(format_table(result))
    print(f'{args.runs} interleaved runs; figures are medians over runs. With '
          f'{args.threads} threads, {" and ".join(result["locked_kinds"])} lock around '
          f'send+recv; socs_tcp.query needs no lock.')
    missing = [k for k in KINDS if k not in kinds]
    if missing:
        print(f'not measured (import failed): {", ".join(missing)}')
    if args.json:
        with open(args.json, 'w') as fh:
            json.dump(result, fh, indent=2)
    if 'p50_ratio' in result:
        print('p50 ratio per run: ' + ', '.join(f'{r:.2f}' for r in result['p50_ratio_runs']))
        print(f'p50 ratio socs_tcp/socs: {result["p50_ratio"]:.2f}')
    return 1 if result['mismatches'] else 0


if __name__ == '__main__':
    sys.exit(main())
