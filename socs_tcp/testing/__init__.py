"""Real-stack tests for OCS agents: a private crossbar, simulated devices, agents by ``ocs-agent-cli``.

Installing socs_tcp registers `socs_tcp.testing.plugin` with pytest (entry
point ``pytest11``), so these fixtures are there in every test session:

``ocs_stack`` (session)
    An `OcsStack` whose private crossbar runs on 127.0.0.1 (a free port),
    shared by the whole session; everything it started is stopped at the
    end, and the session fails if a process survived.
``simulated_device`` (function)
    ``simulated_device(kind, *args) -> Simulator``: ``socs-tcp simulate
    <kind>`` on free ports (``.port``; ``.control('stop')`` and the other
    fault commands of `socs_tcp.sim.control`), stopped after the test.
``run_agent`` (function)
    ``run_agent(agent_class, arguments=(), instance_id=None, timeout=45) ->
    OCSClient``: the agent-class (any installed OCS plugin's) launched by
    ``ocs-agent-cli`` with those arguments, returned once it joined
    crossbar; stopped after the test.

`create_device_emulator` is SOCS's device emulator fixture over TCP, with
``emulator.inject(...)`` for faults (`socs_tcp.testing.emulator`): a SOCS
test file changes one import.

`wait_for` polls a condition with a bound, and `OcsStack` does the rest
(any program that prints ``PORT <n>`` with ``ocs_stack.start_service``, a
site config of your own with ``load_site_config``). No Docker is needed, and
everything stays on 127.0.0.1.
"""

from socs_tcp.testing._crossbar import CrossbarError
from socs_tcp.testing._processes import ManagedProcess, StopRecord, processes_with_env, stop_processes
from socs_tcp.testing._site import SiteConfig
from socs_tcp.testing._stack import STACK_ENV, Agent, OcsStack, Service, Simulator, StackError
from socs_tcp.testing._waiting import wait_for
from socs_tcp.testing.emulator import DeviceEmulator, create_device_emulator

__all__ = ['STACK_ENV', 'Agent', 'CrossbarError', 'DeviceEmulator', 'ManagedProcess', 'OcsStack', 'Service',
           'SiteConfig', 'Simulator', 'StackError', 'StopRecord', 'processes_with_env',
           'create_device_emulator', 'stop_processes', 'wait_for']
