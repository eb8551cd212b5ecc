"""Fixtures for end-to-end tests: a real OCS stack on this machine.

``ocs_stack`` (module scope) starts a private crossbar, the compressor and
power-supply simulators and both sample agents through ``ocs-agent-cli``
(:class:`socs_tcp.demo.stack.OcsStack`), and yields an :class:`E2EStack`
with an ``OCSClient`` per agent. On teardown it stops everything and checks
that every process ended and none of their descendants survived.

Use from a test module with ``from ocs_stack_fixtures import ocs_stack``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import pytest

from socs_tcp.demo.processes import processes_with_env
from socs_tcp.demo.stack import STACK_ENV, OcsStack, Simulator

T = TypeVar('T')

SAMPLE_INTERVAL = 0.5   # agents' --sample-interval: fast enough to keep tests short
DEVICE_TIMEOUT = 1.0    # agents' --timeout

AGENTS = {  # key -> (instance-id, agent-class, simulator kind)
    'compressor': ('compressor-e2e', 'CompressorAgent', 'compressor'),
    'psu': ('psu-e2e', 'PowerSupplyAgent', 'psu'),
}


def wait_for(get: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``get()`` until it returns something truthy; return it.

    Raises
    ------
    AssertionError
        After ``timeout`` seconds, naming ``what`` and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout} s waiting for {what}; '
                                 f'last value: {value!r}')
        time.sleep(interval)


@dataclass
class E2EStack:
    """A running stack: the stack, its simulators and a client per agent."""

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
def ocs_stack(tmp_path_factory) -> E2EStack:
    stack = OcsStack(tmp_path_factory.mktemp('ocs-stack'))
    with stack:
        stack.start_crossbar(wait=False)
        sims: dict[str, Simulator] = {key: stack.start_simulator(kind, wait=False)
                                      for key, (_, _, kind) in AGENTS.items()}
        for key, (iid, agent_class, _) in AGENTS.items():
            stack.add_agent(iid, agent_class, [
                '--ip-address', '127.0.0.1', '--port', sims[key].wait_ready()['PORT'],
                '--timeout', DEVICE_TIMEOUT, '--sample-interval', SAMPLE_INTERVAL,
                '--mode', 'acq'])
        stack.crossbar.wait_ready()   # agents join ~1.5 s after this; earlier they back off
        for iid, _, _ in AGENTS.values():
            stack.start_agent(iid)
        clients = stack.wait_agents(timeout=45)
        yield E2EStack(stack, sims, {key: clients[iid] for key, (iid, _, _) in AGENTS.items()},
                       {key: iid for key, (iid, _, _) in AGENTS.items()})
    # Left the with block: everything was stopped. Nothing may survive.
    survivors = [r for r in stack.stop_records if r.returncode is None]
    assert not survivors, f'processes survived SIGKILL: {survivors}'
    assert processes_with_env(STACK_ENV, stack.id) == []
