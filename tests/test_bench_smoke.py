"""bench/compare.py runs end to end and writes every figure it promises.

A tiny ``--quick`` configuration (a few seconds): its timings mean nothing,
but the harness, the JSON layout, the plot and the correctness counts do.
About 10 s on 2 cores, a tool for maintainers: the slow tier (``make test-slow``).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / 'bench'


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench')
    json_path, png_path = out / 'figures.json', out / 'figures.png'
    done = subprocess.run(
        [sys.executable, str(BENCH / 'compare.py'), '--quick', '--json', str(json_path),
         '--plot', str(png_path)],
        capture_output=True, text=True, timeout=90)
    # Exit 1 means "a target missed", which quick figures may well do; 2+ is a crash.
    assert done.returncode in (0, 1), done.stderr[-3000:]
    return done, json.loads(json_path.read_text()), png_path


@pytest.mark.timeout(120)
def test_json_has_every_section(quick_run):
    _, figures, _ = quick_run
    kinds = ('raw', 'socs.tcp', 'socs_tcp')
    assert set(figures['latency']['summary']) == set(kinds)
    for kind in kinds:
        for threads in ('1', '4'):
            s = figures['latency']['summary'][kind][threads]
            assert s['p50_us'] > 0 and s['p99_us'] >= s['p50_us'] and s['qps'] > 0
            assert s['queries'] > 0
    assert figures['latency']['p50_ratio'] > 0
    for scenario in ('refused', 'silent', 'blackhole'):
        clients = figures['faults'][scenario]['clients']
        assert set(clients) == {'raw', 'socs.tcp', 'socs.tcp reset', 'socs_tcp'}
        for c in clients.values():
            assert c['worst_s'] >= c['median_s'] > 0
            assert c['failures'] == c['calls']   # every call in a fault fails
    stale = figures['stale']['clients']
    assert stale['socs_tcp']['first_timed_out'] and stale['socs_tcp']['wrong_replies'] == 0
    assert len(figures['recovery']) == 2
    for per_label in figures['recovery'].values():
        rec = per_label['socs_tcp']
        assert rec['gave_up'] == 0 and rec['worst_retry_to_good_s'] is not None
    for kind in ('socs.tcp', 'socs_tcp'):
        scale = figures['scale'][kind]
        for key in ('rss_per_iface_kb', 'threads_added', 'fds_per_iface', 'cpu_idle_pct',
                    'cpu_down_first_pct', 'replies_ok'):
            assert key in scale
        assert scale['replies_ok'] == scale['count']
    names = [t['name'] for t in figures['targets']]
    assert any('p50' in n for n in names) and any('RSS' in n for n in names)
    assert all(set(t) >= {'value', 'target', 'ok'} for t in figures['targets'])


@pytest.mark.timeout(120)
def test_replies_all_correct(quick_run):
    _, figures, _ = quick_run
    assert figures['latency']['mismatches'] == 0
    assert figures['correctness'] == {'socs_tcp_mismatches': 0, 'socs_tcp_other_errors': 0}


@pytest.mark.timeout(120)
def test_table_and_plot(quick_run):
    done, _, png_path = quick_run
    assert done.stdout.splitlines()[-1].startswith('p50 ratio socs_tcp/socs: ')
    assert '== Targets, socs_tcp ==' in done.stdout
    assert png_path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert png_path.stat().st_size > 20_000


@pytest.mark.timeout(60)
def test_query_path_counts_the_three_phases_of_each_client():
    done = subprocess.run([sys.executable, str(BENCH / 'query_path.py')],
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split()[0]: [int(n) for n in line.split()[1:]]
            for line in done.stdout.splitlines() if line.split()[:1] in (['raw'], ['socs.tcp'], ['socs_tcp'])}
    assert set(rows) == {'raw', 'socs.tcp', 'socs_tcp'}
    for kind, (before, _during, after) in rows.items():
        assert before > 0 and after > 0, (kind, rows)
    assert 'socs_tcp, before the request: ' in done.stdout   # and the functions it ran are named


def _can_trace() -> bool:
    import shutil
    if shutil.which('perf') is None:
        return False
    probe = subprocess.run(['perf', 'trace', '-o', '/dev/null', 'true'], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.timeout(120)
def test_query_phases_times_each_clients_phases_with_perf_trace():
    if not _can_trace():
        pytest.skip('perf trace is not available here (perf missing, or no rights to trace)')
    done = subprocess.run([sys.executable, str(BENCH / 'query_phases.py'), '--queries', '5'],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split()[0]: [float(n) for n in line.split()[1:]]
            for line in done.stdout.splitlines() if line.split()[:1] in (['raw'], ['socs.tcp'], ['socs_tcp'])}
    assert set(rows) == {'raw', 'socs.tcp', 'socs_tcp'}, done.stdout
    for kind, (to_request, after_first, device, after_reply) in rows.items():
        assert 0 < to_request and 0 <= after_first <= to_request and device > 0 and after_reply > 0, (kind, rows)


def test_query_phases_refuses_a_bad_count():
    done = subprocess.run([sys.executable, str(BENCH / 'query_phases.py'), '--queries', '0'],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and '--queries must be at least 1, got 0' in done.stderr
