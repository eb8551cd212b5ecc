"""The same SOCS agents and faults on socs_tcp and on plain socs.tcp, side by side.

Opt-in (about 80 s): ``SOCS_TCP_CHARACTERIZE=1 pytest
tests/test_socs_agents_characterization.py -s``. It runs the end-to-end
scenarios of ``test_socs_agents_e2e.py`` plus a silent device, first with the
agents launched by ``socs-tcp agent``, then by plain ``ocs-agent-cli``, and
prints one table row per agent and fault: what the acq session did, what was
published, how long recovery took, and what the agent logged. With
``SOCS_TCP_CHARACTERIZE_OUT=DIR`` it also writes ``DIR/socs_agents.md`` and
``DIR/socs_agents.json`` (the README's comparison rows come from there).

The assertions pin the socs_tcp side only: socs.tcp's behaviour is what it
is, and recorded.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from socs_agents_harness import AGENTS, Observation, SocsAgentsRun

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not os.environ.get('SOCS_TCP_CHARACTERIZE'),
                       reason='opt-in, ~80 s: set SOCS_TCP_CHARACTERIZE=1'),
]

SCENARIOS = ('readings', 'drop', 'hangup', 'down', 'silent')
LAUNCHERS = ('socs_tcp', 'socs.tcp')

# Log lines that say nothing about the fault (OCS session bookkeeping, crossbar noise).
_NOISE = re.compile(r'Status is now|heartbeat|NumPy|numpy|_ARRAY_API|^\s*$|start called|'
                    r'Stopping session|transport|session joined|Received SIGINT')
_STAMP = re.compile(r'^\d{4}-\d\d-\d\dT\S+ ')


def digest(log: str, limit: int = 4) -> list[str]:
    """The distinct things an agent said during a scenario, in order, shortened."""
    seen: list[str] = []
    for line in log.splitlines():
        text = _STAMP.sub('', line).strip()
        text = re.sub(r'\b\d+(\.\d+)*\b', '#', text)[:110]
        if not _NOISE.search(text) and text not in seen:
            seen.append(text)
    return seen[:limit]


def row(launcher: str, obs: Observation) -> dict:
    crash = next((m for m in obs.acq_messages if m.startswith('CRASH')), None)
    if obs.error:
        acq = 'not started: ' + obs.error.strip().splitlines()[-1].split('+0000 ')[-1][:90]
    elif crash:
        acq = 'crashed: ' + crash.split('Traceback: ')[-1].splitlines()[0][:80]
    else:
        acq = obs.acq_status
    return {
        'launcher': launcher, 'agent': obs.agent, 'scenario': obs.scenario, 'acq': acq,
        'acq_restarted': obs.acq_restarted,
        'degraded_seen': obs.degraded_seen, 'reported_after': obs.reported_after,
        'recovered_after': obs.recovered_after, 'valid': obs.valid,
        'invalid': [why for _, why in obs.invalid][:3], 'log': digest(obs.log),
    }


def markdown(rows: list[dict]) -> str:
    def secs(v):
        return '-' if v is None else f'{v:.1f} s'

    lines = ['| agent | fault | launcher | acq | degraded | reported | recovered | '
             'invalid published | agent logged |', '|' + '---|' * 9]
    order = (*SCENARIOS, 'shutdown')
    for r in sorted(rows, key=lambda r: (r['agent'], order.index(r['scenario']),
                                         LAUNCHERS.index(r['launcher']))):
        acq = r['acq'] + (' (acq restarted before)' if r['acq_restarted'] else '')
        lines.append(f"| {r['agent']} | {r['scenario']} | {r['launcher']} | {acq} | "
                     f"{'yes' if r['degraded_seen'] else 'no'} | {secs(r['reported_after'])} | "
                     f"{secs(r['recovered_after'])} | {len(r['invalid'])} | "
                     f"{'; '.join(r['log']).replace('|', '/')} |")
    return '\n'.join(lines) + '\n'


@pytest.fixture(scope='module')
def characterized(ocs_stack):
    results, shutdowns = {}, {}
    for launcher in LAUNCHERS:
        started = time.monotonic()
        run = SocsAgentsRun(ocs_stack, launcher)
        try:
            run.start()
            results[launcher] = run.play(SCENARIOS)
        finally:
            run.stop()
        shutdowns[launcher] = {key: run.stop_record(agent) for key, agent in run.agents.items()}
        print(f'\n{launcher}: {time.monotonic() - started:.0f} s, logs in {run.stack.log_dir}')
    rows = [row(launcher, obs) for launcher, by_agent in results.items()
            for observations in by_agent.values() for obs in observations]
    rows += [{'launcher': launcher, 'agent': key, 'scenario': 'shutdown',
              'acq': f'{record.ended_by}, exit status {record.returncode}, {record.seconds:.1f} s',
              'acq_restarted': False, 'degraded_seen': False, 'reported_after': None,
              'recovered_after': None, 'valid': 0, 'invalid': [], 'log': []}
             for launcher, records in shutdowns.items() for key, record in records.items()]
    table = markdown(rows)
    print('\n' + table)
    out = os.environ.get('SOCS_TCP_CHARACTERIZE_OUT')
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / 'socs_agents.md').write_text(table)
        (Path(out) / 'socs_agents.json').write_text(json.dumps(rows, indent=1))
    return results, shutdowns


@pytest.mark.parametrize('agent', list(AGENTS))
def test_on_socs_tcp_every_fault_is_ridden_out_without_garbage(characterized, agent):
    results, shutdowns = characterized
    for obs in results['socs_tcp'][agent]:
        assert obs.error is None and obs.process_alive, obs.summary()
        assert obs.acq_running and obs.invalid == [], obs.summary()
        assert obs.scenario == 'readings' or obs.recovered_after is not None, obs.summary()
        assert not obs.acq_restarted, obs.summary()
    record = shutdowns['socs_tcp'][agent]
    assert record.ended_by == 'SIGINT' and record.returncode == 0, record


@pytest.mark.parametrize('agent', list(AGENTS))
def test_socs_tcp_run_was_observed_too(characterized, agent):
    # The comparison needs both sides: every agent ran on plain socs.tcp.
    results, _ = characterized
    for obs in results['socs.tcp'][agent]:
        assert obs.error is None, obs.summary()
