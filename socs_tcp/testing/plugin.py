"""pytest fixtures for real-stack tests of OCS agents (registered as the ``socs_tcp`` pytest plugin).

Installed with socs_tcp (entry point ``pytest11``), so any test can ask for
them; see `socs_tcp.testing` for what each one gives. They start processes
only when a test asks for them: a test session that uses none of them starts
nothing. Test without them with ``pytest -p no:socs_tcp``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence

import pytest

#: Seconds an agent may take to join crossbar after ``ocs-agent-cli`` starts.
AGENT_JOIN_TIMEOUT = 45.0


@pytest.fixture(scope='session')
def ocs_stack(tmp_path_factory):
    """An `OcsStack` with its private crossbar running, for the whole test session.

    Teardown stops every process the stack started and fails if one
    survived (its pid is in the message).
    """
    from socs_tcp.testing import STACK_ENV, OcsStack, processes_with_env

    stack = OcsStack(tmp_path_factory.mktemp('ocs-stack'))
    with stack:
        stack.start_crossbar()
        yield stack
    survivors = [r for r in stack.stop_records if r.returncode is None]
    survivors += processes_with_env(STACK_ENV, stack.id)
    assert not survivors, f'processes of the OCS test stack survived it: {survivors}'


@pytest.fixture
def _socs_tcp_test_scope(ocs_stack) -> Iterator:
    # One scope for the test's devices and agents: stopped together (in
    # parallel) after the test, crossbar left running for the next one.
    with ocs_stack.scope():
        yield ocs_stack


_names = itertools.count(1)


@pytest.fixture
def simulated_device(_socs_tcp_test_scope) -> Callable:
    """``simulated_device(kind, *args) -> Simulator``: ``socs-tcp simulate <kind>`` for this test.

    ``kind`` is a device ``socs-tcp simulate`` knows (``'compressor'``,
    ``'psu'``, ``'cryomech-cpa'``, ``'lakeshore372'``, ``'pfeiffer-tpg366'``);
    ``args`` are more of its options. The simulator listens on
    free 127.0.0.1 ports (``.port``; ``.control_port``) and takes fault
    commands with ``.control('stop')``, ``.control('start')``, ...; it is
    stopped after the test.
    """
    stack = _socs_tcp_test_scope

    def start(kind: str, *args: str):
        return stack.start_simulator(kind, f'{kind}-sim-{next(_names)}', args=args)

    return start


@pytest.fixture
def run_agent(_socs_tcp_test_scope) -> Callable:
    """``run_agent(agent_class, arguments=(), instance_id=None, timeout=45) -> OCSClient``.

    Adds an instance of ``agent_class`` (an agent-class of any installed OCS
    plugin) with ``arguments`` (its command line, e.g. ``['--ip-address',
    '127.0.0.1', '--port', device.port]``; values are turned into strings)
    to the session's site config, launches it with ``ocs-agent-cli``, and
    returns an ``ocs.ocs_client.OCSClient`` once it joined crossbar. The
    agent is stopped (SIGINT, as an operator would) after the test. The
    instance id is ``instance_id``, or a new one made of the agent-class.

    Raises ``socs_tcp.testing.StackError`` (with the end of the agent's
    log) if it exits or does not join within ``timeout`` seconds.
    """
    stack = _socs_tcp_test_scope

    def run(agent_class: str, arguments: Sequence = (), instance_id: str | None = None,
            timeout: float = AGENT_JOIN_TIMEOUT):
        iid = instance_id or f'{agent_class.lower()}-{next(_names)}'
        stack.start_agent(iid, agent_class, [str(a) for a in arguments])
        return stack.wait_agents(iid, timeout=timeout)[iid]

    return run
