"""End to end: a real crossbar, both agents launched by ``ocs-agent-cli``,
driven by ``OCSClient`` the way an operator drives them.

The tests share one set of simulators and agents (``e2e``, module scope) on
the crossbar of the ``socs_tcp.testing`` plugin's session-wide ``ocs_stack``.

In the slow tier (``make test-slow``): the default run keeps the same path
(crossbar, both agents launched by ``ocs-agent-cli``, readings, an outage and
a task through ``OCSClient``) in ``socs-tcp demo``'s end-to-end test
(``tests/test_demo.py``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import ocs
import pytest

from socs_tcp.testing import OcsStack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(120)]

SAMPLE_INTERVAL = 0.5   # agents' --sample-interval: fast enough to keep tests short
DEVICE_TIMEOUT = 1.0    # agents' --timeout

AGENTS = {  # key -> (instance-id, agent-class, simulator kind)
    'compressor': ('compressor-e2e', 'CompressorAgent', 'compressor'),
    'psu': ('psu-e2e', 'PowerSupplyAgent', 'psu'),
}


@dataclass
class E2EStack:
    """The module's simulators and agents: the stack, and a client per agent."""

    stack: OcsStack
    sims: dict          # 'compressor' / 'psu' -> Simulator
    clients: dict       # 'compressor' / 'psu' -> OCSClient
    instance_ids: dict  # 'compressor' / 'psu' -> instance-id

    def acq_session(self, which: str) -> dict:
        """The agent's ``acq`` session (status, op_code, degraded, data ...)."""
        return self.clients[which].acq.status().session

    def wait_acq(self, which: str, condition: Callable[[dict], bool], timeout: float,
                 what: str) -> dict:
        """Poll ``acq``'s session until ``condition(session)``; return the session."""
        last: dict = {}

        def check():
            nonlocal last
            last = self.acq_session(which)
            return last if condition(last) else None

        try:
            return wait_for(check, timeout, what)
        except AssertionError as err:
            raise AssertionError(f'{err}\nlast acq session of {which}: {last}') from None

    def agent_log(self, which: str) -> str:
        return self.stack.agents[self.instance_ids[which]].process.read_log()


@pytest.fixture(scope='module')
def e2e(ocs_stack) -> E2EStack:
    """Both simulators and both agents (``--mode acq``), stopped after this module."""
    with ocs_stack.scope():
        sims = {key: ocs_stack.start_simulator(kind, f'{kind}-e2e-sim', wait=False)
                for key, (_, _, kind) in AGENTS.items()}
        for key, (iid, agent_class, _) in AGENTS.items():
            ocs_stack.start_agent(iid, agent_class, [
                '--ip-address', '127.0.0.1', '--port', sims[key].wait_ready()['PORT'],
                '--timeout', DEVICE_TIMEOUT, '--sample-interval', SAMPLE_INTERVAL,
                '--mode', 'acq'])
        ids = [iid for iid, _, _ in AGENTS.values()]
        clients = ocs_stack.wait_agents(*ids, timeout=45)
        yield E2EStack(ocs_stack, sims,
                       {key: clients[iid] for key, (iid, _, _) in AGENTS.items()},
                       {key: iid for key, (iid, _, _) in AGENTS.items()})
        agents = [ocs_stack.agents[i].process for i in ids]
    # Left the scope: all four were stopped, and none may have survived.
    assert all(p.stop_record.returncode is not None for p in agents)


OP_RUNNING, OP_DEGRADED = 3, 8   # ocs.base.OpCode values in a session's op_code


def _connected_with_readings(session: dict, after: float = 0.0) -> bool:
    data = session.get('data') or {}
    return bool(session.get('status') == 'running' and data.get('connected')
                and data.get('fields') and (data.get('timestamp') or 0) > after)


def _task(client, name: str, **params):
    """Start a task and wait for it (bounded); return the final reply."""
    op = getattr(client, name)
    reply = op.start(**params)
    if reply.status != ocs.OK:
        return reply
    return op.wait(timeout=15)


# -- one shared stack ---------------------------------------------------------------------

def _ocs_log_file(e2e, which: str) -> str:
    """What OCS itself wrote to the agent's log file (``<log-dir>/<address>.log``)."""
    iid = e2e.instance_ids[which]
    paths = list(e2e.stack.log_dir.glob(f'*.{iid}.log'))
    assert len(paths) == 1, f'no single OCS log file for {iid}: {paths}'
    return paths[0].read_text()


def test_readings_arrive_from_both_agents(e2e):
    for which, keys in (('compressor', {'helium_temp', 'high_pressure', 'motor_current',
                                        'operating_state'}),
                        ('psu', {'voltage', 'current', 'output'})):
        first = e2e.wait_acq(which, _connected_with_readings, 10, f'{which} acq readings')
        assert first['op_code'] == OP_RUNNING and first['degraded'] is False
        assert keys <= set(first['data']['fields']), first['data']['fields']
        # and they keep coming: a newer timestamp within a few sample intervals
        stamp = first['data']['timestamp']
        e2e.wait_acq(which, lambda s, stamp=stamp: _connected_with_readings(s, after=stamp),
                     5 * SAMPLE_INTERVAL + 2, f'{which} acq next reading')


def test_outage_shows_degraded_and_recovery_clears_it(e2e):
    sim = e2e.sims['compressor']
    client = e2e.clients['compressor']
    e2e.wait_acq('compressor', _connected_with_readings, 10, 'readings before the cut')
    sim.control('stop')          # the device goes away: refuses connections, drops ours
    try:
        down = e2e.wait_acq(
            'compressor', lambda s: s['degraded'] and s['op_code'] == OP_DEGRADED
            and s['data']['connected'] is False, 3 * DEVICE_TIMEOUT + 5, 'degraded')
        assert down['status'] == 'running', 'acq must survive the outage'
        assert down['data']['last_error'] and down['data']['outage_started']
        assert down['data']['fields'], 'the last readings stay in session.data'

        # A task while the device is down fails fast, with a message saying why.
        t0 = time.monotonic()
        reply = _task(client, 'power', state='on')
        assert time.monotonic() - t0 < 2 * SAMPLE_INTERVAL + DEVICE_TIMEOUT + 2
        assert reply.session['success'] is False
        assert any('not attempted' in m[1] or 'unreachable' in m[1]
                   for m in reply.session['messages']), reply.session['messages']

        # Still degraded a few retries later: acq keeps running and keeps retrying.
        e2e.wait_acq('compressor', lambda s: s['degraded'] and s['status'] == 'running',
                     3, 'still degraded')

        # The OCS log file (written through Twisted's legacy log system) says why.
        ocs_log = _ocs_log_file(e2e, 'compressor')
        assert re.search(r'connection lost \(\w.+\)', ocs_log), ocs_log[-3000:]
        assert re.search(r'cannot connect \(.*[Rr]efused.*\); retrying in the background', ocs_log), \
            ocs_log[-3000:]
    finally:
        sim.control('start')
    t_back = time.time()
    up = e2e.wait_acq(
        'compressor', lambda s: not s['degraded'] and s['op_code'] == OP_RUNNING
        and _connected_with_readings(s, after=t_back), 10, 'recovery')
    assert up['data']['outage_started'] is None and up['data']['outages'] >= 1

    # The lock is free again: a task succeeds right after recovery.
    assert _task(client, 'init').session['success'] is True
    # The operator's view in the log: one loss message per outage, one recovery.
    log = e2e.agent_log('compressor')
    assert log.count('Lost contact with compressor') == up['data']['outages'], log[-3000:]
    assert 'Connection re-established' in log


def test_task_succeeds_and_acq_reads_it_back(e2e):
    client = e2e.clients['psu']
    for name, params in (('set_current', {'current': 2.0}), ('set_output', {'state': 'on'}),
                         ('set_voltage', {'voltage': 7.5})):
        reply = _task(client, name, **params)
        assert reply.session['success'] is True, (name, reply)
    t_set = time.time()
    session = e2e.wait_acq(
        'psu', lambda s: _connected_with_readings(s, after=t_set)
        and s['data']['fields'].get('voltage_setpoint') == 7.5, 5, 'read back 7.5 V')
    fields = session['data']['fields']
    assert fields['output'] == 1
    assert fields['voltage'] == pytest.approx(7.5, abs=0.1)
    assert fields['current'] == pytest.approx(0.75, abs=0.05)   # 7.5 V on the 10 ohm load


@pytest.mark.parametrize('name, params, param', [
    ('set_voltage', {'voltage': 99.0}, 'voltage'),
    ('set_current', {'current': -1}, 'current'),
    ('set_output', {'state': 'maybe'}, 'state'),
])
def test_bad_param_is_refused_with_a_message_naming_it(e2e, name, params, param):
    client = e2e.clients['psu']
    before = getattr(client, name).status().session
    reply = _task(client, name, **params)
    assert reply.status == ocs.ERROR
    assert f"'{param}'" in reply.msg, reply.msg
    # refused before running: no new session was started (OCS drops the old, done one)
    after = getattr(client, name).status().session
    assert after == {} or after['session_id'] == before.get('session_id'), after
