"""SOCS's agents behind bridges under faults: plain socs and ``SOCS_TCP=1``, side by side.

Opt-in (a few minutes): ``SOCS_TCP_CHARACTERIZE=1 pytest
tests/test_socs_bridge_agents_characterization.py -s``. The scenarios of
``test_socs_bridge_agents_e2e.py`` are played on each agent twice, with
plain socs and with ``SOCS_TCP=1``, each on a freshly started agent (so a
fault that ended acq does not hide what the next one does), and one table row is printed per agent,
fault and side. ``SOCS_TCP_CHARACTERIZE_OUT=DIR`` also writes
``DIR/socs_bridge_agents.md`` (the table of
``bench/results/socs_bridge_agents_characterization.md``). Plain socs's
behaviour is what it is and only recorded; the socs_tcp side is asserted by
the e2e tier.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from socs_bridge_agents_harness import AGENTS, SCENARIOS, run_agent_scenarios

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.skipif(not os.environ.get('SOCS_TCP_CHARACTERIZE'),
                       reason='opt-in, a few minutes: set SOCS_TCP_CHARACTERIZE=1'),
]

FAULTS = {'hangup': 'peer close (FIN)', 'down': 'outage (device gone, back after 3 s)',
          'late': 'late reply (held by the bridge)'}


def test_characterize_plain_socs_and_socs_tcp(ocs_stack):
    rows = ['| agent (transport) | fault | plain socs | SOCS_TCP=1 |', '|---|---|---|---|']
    results = {}
    for key, kind in AGENTS.items():
        for mode in ('socs', 'socs_tcp'):
            try:
                outcomes, _log = run_agent_scenarios(ocs_stack, key, mode, fresh_each=True)
                results[key, mode] = {o.scenario: o.verdict() for o in outcomes}
            except Exception as exc:      # noqa: BLE001 - e.g. the agent dies at start
                results[key, mode] = {s: f'not started: {str(exc).splitlines()[0][:120]}'
                                      for s in SCENARIOS}
        for scenario in SCENARIOS:
            rows.append(f'| {kind.agent_class} ({kind.transport}) | {FAULTS[scenario]} | '
                        f'{results[key, "socs"][scenario]} | {results[key, "socs_tcp"][scenario]} |')
    table = '\n'.join(rows)
    print('\n' + table)
    out = os.environ.get('SOCS_TCP_CHARACTERIZE_OUT')
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / 'socs_bridge_agents.md').write_text(table + '\n')
    assert len(rows) == 2 + len(AGENTS) * len(SCENARIOS)
