"""The docker deployment's topology, run as plain processes on this machine.

The compose file itself runs in docker/ci-up.sh (CI, or ``make
compose-check``), which needs a Docker engine and minutes. This test runs what
it describes in seconds, without an engine: the simulators its simulator services
run, crossbar (from PyPI) with docker/config/default.yaml's realm and
address root, and every agent service's INSTANCE_ID launched by
``ocs-agent-cli`` from that very site config under its container hostname's
host block. Service host names are mapped to 127.0.0.1 and ports to free ones;
nothing else is changed. If the site config, the plugin table, the agents'
arguments or the simulators drift apart, this fails.
"""

from __future__ import annotations

import time

import pytest

from socs_tcp.testing import OcsStack
from test_docker_config import SITE_CONFIG, agent_services, environment, load_compose, option, simulator_services

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

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
        for name, svc in agents.items():
            iid = environment(svc)['INSTANCE_ID']
            inst = site.instances[iid]
            # The local run uses the container's host block, as ocs-agent-cli does in docker.
            assert inst.host == svc['hostname'], f'{name}: {iid} is under {inst.host}'
            stack.start_agent(iid)
        clients = stack.wait_agents(timeout=45)

        for svc in agents.values():
            iid = environment(svc)['INSTANCE_ID']
            inst = site.instances[iid]
            # It talks to the simulator its service depends on, on that simulator's port.
            sim_service = next(s for s in sims if s in svc['depends_on'])
            assert inst.option('--port') == str(started[sim_service].port)
            # --mode acq in the site config started acq: readings arrive, then new ones.
            first = _wait_for_acq(clients[iid], None, timeout=20)
            numbers = [v for v in first['fields'].values()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)]
            assert numbers, f'{iid}: no numeric readings in {first["fields"]}'
            interval = float(option(inst.flat_arguments(), '--sample-interval') or 1)
            later = _wait_for_acq(clients[iid], first['timestamp'], timeout=interval + 10)
            assert later['timestamp'] > first['timestamp']
