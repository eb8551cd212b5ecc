"""In-process tier: real `OCSAgent` s (no crossbar) running the sample agents'
operations in the reactor's real thread pool, against the simulated devices
over real TCP on 127.0.0.1, with faults injected into the simulators.

pytest-twisted runs the reactor in the main thread, as ``ocs-agent-cli`` does.
"""

import argparse
import time
from unittest.mock import MagicMock

import ocs
import pytest
import pytest_twisted
from ocs.base import OpCode
from ocs.ocs_agent import OCSAgent
from twisted.internet import defer, reactor, task, threads

from socs_tcp.agents import polled_device
from socs_tcp.agents.compressor import drivers as cpa
from socs_tcp.agents.compressor.agent import CompressorAgent
from socs_tcp.agents.compressor.simulator import CompressorSimulator
from socs_tcp.agents.errors import ReplyError
from socs_tcp.agents.power_supply.agent import PowerSupplyAgent
from socs_tcp.agents.power_supply.simulator import PowerSupplySimulator
from socs_tcp.sim.devices.cryomech_cpa import CompressorModel


def ocs_agent(instance_id):
    args = argparse.Namespace(instance_id=instance_id, access_policy=None, log_dir=None,
                              working_dir=None, address_root='observatory')
    agent = OCSAgent(MagicMock(), args, address=f'observatory.{instance_id}')
    agent.publish = MagicMock()        # no crossbar: record what the feeds flush
    return agent


@defer.inlineCallbacks
def until(predicate, timeout=5.0, what='condition'):
    """Poll ``predicate`` on the reactor every 20 ms; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout} s waiting for {what}')
        yield task.deferLater(reactor, 0.02, lambda: None)


@defer.inlineCallbacks
def run_task(agent, name, params):
    """Start task ``name``; return (session dict, seconds it took)."""
    start = time.monotonic()
    status, msg, _ = agent.start(name, params)
    assert status == ocs.OK, msg
    status, msg, session = yield agent.wait(name, timeout=10)
    assert status == ocs.OK, msg
    return session, time.monotonic() - start


def register(agent, dev):
    agent.register_process('acq', dev.acq, dev._stop_acq)
    agent.register_task('init', dev.init)
    return dev


@pytest.fixture
def psu_rig():
    sim = PowerSupplySimulator()
    sim.start()
    agent = ocs_agent('psu-1')
    psu = register(agent, PowerSupplyAgent(agent, '127.0.0.1', sim.port, timeout=1.0,
                                           sample_interval=0.1))
    for name in ('set_voltage', 'set_current', 'set_output'):
        agent.register_task(name, getattr(psu, name))
    yield agent, psu, sim
    yield_stop(agent, psu, sim)


@pytest.fixture
def compressor_rig():
    sim = CompressorSimulator(model=CompressorModel(start_duration=0.3))
    sim.start()
    agent = ocs_agent('compressor-1')
    comp = register(agent, CompressorAgent(agent, '127.0.0.1', sim.port, timeout=0.5,
                                           sample_interval=0.1))
    agent.register_task('power', comp.power)
    yield agent, comp, sim
    yield_stop(agent, comp, sim)


def yield_stop(agent, dev, sim):
    """Fixture teardown: stop acq if running, close the driver, stop the simulator."""
    session = agent.sessions.get('acq')
    if session is not None and session.status != 'done':
        agent.stop('acq')
        pytest_twisted.blockon(agent.wait('acq', timeout=10))
    if dev._device is not None:
        dev._device.close()
    pytest_twisted.blockon(sim.stop())


def acq_session(agent):
    return agent.sessions['acq']


@pytest_twisted.inlineCallbacks
def test_psu_outage_shows_degraded_tasks_fail_fast_and_recovery_clears_it(psu_rig):
    agent, psu, sim = psu_rig
    status, msg, _ = agent.start('acq', {})
    assert status == ocs.OK, msg
    session = acq_session(agent)
    yield until(lambda: session.data.get('timestamp') is not None, what='a first sample')
    assert session.data['connected'] is True and session.data['fields']['output'] == 0
    assert session.encoded()['op_code'] == OpCode.RUNNING.value

    # The device goes away: acq keeps running, degraded, with the reason in its data.
    last_reading_time = session.data['timestamp']
    yield sim.stop()
    yield until(lambda: session.degraded, what='degraded')
    encoded = session.encoded()
    assert encoded['op_code'] == OpCode.DEGRADED.value and encoded['status'] == 'running'
    assert encoded['data']['connected'] is False
    assert encoded['data']['outage_started'] is not None and encoded['data']['last_error']
    assert encoded['data']['timestamp'] >= last_reading_time      # latest readings kept
    assert encoded['data']['fields']['voltage_setpoint'] == 0.0

    # A task meanwhile fails at once with a clear message and leaves the lock free.
    result, took = yield run_task(agent, 'set_voltage', {'voltage': 5.0})
    assert result['success'] is False and took < 2.0
    assert 'not attempted' in result['messages'][-2][1]
    assert psu.lock.job in (None, 'acq')

    # The device comes back: acq recovers by itself and a task works again.
    sim.start()
    yield until(lambda: not session.degraded, timeout=5, what='recovery')
    assert session.data['connected'] is True and session.data['outage_started'] is None
    assert session.data['outages'] == 1
    result, _ = yield run_task(agent, 'set_voltage', {'voltage': 5.0})
    assert result['success'] is True, result['messages']
    assert sim.model.voltage == 5.0
    yield until(lambda: session.data['fields']['voltage_setpoint'] == 5.0, what='new set point')

    agent.stop('acq')
    status, _, final = yield agent.wait('acq', timeout=5)
    assert final['success'] is True and final['status'] == 'done'
    assert agent.publish.called                 # the feed reached the (mocked) transport


@pytest_twisted.inlineCallbacks
def test_psu_task_with_device_down_and_no_acq_fails_fast_and_frees_the_lock(psu_rig):
    agent, psu, sim = psu_rig
    result, _ = yield run_task(agent, 'init', {})
    assert result['success'] is True and result['data']['model'] == 'SIM-PSU-3005'
    yield sim.stop()
    result, took = yield run_task(agent, 'set_output', {'state': 'on'})
    assert result['success'] is False and took < 1.5
    assert 'device unreachable' in result['messages'][-2][1]
    assert psu.lock.acquire(timeout=0)
    psu.lock.release()


@pytest_twisted.inlineCallbacks
def test_psu_refused_setting_and_bad_param_are_clear_errors(psu_rig):
    agent, psu, sim = psu_rig
    status, msg, _ = agent.start('set_current', {'current': 7.5})
    assert status == ocs.ERROR and "Param 'current'" in msg      # rejected before running
    # A value the agent accepts but the device refuses comes back from its error queue.
    sim.model.push_error((-300, 'Device-specific error'))
    result, _ = yield run_task(agent, 'set_current', {'current': 1.0})
    assert result['success'] is False
    assert 'refused by the device' in result['messages'][-2][1]
    assert '-300' in result['messages'][-2][1]


@pytest_twisted.inlineCallbacks
def test_compressor_power_on_drop_garbage_and_silence_during_acq(compressor_rig, monkeypatch):
    monkeypatch.setattr(polled_device, 'RETRY_INTERVAL', 0.2)
    agent, comp, sim = compressor_rig
    result, _ = yield run_task(agent, 'init', {})
    assert result['success'] is True
    assert result['data'] == {'model': '20_5', 'serial': 4242, 'software_revision': '1.4'}

    agent.start('acq', {})
    session = acq_session(agent)
    yield until(lambda: session.data.get('fields'), what='a first sample')
    assert session.data['fields']['operating_state_name'] == 'idling'

    result, _ = yield run_task(agent, 'power', {'state': 'on'})
    assert result['success'] is True, result['messages']
    yield until(lambda: session.data['fields']['operating_state_name'] == 'running',
                what='running')

    # Garbage in front of one reply: one bad sample, degraded, then recovery.
    sim.set_garbage(b'\xde\xad\xbe\xef')
    yield until(lambda: session.degraded, what='degraded on garbage')
    assert session.data['last_error'].startswith('ReplyError')
    yield until(lambda: not session.degraded, what='recovery after garbage')

    # A dropped connection: the next poll reconnects on demand.
    yield sim.drop_connections()
    n = len(sim.requests)
    yield until(lambda: len(sim.requests) > n + 2 and not session.degraded,
                what='polling after a drop')

    # A silent device: timeouts, degraded, recovery when it talks again.
    sim.set_silent(True)
    yield until(lambda: session.degraded, what='degraded while silent')
    assert 'DeviceTimeout' in session.data['last_error']
    sim.set_silent(False)
    yield until(lambda: not session.degraded, what='recovery after silence')
    assert session.status == 'running'


@pytest_twisted.inlineCallbacks
def test_compressor_driver_turns_a_truncated_reply_into_reply_error():
    # The header promises 67 more bytes; only 10 come.
    def handler(frame):
        return frame[:4] + b'\x00\x44\x01\x04\x42' + b'\x00' * 9

    from socs_tcp.sim import DeviceServer, mbap_framer
    sim = DeviceServer(handler, framer=mbap_framer)
    sim.start()

    def body():
        dev = cpa.Compressor('127.0.0.1', sim.port, timeout=0.3)
        try:
            start = time.monotonic()
            with pytest.raises(ReplyError, match='truncated reply'):
                dev.get_data()
            return time.monotonic() - start
        finally:
            dev.close()
    try:
        took = yield threads.deferToThread(body)
        assert took < 1.0
    finally:
        yield sim.stop()
