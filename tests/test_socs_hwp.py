"""SOCS's HWP PID controller and gripper drivers, on socs_tcp, against small fakes.

SOCS's own getters, decoders and command methods run unchanged (the drivers
are subclassed; only their transport is ours). On plain socs these fail: the
PID driver raises ``RuntimeError`` when the controller is down at start-up
(and the agent's main process dies), recurses for ever on a silent
controller, and returns a reply the controller's bridge held from before; the
gripper client raises when its server is down, blocks for ever on a silent
server, and cannot unpickle a reply split on the way.
"""

from __future__ import annotations

import importlib
import time

import pytest
import pytest_twisted

from socs_bridge_fakes import FakeBridge, Gripper, PIDController, free_port
from socs_tcp._socs import hwp_gripper, hwp_pid
from socs_tcp._socs._byte_link import LinkTimeout
from socs_tcp.compat import CompatError
from tests.conftest import in_worker

PID_MODULE = 'socs.agents.hwp_pid.drivers.pid_controller'
GRIPPER_MODULE = 'socs.agents.hwp_gripper.drivers.gripper_client'


@pytest.fixture
def pd():
    hwp_pid.install()
    yield importlib.import_module(PID_MODULE)
    hwp_pid.uninstall()


@pytest.fixture
def cli():
    hwp_gripper.install()
    yield importlib.import_module(GRIPPER_MODULE)
    hwp_gripper.uninstall()


@pytest.fixture
def bridges():
    started: list[FakeBridge] = []

    def make(instrument, port=0, start=True):
        bridge = FakeBridge(instrument, port)
        started.append(bridge)
        return bridge.start() if start else bridge

    yield make
    for bridge in started:
        bridge.stop()


def test_install_subclasses_and_restores():
    pid_module = importlib.import_module(PID_MODULE)
    gripper_module = importlib.import_module(GRIPPER_MODULE)
    pid_original, gripper_original = pid_module.PID, gripper_module.GripperClient
    hwp_pid.install()
    hwp_gripper.install()
    try:
        assert pid_module.PID is not pid_original and issubclass(pid_module.PID, pid_original)
        assert issubclass(gripper_module.GripperClient, gripper_original)
        assert gripper_module.GripperClient is not gripper_original
    finally:
        hwp_pid.uninstall()
        hwp_gripper.uninstall()
    assert pid_module.PID is pid_original
    assert gripper_module.GripperClient is gripper_original


def test_install_refuses_another_shape(monkeypatch):
    pid_module = importlib.import_module(PID_MODULE)

    class Other:
        def __init__(self, address):
            pass

    monkeypatch.setattr(pid_module, 'PID', Other)
    with pytest.raises(CompatError, match='PID'):
        hwp_pid.install()
    assert pid_module.PID is Other


# -- PID controller ------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_pid_down_at_start_then_up_then_outage(pd, bridges):
    from socs.agents.hwp_pid.agent import get_pid_state
    port = free_port()
    controller = PIDController(freq=1.5, target=2.0)
    bridge = bridges(controller, port, start=False)

    def scenario():
        pid = pd.PID(ip='127.0.0.1', port=port, verb=False, timeout=0.3)   # socs: RuntimeError
        t0 = time.monotonic()
        assert get_pid_state(pid) == {'healthy': False}
        assert time.monotonic() - t0 < 4
        bridge.start()
        deadline = time.monotonic() + 5
        while (state := get_pid_state(pid))['healthy'] is False:
            assert time.monotonic() < deadline, 'never recovered'
        assert state == {'healthy': True, 'current_freq': 1.5, 'target_freq': 2.0, 'direction': 0}
        bridge.stop()
        t0 = time.monotonic()
        assert pid.get_freq().msg_type == 'error'
        assert time.monotonic() - t0 < 4
        bridge.start()
        deadline = time.monotonic() + 5
        while pid.get_freq().msg_type == 'error':
            assert time.monotonic() < deadline, 'never recovered'

    yield in_worker(scenario)


@pytest_twisted.inlineCallbacks
def test_pid_silent_controller_is_bounded_without_recursion(pd, bridges):
    controller = PIDController(freq=1.5)
    bridge = bridges(controller)

    def scenario():
        pid = pd.PID(ip='127.0.0.1', port=bridge.port, timeout=0.3)
        controller.delays = [None]
        t0 = time.monotonic()
        with pytest.raises(LinkTimeout):     # socs: retries, reconnects and recurses for ever
            pid.send_message('*X01')
        assert time.monotonic() - t0 < 0.5 + 0.3 + 0.3
        assert len(controller.requests) == 1
        assert pid.get_freq().measure == 1.5

    yield in_worker(scenario)


@pytest_twisted.inlineCallbacks
def test_pid_reply_held_by_the_bridge_is_not_returned(pd, bridges):
    controller = PIDController(freq=2.0)
    bridge = bridges(controller)
    bridge.held = b'X011.000\r'          # answered to a client that is gone
    controller.delays = [0.7]            # this one comes after SOCS's 0.5 s

    def scenario():
        pid = pd.PID(ip='127.0.0.1', port=bridge.port, timeout=0.5)
        return pid.get_freq().measure    # socs: 1.0

    assert (yield in_worker(scenario)) == 2.0


@pytest_twisted.inlineCallbacks
def test_pid_late_reply_to_another_read_is_not_taken(pd, bridges):
    controller = PIDController(freq=1.25, target=3.0)
    bridge = bridges(controller)

    def scenario():
        pid = pd.PID(ip='127.0.0.1', port=bridge.port, timeout=0.3)
        # *R01 is answered after its exchange and the quiet drain after it gave
        # up; the *X01 after it goes unanswered: the R01 reply must not answer it.
        controller.delays = [1.5, None]
        with pytest.raises(LinkTimeout):     # socs: tries again, and recurses
            pid.send_message('*R01')
        with pytest.raises(LinkTimeout):
            pid.send_message('*X01')
        return pid.send_message('*X01')

    assert (yield in_worker(scenario)) == 'X011.250'


# -- gripper -------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_gripper_down_at_start_then_up(cli, bridges):
    port = free_port()
    bridge = bridges(Gripper(), port, start=False)

    def scenario():
        client = cli.GripperClient('127.0.0.1', port, timeout=0.5)   # socs: ConnectionRefusedError
        with pytest.raises(TimeoutError):   # what the agent's monitor_state catches
            client.get_state()
        bridge.start()
        deadline = time.monotonic() + 5
        while True:
            try:
                return client.power(True)
            except TimeoutError:
                assert time.monotonic() < deadline, 'never recovered'

    assert (yield in_worker(scenario)) == {'result': 'ON', 'log': []}


@pytest_twisted.inlineCallbacks
def test_gripper_silent_server_is_bounded(cli, bridges):
    server = Gripper()
    bridge = bridges(server)

    def scenario():
        client = cli.GripperClient('127.0.0.1', bridge.port, timeout=0.5)
        server.delays = [None]
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):    # socs: blocks for ever
            client.home()
        assert time.monotonic() - t0 < 0.5 + 0.3
        return client.alarm()

    assert (yield in_worker(scenario)) == {'result': 'ALARM', 'log': []}


@pytest_twisted.inlineCallbacks
def test_gripper_reply_split_on_the_way(cli, bridges):
    bridge = bridges(Gripper())

    def scenario():
        client = cli.GripperClient('127.0.0.1', bridge.port, timeout=0.5)
        return client.get_state()       # socs: pickle data was truncated

    reply = yield in_worker(scenario)
    assert [a['pos'] for a in reply['result']['actuators']] == [0.5, 1.0, 1.5]
    assert len(reply['log']) == 80


@pytest_twisted.inlineCallbacks
def test_gripper_late_reply_is_not_returned(cli, bridges):
    server = Gripper()
    bridge = bridges(server)

    def scenario():
        client = cli.GripperClient('127.0.0.1', bridge.port, timeout=0.5)
        server.delays = [0.8]
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):   # socs: waits, however long it takes
            client.alarm()
        assert time.monotonic() - t0 < 0.5 + 0.3
        return client.inp()

    assert (yield in_worker(scenario)) == {'result': 'INP', 'log': []}


class _RestartService(PIDController):
    """The gripper server's restart service: ``reset\\n`` -> ``Success\\n``."""

    def answer(self, request: bytes) -> bytes | None:
        return b'Success\n' if request == b'reset' else b'?\n'


@pytest_twisted.inlineCallbacks
def test_gripper_restart_with_the_service_down_then_up(cli, bridges, monkeypatch):
    monkeypatch.setattr(hwp_gripper, 'RESTART_WAIT', 0.05)
    monkeypatch.setattr(hwp_gripper, 'RESTART_PORT', free_port())
    bridge = bridges(Gripper())

    def scenario():
        client = cli.GripperClient('127.0.0.1', bridge.port, timeout=0.5)
        down = client.restart()                   # socs: ConnectionRefusedError
        assert client.get_state()['result']['actuators'][0]['axis'] == 1
        bridges(_RestartService(), hwp_gripper.RESTART_PORT)
        return down, client.restart(), client.inp()

    down, up, inp = yield in_worker(scenario)
    assert down['result'] is False and 'Restart command failed' in down['log'][1]
    assert up == {'result': True, 'log': ['Previous connection closed', 'Restart command response: Success',
                                          'Control socket reconnected']}
    assert inp == {'result': 'INP', 'log': []}
