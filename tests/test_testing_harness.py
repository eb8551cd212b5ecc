"""The real-stack harness (socs_tcp.testing) without crossbar: process stopping,
scopes, site configs, announcements, and that importing it starts nothing.
Fast (small Python children only); the real stack runs in test_demo.py (the
default run), test_e2e.py and test_testing_plugin.py (the slow tier)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
import yaml

from socs_tcp.testing import (
    STACK_ENV,
    ManagedProcess,
    OcsStack,
    SiteConfig,
    StackError,
    processes_with_env,
    stop_processes,
    wait_for,
)
from socs_tcp.testing._crossbar import render_crossbar_config

FAST = (1.0, 1.0, 1.0)


def _python(code: str) -> list[str]:
    return [sys.executable, '-c', textwrap.dedent(code)]


def _ready_child(tmp_path, name: str, code: str, env=None) -> ManagedProcess:
    """Start a child that prints READY once its signal handlers are set."""
    proc = ManagedProcess(name, _python(code), log_path=tmp_path / f'{name}.log', env=env)
    deadline = time.monotonic() + 10
    while 'READY' not in proc.read_log():
        assert proc.running and time.monotonic() < deadline, proc.read_log()
        time.sleep(0.02)
    return proc


POLITE = """
    import signal, time
    print('READY', flush=True)
    time.sleep(60)
"""
IGNORES_SIGINT = """
    import signal, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print('READY', flush=True)
    time.sleep(60)
"""
IGNORES_SIGINT_AND_SIGTERM = """
    import signal, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print('READY', flush=True)
    time.sleep(60)
"""


def test_stop_escalates_sigint_sigterm_sigkill_per_process_in_parallel(tmp_path):
    procs = [_ready_child(tmp_path, 'polite', POLITE),
             _ready_child(tmp_path, 'stubborn', IGNORES_SIGINT),
             _ready_child(tmp_path, 'deaf', IGNORES_SIGINT_AND_SIGTERM)]
    t0 = time.monotonic()
    records = stop_processes(procs, waits=FAST)
    elapsed = time.monotonic() - t0
    assert [r.ended_by for r in records] == ['SIGINT', 'SIGTERM', 'SIGKILL']
    assert all(not p.running for p in procs)
    assert records[2].returncode == -9 and not records[2].clean and records[0].clean
    # one bounded wait per step for all of them together, not one per process
    assert elapsed < sum(FAST) + 1.0
    # stopping again is a no-op that returns the same records
    assert stop_processes(procs, waits=FAST) == records


def test_stop_reaches_grandchildren_even_outside_the_process_group(tmp_path):
    marker = uuid.uuid4().hex
    env = dict(os.environ, MARK=marker)
    parent = _ready_child(tmp_path, 'parent', """
        import subprocess, sys, time
        # one grandchild in our group, one that left it (like a daemonizing worker)
        kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']),
                subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],
                                 start_new_session=True)]
        print('READY', flush=True)
        time.sleep(60)
    """, env=env)
    assert len(processes_with_env('MARK', marker)) == 3
    parent.stop(FAST)
    assert processes_with_env('MARK', marker) == []


def test_exited_process_is_recorded_as_exited(tmp_path):
    proc = ManagedProcess('quick', _python('print(1)'), log_path=tmp_path / 'q.log')
    proc.popen.wait(timeout=10)
    record = proc.stop(FAST)
    assert record.ended_by == 'exited' and record.returncode == 0 and record.seconds == 0


def test_processes_left_running_are_stopped_at_interpreter_exit(tmp_path):
    marker = uuid.uuid4().hex
    script = f"""
        import sys
        from socs_tcp.testing import ManagedProcess
        ManagedProcess('orphan?', [sys.executable, '-c', 'import time; time.sleep(60)'],
                       log_path={str(tmp_path / 'o.log')!r})
        ManagedProcess('orphan2?', [sys.executable, '-c',
                       'import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); '
                       'time.sleep(60)'], log_path={str(tmp_path / 'o2.log')!r})
        print('started', flush=True)
        sys.exit(3)   # no stop(), no with block
    """
    result = subprocess.run(_python(script), env=dict(os.environ, MARK=marker),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 3 and 'started' in result.stdout, result.stderr
    assert processes_with_env('MARK', marker) == []


def test_stack_exit_on_exception_stops_services_and_marks_children(tmp_path):
    with pytest.raises(RuntimeError, match='boom'):
        with OcsStack(tmp_path) as stack:
            svc = stack.start_service('echo', [sys.executable, '-m', 'socs_tcp.sim.echo',
                                               '--port', '0'])
            assert svc.port > 0
            assert [p.pid for p in processes_with_env(STACK_ENV, stack.id)] == [svc.process.pid]
            raise RuntimeError('boom')
    assert stack.stop_records[0].ended_by == 'SIGINT'
    assert processes_with_env(STACK_ENV, stack.id) == []
    with pytest.raises(StackError, match='stopped'):
        stack.start_service('again', [sys.executable, '-c', 'pass'])


def test_service_that_dies_before_announcing_is_reported_with_its_log(tmp_path):
    with OcsStack(tmp_path) as stack:
        with pytest.raises(StackError, match=r'exited with status 2(.|\n)*no such option'):
            stack.start_service('broken', _python("""
                import sys
                print('no such option --frobnicate', file=sys.stderr)
                sys.exit(2)
            """))
        with pytest.raises(ValueError, match="name 'broken' is already used"):
            stack.start_service('broken', [sys.executable, '-c', 'pass'])


def test_service_announcements_are_parsed_from_its_log(tmp_path):
    with OcsStack(tmp_path) as stack:
        svc = stack.start_service('two-ports', _python("""
            import time
            print('starting up', flush=True)
            print('PORT 1234', flush=True)
            print('CONTROL 5678', flush=True)
            time.sleep(60)
        """), expect=('PORT', 'CONTROL'))
        assert svc.ports == {'PORT': 1234, 'CONTROL': 5678} and svc.port == 1234


def test_agent_needs_crossbar_and_a_known_instance(tmp_path):
    with OcsStack(tmp_path) as stack:
        with pytest.raises(StackError, match='start_crossbar'):
            stack.start_agent('x', 'FakeDataAgent')
        with pytest.raises(ValueError, match='agent_class'):
            stack.add_agent('x', '')


def test_crossbar_config_has_the_three_local_edits():
    config = render_crossbar_config('test_realm', 'observatory', 18001)
    transport = config['workers'][0]['transports'][0]
    assert transport['endpoint'] == {'type': 'tcp', 'port': 18001, 'interface': '127.0.0.1'}
    assert transport['paths']['ws']['options']['auto_ping_size'] == 12
    assert transport['paths']['info'] == {'type': 'nodeinfo'}
    assert config['workers'][0]['realms'][0]['name'] == 'test_realm'
    assert 'observatory.' in json.dumps(config)
    with pytest.raises(ValueError, match='port'):
        render_crossbar_config('test_realm', 'observatory', 70000)


TOPOLOGY = """
hub:
  wamp_server: ws://crossbar:8001/ws
  wamp_http: http://crossbar:8001/call
  wamp_realm: site_realm
  address_root: site
hosts:
  ocs-docker:
    wamp_server: ws://elsewhere:8001/ws
    crossbar-timeout: 20
    agent-instances:
      - agent-class: CompressorAgent
        instance-id: compressor
        arguments:
          - ['--ip-address', 'compressor-sim']
          - ['--port', 5020]
          - ['--mode', 'acq']
      - agent-class: PowerSupplyAgent
        instance-id: psu
        arguments: ['--ip-address=psu-sim', '--port=5025']
"""


def test_site_config_topology_maps_hosts_and_ports_to_loopback(tmp_path):
    path = tmp_path / 'default.yaml'
    path.write_text(TOPOLOGY)
    site = SiteConfig.from_file(path, {'compressor-sim': ('127.0.0.1', 40001),
                                       'psu-sim': '127.0.0.1'})
    assert (site.realm, site.address_root) == ('site_realm', 'site')
    comp, psu = site.instances['compressor'], site.instances['psu']
    assert comp.host == 'ocs-docker'
    assert comp.flat_arguments() == ['--ip-address', '127.0.0.1', '--port', '40001',
                                     '--mode', 'acq']
    assert psu.flat_arguments() == ['--ip-address=127.0.0.1', '--port=5025']  # port kept
    out = site.write(tmp_path / 'out' / 'default.yaml', 'ws://127.0.0.1:9/ws',
                     'http://127.0.0.1:9/call', tmp_path / 'logs')
    written = yaml.safe_load(out.read_text())
    assert written['hub'] == {'wamp_server': 'ws://127.0.0.1:9/ws',
                              'wamp_http': 'http://127.0.0.1:9/call',
                              'wamp_realm': 'site_realm', 'address_root': 'site'}
    block = written['hosts']['ocs-docker']
    assert 'wamp_server' not in block and block['crossbar-timeout'] == 20
    assert block['log-dir'] == str(tmp_path / 'logs')
    assert [i['instance-id'] for i in block['agent-instances']] == ['compressor', 'psu']


def test_site_config_refuses_device_addresses_off_this_machine(tmp_path):
    path = tmp_path / 'default.yaml'
    path.write_text(TOPOLOGY)
    with pytest.raises(ValueError, match="'compressor' talks to 'compressor-sim'"):
        SiteConfig.from_file(path, {'psu-sim': '127.0.0.1'})
    with pytest.raises(ValueError, match=r"address_map\['psu-sim'\] must map to a loopback"):
        SiteConfig.from_file(path, {'psu-sim': '10.0.0.5'})


def test_scope_stops_what_started_inside_and_frees_its_names(tmp_path):
    echo = [sys.executable, '-m', 'socs_tcp.sim.echo', '--port', '0']
    with OcsStack(tmp_path, stop_waits=FAST) as stack:
        before = stack.start_service('before', echo)
        with stack.scope():
            inside = stack.start_service('inside', echo)
        assert not inside.process.running and inside.process.stop_record.ended_by == 'SIGINT'
        assert before.process.running and 'inside' not in stack.services
        assert stack.start_service('inside', echo).process.running   # the name is free again
    assert not before.process.running


def test_importing_the_harness_registers_no_exit_hook():
    # Twisted registers its own on import; count only what socs_tcp adds.
    code = """
        import atexit
        import twisted.internet.protocol, twisted.logger
        before = atexit._ncallbacks()
        import socs_tcp.testing, socs_tcp.testing.plugin, socs_tcp._demo.run, socs_tcp.sim.cli
        print(atexit._ncallbacks() - before)
    """
    done = subprocess.run(_python(code), capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == '0', done.stdout + done.stderr


def test_wait_for_returns_the_value_or_fails_naming_what_it_waited_for():
    values = iter([None, 0, {'voltage': 1.0}])
    assert wait_for(lambda: next(values), 2, 'readings', interval=0.01) == {'voltage': 1.0}
    with pytest.raises(AssertionError, match=r'timed out after 0.05 s waiting for readings; '
                                             r'last value: \[\]'):
        wait_for(list, 0.05, 'readings', interval=0.01)
