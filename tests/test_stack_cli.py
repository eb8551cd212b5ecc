"""``socs-tcp stack``: a local OCS stack a real agent joins, stopped whole by Ctrl-C.

Also where the dependency set is checked for the NumPy/bjdata traceback:
crossbar's and the agent's logs of a real run must not hold one.

The default run starts a real stack and stops it with Ctrl-C
(test_instance_arguments_name_the_simulators_ports); an agent joining it and
crossbar failing on a busy port are in the slow tier (``make test-slow``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from socs_tcp.testing import processes_with_env, wait_for

BIN = Path(sys.executable).parent
NUMPY_TRACEBACK = '_ARRAY_API not found'


def test_the_serialisers_crossbar_loads_import_without_a_numpy_traceback():
    # autobahn imports bjdata when it is installed (crossbar and OCS's clients pull it in);
    # bjdata's published build for NumPy 1 prints a traceback beside NumPy 2.
    done = subprocess.run([sys.executable, '-c', 'import bjdata, autobahn.wamp.serializer'],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert NUMPY_TRACEBACK not in done.stderr and 'Traceback' not in done.stderr, done.stderr


def test_bad_workdir_is_one_line(tmp_path):
    (tmp_path / 'file').write_text('')
    done = subprocess.run([BIN / 'socs-tcp', 'stack', '--workdir', str(tmp_path / 'file' / 'sub')],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith('socs-tcp stack: --workdir ') and done.stderr.count('\n') == 1, done.stderr


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_an_agent_launched_into_the_stack_joins_and_ctrl_c_stops_everything(tmp_path):
    marker = uuid.uuid4().hex
    env = dict(os.environ, SOCS_TCP_STACK_CLI_TEST=marker, PYTHONUNBUFFERED='1')
    env.pop('OCS_CONFIG_DIR', None)
    sim = subprocess.Popen([BIN / 'socs-tcp', 'simulate', 'psu', '--port', '0'], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stack = agent = None
    try:
        port = int(sim.stdout.readline().split()[1])
        stack = subprocess.Popen(
            [BIN / 'socs-tcp', 'stack', '--workdir', str(tmp_path / 'stack'),
             '--instance', f'psu-1 PowerSupplyAgent --ip-address 127.0.0.1 --port {port} --mode acq'],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        printed = []
        for line in stack.stdout:
            printed.append(line)
            if line.startswith('Ctrl-C stops'):
                break
        text = ''.join(printed)
        config_dir = next(li.split('=', 1)[1].strip() for li in printed if li.startswith('OCS_CONFIG_DIR='))
        assert 'socs-tcp agent --instance-id' in text and 'agent instances: psu-1' in text, text

        # Launched as the printed lines say: OCS_CONFIG_DIR exported, the instance id.
        agent_env = dict(env, OCS_CONFIG_DIR=config_dir)
        agent_log = tmp_path / 'agent.log'
        with open(agent_log, 'w') as out:
            agent = subprocess.Popen([BIN / 'ocs-agent-cli', '--instance-id', 'psu-1'], env=agent_env,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        from ocs.ocs_client import OCSClient

        def acq_fields():
            try:
                client = OCSClient('psu-1', args=['--site-file', f'{config_dir}/default.yaml'])
                return (client.acq.status().session.get('data') or {}).get('fields')
            except Exception:   # not joined yet
                return None
        wait_for(acq_fields, 60, 'the agent launched into the stack to report readings')

        agent.send_signal(signal.SIGINT)
        agent.wait(20)
        stack.send_signal(signal.SIGINT)                      # Ctrl-C
        rest = stack.communicate(timeout=40)[0]
        assert stack.returncode == 0, rest
        assert 'socs-tcp stack: stopped crossbar' in rest, rest
        # Everything the stack started is gone; only the test's own simulator is left.
        assert [p.pid for p in processes_with_env('SOCS_TCP_STACK_CLI_TEST', marker)] == [sim.pid]
        crossbar_log = (Path(config_dir).parent / 'logs' / 'crossbar.log').read_text()
        assert 'Traceback' not in crossbar_log and NUMPY_TRACEBACK not in crossbar_log
        assert NUMPY_TRACEBACK not in agent_log.read_text()
    finally:
        for proc in (agent, stack, sim):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_a_site_file_is_run_as_it_is_with_the_local_hub(tmp_path):
    from socs_tcp._stack_cli import load_site_file

    site = load_site_file(str(Path(__file__).resolve().parent.parent / 'docker' / 'config' / 'default.yaml'))
    compressor = site.instances['compressor']
    assert compressor.host == 'ocs-docker'
    assert compressor.option('--ip-address') == 'compressor-sim'    # devices anywhere, not only 127.0.0.1
    rendered = site.render('ws://127.0.0.1:1/ws', 'http://127.0.0.1:1/call', tmp_path)
    assert rendered['hub']['wamp_server'] == 'ws://127.0.0.1:1/ws'
    assert 'wamp_server' not in rendered['hosts']['ocs-docker']

    (tmp_path / 'bad.yaml').write_text('hosts: {}\n')
    with pytest.raises(ValueError, match='not an OCS site config'):
        load_site_file(str(tmp_path / 'bad.yaml'))
    with pytest.raises(ValueError, match='--site-file .*missing.yaml'):
        load_site_file(str(tmp_path / 'missing.yaml'))


def refused(*args: str) -> subprocess.CompletedProcess:
    """``socs-tcp stack ARGS`` expected to refuse at once; whatever it started anyway is stopped."""
    marker = uuid.uuid4().hex
    env = dict(os.environ, SOCS_TCP_STACK_CLI_TEST=marker)
    stack = subprocess.Popen([BIN / 'socs-tcp', 'stack', *args], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = stack.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        stack.send_signal(signal.SIGINT)          # it ran: stop it and its children
        out, err = stack.communicate(timeout=40)
    finally:
        for proc in processes_with_env('SOCS_TCP_STACK_CLI_TEST', marker):
            proc.kill()
    return subprocess.CompletedProcess(stack.args, stack.returncode, out, err)


def test_an_unknown_port_placeholder_is_one_line_before_anything_starts(tmp_path):
    done = refused('--workdir', str(tmp_path / 'stack'), '--simulate', 'psu',
                   '--instance', 'c-1 CompressorAgent --ip-address 127.0.0.1 --port {compressor}')
    assert done.returncode == 2
    assert done.stderr == ('socs-tcp stack: --instance c-1: {compressor} stands for the port of '
                           '--simulate compressor, which is not given (--simulate: psu)\n'), done.stderr
    assert not (tmp_path / 'stack' / 'crossbar').exists()


@pytest.mark.timeout(90)
def test_instance_arguments_name_the_simulators_ports(tmp_path):
    # The page's example: the agent's --port is wherever the simulator went, not a fixed 5025;
    # the same kind twice is two simulators, {psu} the first.
    marker = uuid.uuid4().hex
    env = dict(os.environ, SOCS_TCP_STACK_CLI_TEST=marker, PYTHONUNBUFFERED='1')
    stack = subprocess.Popen(
        [BIN / 'socs-tcp', 'stack', '--workdir', str(tmp_path / 'stack'), '--simulate', 'psu',
         '--simulate', 'psu', '--instance', 'psu-1 PowerSupplyAgent --ip-address 127.0.0.1 --port {psu} --mode acq'],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        printed = []
        for line in stack.stdout:
            printed.append(line)
            if line.startswith('Ctrl-C stops'):
                break
        ports = [int(li.split('127.0.0.1:')[1].split()[0]) for li in printed if li.startswith('simulator  psu')]
        assert len(ports) == 2, ''.join(printed)
        # The sample agent of --instance is launched with ocs-agent-cli (socs-tcp agent needs socs).
        launch = {li.split()[0]: li for li in printed if li.strip().endswith(')') and 'INSTANCE_ID  ' in li}
        assert 'sample agents' in launch['ocs-agent-cli'] and 'needs socs' in launch['socs-tcp'], printed
        import yaml
        site = yaml.safe_load((tmp_path / 'stack' / 'config' / 'default.yaml').read_text())
        (instance,) = site['hosts']['localhost']['agent-instances']
        assert instance['arguments'] == ['--ip-address', '127.0.0.1', '--port', str(ports[0]), '--mode', 'acq']
        stack.send_signal(signal.SIGINT)
        rest = stack.communicate(timeout=40)[0]
        assert stack.returncode == 0 and 'psu-sim-2' in rest, rest
        assert processes_with_env('SOCS_TCP_STACK_CLI_TEST', marker) == []
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait(10)


def test_an_unknown_simulator_kind_is_refused_before_anything_starts(tmp_path):
    # It started crossbar, then failed with "bogus-sim exited with status 2 before announcing".
    done = refused('--workdir', str(tmp_path / 'stack'), '--simulate', 'bogus')
    assert done.returncode == 2
    assert "argument --simulate: invalid choice: 'bogus'" in done.stderr, done.stderr
    assert 'psu' in done.stderr and 'replay' not in done.stderr.split('invalid choice')[1], done.stderr
    assert not (tmp_path / 'stack' / 'crossbar').exists()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_busy_port_is_one_line_naming_crossbars_log(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([BIN / 'socs-tcp', 'stack', '--port', str(port), '--workdir', str(tmp_path)],
                              capture_output=True, text=True, timeout=80)
    assert done.returncode == 1
    log = tmp_path / 'logs' / 'crossbar.log'
    # It ended "log .../crossbar.log: (logs in .../logs)": a colon announcing nothing, the logs twice.
    assert done.stderr.startswith('socs-tcp stack: crossbar ') and done.stderr.count('\n') == 1, done.stderr
    assert done.stderr.endswith(f'{log}\n') and '(logs in' not in done.stderr, done.stderr
