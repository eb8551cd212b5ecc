"""The docker deployment's topology, run as plain processes on this machine.

The compose file itself runs in docker/ci-up.sh (CI, or ``make
compose-check``), which needs a Docker engine and minutes. This test runs what
it describes in seconds, without an engine: the simulators its simulator services
run, crossbar (from PyPI) with docker/config/default.yaml's realm and
address root, and every agent service's INSTANCE_ID (both compose files:
the sample agents and the SOCS agent) launched as its container launches it
(``ocs-agent-cli``, or the service's entrypoint, ``socs-tcp agent``) from
that very site config under its container hostname's host block. Service
host names are mapped to 127.0.0.1 and ports to free ones; nothing else is
changed. If the site config, the plugin tables, the agents' arguments or the
simulators drift apart, this fails.

In the slow tier (``make test-slow``): by default, test_docker_config.py checks
that the compose files and the site config agree, and the real crossbar and
agents run in test_demo.py and test_socs_agents_e2e.py.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from socs_tcp.testing import OcsStack
from test_docker_config import SITE_CONFIG, agent_services, environment, load_compose, option, simulator_services

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(90)]

#: Options the local run sets itself (free 127.0.0.1 ports); the rest of a
#: simulator service's command line is passed through.
_LOCAL_OPTIONS = ('--host', '--port', '--control-port')


def _passthrough_args(entrypoint: list[str]) -> list[str]:
    """A simulator service's arguments after ``simulate <kind>``, minus _LOCAL_OPTIONS."""
    args, out, i = entrypoint[4:], [], 0
    while i < len(args):
        if args[i] in _LOCAL_OPTIONS:
            i += 2
        else:
            out.append(args[i])
            i += 1
    return out


def _entrypoint_launcher(svc: dict) -> list[str] | None:
    """The launcher a service's entrypoint runs (``socs-tcp agent``, or SOCS's own
    ``ocs-agent-cli``, from this environment), or None when it sets none."""
    entrypoint = [w for w in svc.get('entrypoint') or [] if w != 'dumb-init']
    if not entrypoint:
        return None
    assert entrypoint in (['socs-tcp', 'agent'], ['ocs-agent-cli']), \
        f'unexpected agent entrypoint {entrypoint}'
    return [str(Path(sys.executable).parent / entrypoint[0]), *entrypoint[1:]]


#: SOCS's Prologix driver connects to this port of the box, always.
PROLOGIX_PORT = 1234


def _agent_env(svc: dict, sim_kind: str, sim_port: int) -> dict[str, str]:
    """The service's SOCS_TCP switch, and where a fixed-port driver finds its simulator here."""
    env = {k: v for k, v in environment(svc).items() if k.startswith('SOCS_TCP')}
    if sim_kind == 'prologix':
        assert env.get('SOCS_TCP'), 'only socs_tcp can point the Prologix driver at a free port'
        env['SOCS_TCP_REDIRECT'] = f'127.0.0.1:{PROLOGIX_PORT}=127.0.0.1:{sim_port}'
    return env


def _join(stack: OcsStack, instance_id: str, process, timeout: float):
    """An OCSClient for an agent started with start_service, once it has joined."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.running, f'{instance_id} exited:\n{process.log_tail()}'
        try:
            return stack.client(instance_id)
        except Exception:   # ControlClientError until it registered
            if time.monotonic() > deadline:
                raise AssertionError(f'{instance_id} did not join in {timeout} s:\n{process.log_tail()}') from None
        time.sleep(0.2)


def _requests(sim) -> int:
    """How many requests the simulated device has answered (its control channel's status)."""
    return int(re.search(r'\brequests=(\d+)', sim.control('status')).group(1))


def _wait_for_acq(client, after: float | None, timeout: float) -> dict:
    """acq's session.data once it holds connected readings newer than ``after``."""
    deadline = time.monotonic() + timeout
    data: dict = {}
    while time.monotonic() < deadline:
        data = client.acq.status().session.get('data') or {}
        stamp = data.get('timestamp')
        if data.get('connected') and data.get('fields') and stamp is not None \
                and (after is None or stamp > after):
            return data
        time.sleep(0.25)
    raise AssertionError(f'no new readings within {timeout} s; last session.data: {data}')


def test_compose_topology_runs_and_agents_publish(tmp_path):
    compose = load_compose()
    sims = simulator_services(compose)
    agents = agent_services(compose)
    with OcsStack(tmp_path) as stack:
        # Simulators first: their free ports go into the site config.
        started = {name: stack.start_simulator(svc['entrypoint'][3], name=name,
                                               args=_passthrough_args(svc['entrypoint']),
                                               wait=False)
                   for name, svc in sims.items()}
        address_map = {name: ('127.0.0.1', sim.wait_ready()['PORT'])
                       for name, sim in started.items()}
        site = stack.load_site_config(SITE_CONFIG, address_map)
        stack.start_crossbar(wait=False)   # agents retry until it is up (~4 s)
        launched = {}                      # instance -> process, for entrypoint launchers
        for name, svc in agents.items():
            iid = environment(svc)['INSTANCE_ID']
            inst = site.instances[iid]
            # The local run uses the container's host block, as the launcher does in docker.
            assert inst.host == svc['hostname'], f'{name}: {iid} is under {inst.host}'
            launcher = _entrypoint_launcher(svc)
            if launcher is None:
                stack.start_agent(iid)
            else:
                sim_service = next(x for x in sims if x in svc['depends_on'])
                env = _agent_env(svc, sims[sim_service]['entrypoint'][3],
                                 started[sim_service].port)
                stack.crossbar.wait_ready()
                stack.write_site_config()
                launched[iid] = stack.start_service(
                    f'agent-{iid}', [*launcher, '--instance-id', iid, '--site-host', inst.host],
                    expect=(), wait=False, env=env).process
        clients = stack.wait_agents(timeout=45) if stack.agents else {}
        clients.update({iid: _join(stack, iid, proc, 45) for iid, proc in launched.items()})

        for svc in agents.values():
            iid = environment(svc)['INSTANCE_ID']
            inst = site.instances[iid]
            # It talks to the simulator its service depends on, on that simulator's port.
            sim_service = next(s for s in sims if s in svc['depends_on'])
            if sims[sim_service]['entrypoint'][3] != 'prologix':     # no port option there
                assert inst.option('--port') == str(started[sim_service].port)
            if iid in launched:
                _check_socs_agent(clients[iid], launched[iid], started[sim_service],
                                  switched_by_env=bool(environment(svc).get('SOCS_TCP')))
                continue
            # --mode acq in the site config started acq: readings arrive, then new ones.
            first = _wait_for_acq(clients[iid], None, timeout=20)
            numbers = [v for v in first['fields'].values()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)]
            assert numbers, f'{iid}: no numeric readings in {first["fields"]}'
            interval = float(option(inst.flat_arguments(), '--sample-interval') or 1)
            later = _wait_for_acq(clients[iid], first['timestamp'], timeout=interval + 10)
            assert later['timestamp'] > first['timestamp']


def _check_socs_agent(client, process, sim, timeout: float = 20,
                      switched_by_env: bool = False) -> None:
    """A SOCS agent: acq runs, not degraded, polls its device, and its log says
    it runs on socs_tcp (with SOCS_TCP set: which transports were taken over)."""
    deadline = time.monotonic() + timeout
    while True:
        session = client.acq.status().session
        if session.get('status') == 'running' and not session.get('degraded'):
            break
        assert time.monotonic() < deadline, f'acq not running: {session}\n{process.log_tail()}'
        time.sleep(0.25)
    before = _requests(sim)
    time.sleep(2.5)   # CryomechCPAAgent polls at 2.5 Hz, SRSCG635Agent at 1 Hz
    assert _requests(sim) > before, f'the agent stopped polling its device:\n{process.log_tail()}'
    if switched_by_env:
        assert re.search(r'SOCS_TCP: on socs_tcp: [a-z_]+ \(', process.read_log()), \
            process.log_tail()
        return
    assert re.search(r'TCP base: socs_tcp \S+ \(socs\.tcp\.TCPInterface is socs_tcp\.TCPInterface; socs ',
                     process.read_log()), process.log_tail()
