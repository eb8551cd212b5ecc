"""End to end: SOCS's own agents (pip package ``socs``), launched by ``socs-tcp agent``,
on a real crossbar, against simulated devices that misbehave.

One set for the module (``run``), on the crossbar of the ``socs_tcp.testing``
plugin's session-wide ``ocs_stack``: the Cryomech CPA, Lakeshore 372 and
Pfeiffer TPG 366 simulators, and ``CryomechCPAAgent``, ``Lakeshore372Agent``
and ``PfeifferAgent`` launched exactly as a site would launch them, with
``socs-tcp agent`` in place of ``ocs-agent-cli``. The fault scenarios play on
all three agents at once (see ``socs_agents_harness``); the tests then check
what each agent did. The same scenarios on plain socs.tcp are in
``test_socs_agents_characterization.py``.
"""

from __future__ import annotations

import time

import pytest

from socs_agents_harness import AGENTS, Observation, SocsAgentsRun

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SCENARIOS = ('readings', 'drop', 'hangup', 'down')
#: Recovery on socs_tcp is one poll interval plus a reconnect; SOCS's agents
#: sleep 1 s after a failed poll, hence the bound.
RECOVERY_BOUND = 4.0


@pytest.fixture(scope='module')
def run(ocs_stack):
    started = time.monotonic()
    run = SocsAgentsRun(ocs_stack, 'socs_tcp')
    try:
        run.start()
        run.observations = run.play(SCENARIOS)
    finally:
        run.stop()
    run.wall_time = time.monotonic() - started
    print(f'\nSOCS agents on socs_tcp: {run.wall_time:.1f} s')
    for observations in run.observations.values():
        for obs in observations:
            print('  ' + obs.summary())
    survivors = [p for p in run.processes if p.tree_running()]
    assert not survivors, f'processes of the run survived it: {survivors}'
    return run


def observed(run: SocsAgentsRun, agent: str, scenario: str) -> Observation:
    obs = run.observations[agent][SCENARIOS.index(scenario)]
    assert obs.error is None, f'{agent}/{scenario}: {obs.error}'
    assert obs.process_alive, f'{agent} exited during {scenario}:\n{obs.log[-3000:]}'
    return obs


def assert_survived_without_garbage(obs: Observation) -> None:
    assert obs.acq_running, f'{obs.summary()}\nacq messages: {obs.acq_messages}\n{obs.log[-3000:]}'
    assert obs.invalid == [], f'published invalid readings: {obs.invalid[:3]}'
    assert not obs.acq_restarted, 'acq had ended in an earlier scenario'


agents = pytest.mark.parametrize('agent', list(AGENTS))


@agents
def test_agent_says_once_in_its_ocs_log_that_it_runs_on_socs_tcp(run, agent):
    observed(run, agent, 'readings')
    iid = run.agents[agent].instance_id
    ocs_log = (run.stack.log_dir / f'observatory.{iid}.log').read_text()
    assert ocs_log.count('TCP base: socs_tcp') == 1, ocs_log[-2000:]
    assert 'socs.tcp.TCPInterface is socs_tcp.TCPInterface' in ocs_log


@agents
def test_acq_publishes_valid_readings(run, agent):
    obs = observed(run, agent, 'readings')
    assert_survived_without_garbage(obs)
    assert obs.valid >= 3 and not obs.degraded_seen, obs.summary()


@agents
def test_agent_rides_out_a_connection_reset_by_the_device(run, agent):
    obs = observed(run, agent, 'drop')
    assert_survived_without_garbage(obs)
    assert obs.recovered_after is not None and obs.recovered_after < RECOVERY_BOUND, obs.summary()
    assert obs.acq_degraded is False


@agents
def test_agent_rides_out_the_device_closing_the_connection(run, agent):
    obs = observed(run, agent, 'hangup')
    assert_survived_without_garbage(obs)
    assert obs.recovered_after is not None and obs.recovered_after < RECOVERY_BOUND, obs.summary()
    assert obs.acq_degraded is False


@agents
def test_device_down_is_reported_the_agents_own_way_then_readings_resume(run, agent):
    obs = observed(run, agent, 'down')
    assert_survived_without_garbage(obs)
    assert obs.degraded_seen and obs.reported_after is not None and obs.reported_after < 5, \
        obs.summary()
    assert AGENTS[agent].failure_log in obs.log, obs.log[-3000:]
    assert obs.recovered_after is not None and obs.recovered_after < RECOVERY_BOUND, obs.summary()
    assert obs.acq_degraded is False
    assert 'Connection re-established' in obs.log


@agents
def test_no_invalid_reading_is_published_over_the_whole_run(run, agent):
    observed(run, agent, 'readings')
    assert run.invalid_readings(run.agents[agent]) == []
    assert len(run.readings(run.agents[agent])) > 10


@agents
def test_agent_shuts_down_cleanly_on_sigint(run, agent):
    observed(run, agent, 'down')
    record = run.stop_record(run.agents[agent])
    assert record.ended_by == 'SIGINT' and record.returncode == 0, record
    log = run.agents[agent].process.read_log()
    # Only the known, harmless one at startup (bjdata built against another NumPy).
    assert log.count('Traceback') == log.count('_ARRAY_API not found'), log[-5000:]
