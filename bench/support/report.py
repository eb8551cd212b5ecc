"""What a person reads of a benchmark run: a progress line, then the text tables.

`format_report` lays out compare.py's figures, one section per measurement
and the targets last; `format_table` is the latency table alone
(``query_latency.py``); `Progress` is the line on stderr while it runs.
"""

from __future__ import annotations

import sys
import time

SCENARIOS = ('refused', 'silent', 'blackhole')


class Progress:
    """A single progress line on stderr, rewritten in place."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.t0 = time.monotonic()
        # Rewrite in place on a terminal; one line per step in a log file.
        self.in_place = stream.isatty()

    def __call__(self, text: str) -> None:
        line = f'[{time.monotonic() - self.t0:5.1f} s] {text}'
        if self.in_place:
            self.stream.write(f'\r{line:<78}')
        else:
            self.stream.write(line + '\n')
        self.stream.flush()

    def done(self) -> None:
        if self.in_place:
            self.stream.write('\r' + ' ' * 78 + '\r')
            self.stream.flush()


def _ms(seconds) -> str:
    return '-' if seconds is None else f'{seconds * 1000:.1f}'


def _header(labels: list[str], first: str = '', width: int = 10) -> str:
    return f'{first:<{width}} ' + ' '.join(f'{lb:>17}' for lb in labels)


def format_table(result: dict) -> str:
    """The latency/throughput figures as an aligned text table."""
    threads = result['threads']
    lines = [f'{"client":<10} {"threads":>7} {"p50 µs":>9} {"p99 µs":>9} {"queries/s":>10} '
             f'{"checked":>8} {"mismatch":>8} {"errors":>6}']
    for kind, per_n in result['summary'].items():
        for n in ('1', str(threads)):
            s = per_n[n]
            lock = ' (lock)' if n != '1' and kind in result['locked_kinds'] else ''
            lines.append(f'{kind:<10} {n:>7} {s["p50_us"]:>9.1f} {s["p99_us"]:>9.1f} '
                         f'{s["qps"]:>10.0f} {s["queries"]:>8d} {s["mismatches"]:>8d} '
                         f'{s["errors"]:>6d}{lock}')
    return '\n'.join(lines)


def latency_section(lat: dict, runs: int) -> list[str]:
    out = ['', f'== Query latency: echo server in another process, {runs} '
               f'interleaved runs (medians), every reply checked ==',
           format_table(lat)]
    if 'p50_ratio_runs' in lat:
        out.append('p50 ratio socs_tcp/socs.tcp per run: '
                   + ', '.join(f'{r:.2f}' for r in lat['p50_ratio_runs']))
    return out


def _odd(c: dict) -> bool:
    """A call in a fault scenario that did not fail: worth a footnote."""
    return bool(c['successes'] or c['mismatches'] or c['other_errors'])


def faults_section(faults: dict) -> list[str]:
    labels = list(faults['refused']['clients'])
    out = ['', f'== Time to fail: timeout {faults["timeout_s"]:g} s, {faults["calls"]} '
               f'calls back to back; worst / median per call, ms ==',
           _header(labels, 'scenario')]
    for scenario in SCENARIOS:
        cells = []
        for lb in labels:
            c = faults[scenario]['clients'][lb]
            text = f'{_ms(c["worst_s"])} / {_ms(c["median_s"])}' + ('*' if _odd(c) else '')
            cells.append(f'{text:>17}')
        out.append(f'{scenario:<10} ' + ' '.join(cells))
    for scenario in SCENARIOS:
        out.append(f'  {scenario}: {faults[scenario]["description"]}')
    for s in SCENARIOS:
        for lb, c in faults[s]['clients'].items():
            if _odd(c):
                out.append(f'  * {s}/{lb}: {c["successes"]} replies, {c["mismatches"]} wrong, '
                           f'other errors {c["other_errors"][:2]}')
    return out


def stale_section(stale: dict) -> list[str]:
    labels = list(stale['clients'])
    return ['', f'== Late reply: one reply comes 1.5 x timeout late, then {stale["calls"]} '
                f'more queries; wrong replies among them ==',
            _header(labels),
            f'{"wrong":<10} ' + ' '.join(
                f'{stale["clients"][lb]["wrong_replies"]:>17d}' for lb in labels),
            f'{"good":<10} ' + ' '.join(
                f'{stale["clients"][lb]["good_replies"]:>17d}' for lb in labels)]


def recovery_section(rec: dict, reps: int) -> list[str]:
    periods = list(rec)
    labels = list(rec[periods[0]])
    out = ['', f'== Recovery: device back -> first good reply, worst of {reps}; '
               f'ms after the next retry / after the device was back ==',
           _header(labels, 'retry every', 12)]
    for p in periods:
        cells = []
        for lb in labels:
            r = rec[p][lb]
            text = (f'{_ms(r["worst_retry_to_good_s"])} / {_ms(r["worst_back_to_good_s"])}'
                    + ('!' if r['gave_up'] else ''))
            cells.append(f'{text:>17}')
        out.append(f'{p:<12} ' + ' '.join(cells))
    return out


def scale_section(scale: dict) -> list[str]:
    kinds = list(scale)
    count = scale[kinds[0]]['count']
    out = ['', f'== Scale: {count} interfaces to one simulated server, one process '
               f'(fresh process per library) ==',
           f'{"":<28} ' + ' '.join(f'{k:>10}' for k in kinds)]
    rows = [('RSS per interface, KB', 'rss_per_iface_kb', '{:.1f}'),
            ('threads added', 'threads_added', '{:d}'),
            ('fds per interface', 'fds_per_iface', '{:.2f}'),
            ('CPU idle, % of a core', 'cpu_idle_pct', '{:.2f}'),
            (f'CPU all down, first {scale[kinds[0]]["window_s"]:g} s, %',
             'cpu_down_first_pct', '{:.2f}'),
            ('CPU all down, steady, %', 'cpu_down_steady_pct', '{:.2f}'),
            ('  CPU per failed reconnect, µs', 'cpu_per_failed_connect_us', '{:.0f}'),
            ('  reconnect backoff cap, s', 'backoff_max_delay_s', '{:g}'),
            ('replies checked ok', 'replies_ok', '{:d}'),
            ('wrong replies + errors', None, '{:d}')]
    for title, key, fmt in rows:
        cells = []
        for k in kinds:
            if key is None:
                value = scale[k]['mismatches'] + scale[k]['errors']
            else:
                value = scale[k].get(key)
            cells.append(f'{"-" if value is None else fmt.format(value):>10}')
        out.append(f'{title:<28} ' + ' '.join(cells))
    return out


def targets_section(targets: list[dict]) -> list[str]:
    out = ['', '== Targets, socs_tcp ==']
    for t in targets:
        out.append(f'{t["name"]:<58} {t["shown"]:>24}  {t["target"]:<32} '
                   f'{"PASS" if t["ok"] else "FAIL"}')
    return out


def format_report(results: dict) -> str:
    """All figures as text tables, ending with the targets."""
    m = results['machine']
    out = [f'socs_tcp vs socs.tcp vs raw socket: {results["date"]}, {m["cpus"]}-core '
           f'{m["kind"]} ({m["cpu_model"]}), Python {m["python"]}, Twisted {m["twisted"]}, '
           f'socs {m["socs"]}, loopback, devices in another process']
    if results.get('latency'):
        out += latency_section(results['latency'], results['config']['runs'])
    if results.get('faults'):
        out += faults_section(results['faults'])
    if results.get('stale'):
        out += stale_section(results['stale'])
    if results.get('recovery'):
        out += recovery_section(results['recovery'], results['config']['reps'])
    if results.get('scale'):
        out += scale_section(results['scale'])
    c = results['correctness']
    out += ['', f'Correctness (socs_tcp, all phases): {c["socs_tcp_mismatches"]} wrong replies, '
                f'{c["socs_tcp_other_errors"]} unexpected exceptions']
    if results['targets']:
        out += targets_section(results['targets'])
    return '\n'.join(out)
