#!/usr/bin/env python
"""socs_tcp side by side with socs.tcp and a raw socket: cost and behaviour under faults.

One run measures, on this machine, against simulated devices in other processes:

1. query latency p50/p99 and queries/s with 1 and 4 worker threads on one
   interface (``query_latency.py``, interleaved, every reply checked);
2. time to fail when the device is refused / silent / blackholed, worst case
   per call; and whether a reply that comes after its timeout answers a later
   query (wrong replies counted);
3. recovery: device back -> first good reply, for callers that retry every
   1 s (socs.tcp's documented agent loop) and every 50 ms;
4. scale: 1000 interfaces to one server in one process (RSS, threads, fds,
   CPU idle and with every device down), in a fresh process per library;
5. correctness counts throughout, and every figure next to its target;
6. socs_tcp relative to socs.tcp and a raw socket: p50 and single-thread
   throughput back to back, p50 of isolated queries (20 ms apart, an agent
   polling), 4-thread throughput on one interface; and, where valgrind is
   installed, instructions per query in both patterns (``query_instructions.py``,
   load-independent: whole client process under callgrind).

Usage::

    python bench/compare.py [--json FILE] [--plot FILE] [--quick]

Defaults finish in under 2 minutes on a 2-core machine; ``--quick`` is a
few-seconds smoke run (small counts, short timeouts: figures not meaningful).
Exit status 1 when a target is missed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

from fault_timing import client_labels, measure_faults, measure_recovery, measure_stale
from query_instructions import format_results as format_instructions
from query_instructions import measure as measure_instructions
from query_instructions import valgrind_available
from query_latency import measure as measure_latency
from query_latency import measure_isolated
from socs_tcp._arguments import command_line, count
from support.clients import KINDS, available_kinds
from support.devices import BENCH_DIR, start_echo_devices, start_echo_process
from support.report import Progress, format_report
from support.targets import check_targets

SECTIONS = ('latency', 'isolated', 'instructions', 'faults', 'recovery', 'scale')

DEFAULTS = dict(runs=3, queries=2000, blocks=5, threads=4, timeout=1.0, calls=4,
                periods=(1.0, 0.05), reps=3, count=1000, window=3.0, steady=True,
                isolated=250, instructions=400)
QUICK = dict(runs=1, queries=200, blocks=2, threads=4, timeout=0.3, calls=2,
             periods=(0.25, 0.05), reps=1, count=20, window=0.3, steady=False,
             isolated=20, instructions=0)  # callgrind takes minutes: not in a smoke run


def machine_info() -> dict:
    """CPU count, model, whether it is a VM, and library versions."""
    info = {'cpus': os.cpu_count(), 'python': platform.python_version(),
            'kernel': platform.release(), 'kind': 'machine', 'cpu_model': platform.processor()}
    try:
        with open('/proc/cpuinfo') as fh:
            cpuinfo = fh.read()
        for line in cpuinfo.splitlines():
            if line.startswith('model name'):
                info['cpu_model'] = line.split(':', 1)[1].strip()
                break
        if ' hypervisor' in cpuinfo:
            info['kind'] = 'VM'
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version
    for package in ('twisted', 'socs', 'socs_tcp'):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = None
    return info


def start_scale(kind: str, count: int, window: float, steady: bool) -> subprocess.Popen:
    """Start ``scale_usage.py`` for ``kind`` in a fresh process (see ``scale_result``)."""
    argv = [sys.executable, str(BENCH_DIR / 'scale_usage.py'), '--kind', kind,
            '--count', str(count), '--window', str(window)]
    if steady:
        argv.append('--steady')
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def scale_result(kind: str, proc: subprocess.Popen) -> dict:
    """Wait for a ``start_scale`` process; return its figures."""
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f'scale run for {kind} took over 300 s') from None
    if proc.returncode != 0:
        raise RuntimeError(f'scale run for {kind} failed:\n{err[-3000:]}')
    return json.loads(out.strip().splitlines()[-1])


def correctness(results: dict) -> dict:
    """socs_tcp's wrong replies and unexpected exceptions, summed over all phases."""
    mismatches = other = 0
    lat = results.get('latency')
    if lat and 'socs_tcp' in lat['summary']:
        for s in lat['summary']['socs_tcp'].values():
            mismatches += s['mismatches']
            other += s['errors']     # no fault during the latency runs: any error is unexpected
    iso = results.get('isolated')
    if iso and 'socs_tcp' in iso['summary']:
        mismatches += iso['summary']['socs_tcp']['mismatches']
        other += iso['summary']['socs_tcp']['errors']
    faults = results.get('faults')
    if faults:
        for scenario in ('refused', 'silent', 'blackhole'):
            c = faults[scenario]['clients'].get('socs_tcp')
            if c:
                mismatches += c['mismatches']
                other += len(c['other_errors'])
    stale = results.get('stale', {}).get('clients', {}).get('socs_tcp')
    if stale:
        mismatches += stale['wrong_replies']
        other += len(stale['other_errors'])
    for per_label in results.get('recovery', {}).values():
        c = per_label.get('socs_tcp')
        if c:
            mismatches += c['mismatches']
            other += len(c['other_errors']) + c['early_success']
    scale = results.get('scale', {}).get('socs_tcp')
    if scale:
        mismatches += scale['mismatches']
        other += scale['errors']
    return {'socs_tcp_mismatches': mismatches, 'socs_tcp_other_errors': other}


def run(config: dict, sections: tuple[str, ...], progress) -> dict:
    """Measure every section in ``sections`` with ``config``; return all figures."""
    kinds = available_kinds()
    results: dict = {'date': datetime.datetime.now(datetime.timezone.utc)
                     .strftime('%Y-%m-%d %H:%M UTC'),
                     'machine': machine_info(), 'kinds': list(kinds),
                     'config': {k: list(v) if isinstance(v, tuple) else v
                                for k, v in config.items()}}
    if 'latency' in sections:
        with start_echo_process() as echo:
            results['latency'] = measure_latency(
                echo.port, kinds=kinds, runs=config['runs'], blocks=config['blocks'],
                queries=config['queries'], threads=config['threads'], progress=progress)
    if 'isolated' in sections:
        with start_echo_process() as echo:
            results['isolated'] = measure_isolated(echo.port, kinds=kinds, queries=config['isolated'],
                                                   progress=progress)
    if 'instructions' in sections and config['instructions'] and valgrind_available():
        progress('instructions per query under callgrind (a few minutes)')
        results['instructions'] = measure_instructions(kinds, config['instructions'])
    labels = client_labels(kinds)
    # socs_tcp's scale run spends most of its time waiting for the reconnect
    # backoff of 1000 dead devices to reach its cap: it runs beside the other
    # sections. Its figures are its own process's CPU, which they do not
    # change; their timings are per call, in milliseconds, which it barely does.
    background = None
    if 'scale' in sections and 'socs_tcp' in kinds:
        progress(f'scale: {config["count"]} socs_tcp interfaces (in the background)')
        background = start_scale('socs_tcp', config['count'], config['window'], config['steady'])
    if 'faults' in sections or 'recovery' in sections:
        with start_echo_devices(len(labels)) as devices:
            if 'faults' in sections:
                results['faults'] = measure_faults(devices, labels, timeout=config['timeout'],
                                                   calls=config['calls'], progress=progress)
                results['stale'] = measure_stale(devices, labels, timeout=config['timeout'],
                                                 progress=progress)
            if 'recovery' in sections:
                results['recovery'] = measure_recovery(
                    devices, labels, periods=tuple(config['periods']), reps=config['reps'],
                    timeout=config['timeout'], progress=progress)
    if 'scale' in sections:
        results['scale'] = {}
        if 'socs.tcp' in kinds:
            progress(f'scale: {config["count"]} socs.tcp interfaces')
            results['scale']['socs.tcp'] = scale_result(
                'socs.tcp', start_scale('socs.tcp', config['count'], config['window'], False))
        if background is not None:
            progress('scale: waiting for the socs_tcp scale run (backoff reaching its cap)')
            results['scale']['socs_tcp'] = scale_result('socs_tcp', background)
    results['correctness'] = correctness(results)
    results['targets'] = [c.as_dict() for c in check_targets(results)]
    return results


def relative_figures(results: dict) -> str:
    """socs_tcp's figures over socs.tcp's and the raw socket's, as text lines."""
    lines = ['', '== socs_tcp relative to socs.tcp and a raw socket (x: socs_tcp / other)']

    def ratio(ours: float, theirs: float | None) -> str:
        return f'{ours / theirs:.2f}x' if theirs else 'n/a'

    lat = results.get('latency')
    if lat and 'socs_tcp' in lat['summary']:
        summary, n = lat['summary'], str(lat['threads'])
        ours = summary['socs_tcp']
        for label, key, threads in (('back to back, p50', 'p50_us', '1'),
                                    ('single-thread throughput', 'qps', '1'),
                                    (f'{n}-thread throughput, one interface', 'qps', n)):
            cells = [f'{other} {ratio(ours[threads][key], summary[other][threads][key])}'
                     for other in ('socs.tcp', 'raw') if other in summary]
            locked = ' (theirs with a lock)' if threads != '1' else ''
            lines.append(f'  {label:<38} ' + ', '.join(cells) + locked)
    iso = results.get('isolated')
    if iso and 'socs_tcp' in iso['summary']:
        summary = iso['summary']
        cells = [f'{other} {ratio(summary["socs_tcp"]["p50_us"], summary[other]["p50_us"])}'
                 for other in ('socs.tcp', 'raw') if other in summary]
        lines.append(f'  {"isolated (" + str(int(iso["gap_s"] * 1000)) + " ms apart), p50":<38} '
                     + ', '.join(cells)
                     + f'  (socs_tcp {summary["socs_tcp"]["p50_us"]:.0f} µs)')
    if results.get('instructions'):
        lines.append('  ' + format_instructions(results['instructions']).replace('\n', '\n  '))
    elif 'instructions' in results.get('config', {}) and not valgrind_available():
        lines.append('  instructions per query: valgrind not installed')
    scale = results.get('scale', {}).get('socs_tcp')
    if scale and 'fds_per_iface' in scale:
        lines.append(f'  per interface: {scale["fds_per_iface"]:.2f} descriptors, '
                     f'{scale["rss_per_iface_kb"]:.1f} KB RSS (scale section)')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--json', metavar='FILE', help='write every figure as JSON')
    parser.add_argument('--plot', metavar='FILE', help='write a PNG of the figures')
    parser.add_argument('--quick', action='store_true',
                        help='a few-seconds smoke run (tiny counts; figures not meaningful)')
    parser.add_argument('--sections', default=','.join(SECTIONS),
                        help=f'comma-separated subset of {",".join(SECTIONS)}')
    parser.add_argument('--count', type=command_line(count, int),
                        help='interfaces in the scale section (at least 2)')
    args = parser.parse_args(argv)
    sections = tuple(s for s in args.sections.split(',') if s)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f'--sections: unknown {sorted(unknown)}; choose from {SECTIONS}')
    config = dict(QUICK if args.quick else DEFAULTS)
    if args.count is not None:
        if args.count < 2:
            parser.error('--count must be >= 2')
        config['count'] = args.count
    progress = Progress()
    t0 = time.monotonic()
    results = run(config, sections, progress)
    results['elapsed_s'] = time.monotonic() - t0
    progress.done()
    print(format_report(results))
    missing = [k for k in KINDS if k not in results['kinds']]
    if missing:
        print(f'not measured (import failed): {", ".join(missing)}')
    print(f'(took {results["elapsed_s"]:.0f} s)')
    print(relative_figures(results))
    lat = results.get('latency')
    if lat and 'p50_ratio' in lat:
        print(f'p50 ratio socs_tcp/socs: {lat["p50_ratio"]:.2f}')
    if args.json:
        with open(args.json, 'w') as fh:
            json.dump(results, fh, indent=2)
    if args.plot:
        from support.figure import write_plot
        write_plot(results, args.plot)
    return 0 if all(t['ok'] for t in results['targets']) else 1


if __name__ == '__main__':
    sys.exit(main())
