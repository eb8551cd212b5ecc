"""The switch: ``socs_tcp.compat.install()`` and ``socs-tcp agent``.

``install()`` makes ``socs.tcp.TCPInterface`` socs_tcp's, so that SOCS drivers
imported afterwards stand on it; it refuses clearly when socs is missing, is
a release or shape we have not checked, or when it is too late. ``socs-tcp
agent`` runs an agent exactly as ``ocs-agent-cli`` does, after the switch,
and says once, in the agent's log, which TCP base is in use.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pytest_twisted

import socs_tcp
from socs_compat_fixtures import forget_socs_modules
from socs_tcp import compat
from tests.conftest import in_worker

BIN = Path(sys.executable).parent


@pytest.fixture
def switched_back():
    """Whatever the test does to socs.tcp, SOCS's class and fresh modules afterwards."""
    forget_socs_modules()
    yield
    compat.uninstall()
    forget_socs_modules()


def run_python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, env=env)


def test_importing_socs_tcp_never_changes_socs_tcp_module():
    # A fresh interpreter: every socs_tcp module imported, socs.tcp still SOCS's own.
    done = run_python('''
        import socs_tcp, socs_tcp.compat, socs_tcp._agent_cli, socs_tcp.cli
        import socs_tcp.sim.devices.cryomech_cpa, socs_tcp.sim.devices.lakeshore372
        import socs_tcp.sim.devices.pfeiffer_tpg366
        import socs.tcp
        from socs.agents.cryomech_cpa.drivers import PTC
        print(socs.tcp.TCPInterface.__module__, PTC.__mro__[1].__module__,
              socs_tcp.compat.installed())
    ''')
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ['socs.tcp', 'socs.tcp', 'False']


def test_install_makes_drivers_imported_afterwards_stand_on_socs_tcp(switched_back):
    import socs.tcp
    original = socs.tcp.TCPInterface
    compat.install()
    assert socs.tcp.TCPInterface is socs_tcp.TCPInterface and compat.installed()
    compat.install()                       # idempotent
    assert socs.tcp.TCPInterface is socs_tcp.TCPInterface
    from socs.agents.pfeiffer_tpg366.drivers import TPG366
    from socs.Lakeshore.Lakeshore372 import LS372
    assert issubclass(LS372, socs_tcp.TCPInterface) and issubclass(TPG366, socs_tcp.TCPInterface)
    assert 'socs_tcp 0.1.0' in compat.describe() and 'socs 0.6.4' in compat.describe()

    assert compat.uninstall() is True
    assert socs.tcp.TCPInterface is original and not compat.installed()
    assert compat.uninstall() is False
    assert 'not switched' in compat.describe()


def test_install_refuses_when_a_driver_already_stands_on_socs_own_class(switched_back):
    import socs.agents.cryomech_cpa.drivers  # noqa: F401 (imported on SOCS's class)
    with pytest.raises(compat.CompatError, match='too late.*socs.agents.cryomech_cpa.drivers.PTC'):
        compat.install(force=True)       # force is about versions, not about this
    assert not compat.installed()
    forget_socs_modules()                # a fresh import will do
    compat.install()
    assert compat.installed()


@pytest.mark.parametrize('version', ['0.5.1', '0.7.0', '1.0.0', 'unknown'])
def test_install_refuses_a_socs_release_not_checked_unless_forced(switched_back, monkeypatch,
                                                                  version):
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, 'version',
                        lambda name: version if name == 'socs' else real(name))
    monkeypatch.delenv(compat.FORCE_ENV, raising=False)
    with pytest.raises(compat.CompatError) as err:
        compat.install()
    assert f'socs {version} is outside' in str(err.value) and 'SOCS_TCP_FORCE=1' in str(err.value)
    assert not compat.installed()
    compat.install(force=True)
    assert compat.installed()


def test_force_from_the_environment_for_launchers_you_cannot_edit(switched_back, monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, 'version',
                        lambda name: '0.9.0' if name == 'socs' else real(name))
    monkeypatch.setenv(compat.FORCE_ENV, '1')
    compat.install()
    assert compat.installed()


def test_install_refuses_a_socs_tcp_of_another_shape(switched_back, monkeypatch):
    import socs.tcp

    class OldInterface:                  # socs.tcp before _connect and recv(bufsize)
        def __init__(self, ip_address, port, timeout):
            pass

        def send(self, msg):
            pass

        def recv(self):
            pass

    monkeypatch.setattr(socs.tcp, 'TCPInterface', OldInterface)
    with pytest.raises(compat.CompatError, match=r'no _connect\(\); recv\(\) does not take'):
        compat.install()
    assert socs.tcp.TCPInterface is OldInterface


@pytest_twisted.inlineCallbacks
def test_a_redirect_points_a_driver_with_a_fixed_port_at_the_device_elsewhere(switched_back, monkeypatch,
                                                                              line_device):
    monkeypatch.setenv(compat.REDIRECT_ENV, f'127.0.0.1:7777=127.0.0.1:{line_device.port}')
    compat.install()
    import socs.tcp
    assert compat.installed() and compat.REDIRECT_ENV in compat.describe()

    def body():
        dev = socs.tcp.TCPInterface('127.0.0.1', 7777, 2)   # as the Lakeshore 372 driver does
        try:
            dev.send(b'*IDN?\n')
            return dev.recv(), dev.port
        finally:
            dev.close()
    reply, port = yield in_worker(body)
    assert reply == b'*IDN?\n' and port == line_device.port


@pytest.mark.parametrize('text, words', [
    ('7777=127.0.0.1:1', 'no host'),
    ('127.0.0.1:7777', 'is not HOST:PORT=HOST:PORT'),
    ('a:1=b:70000', 'must be in 1..65535'),
    ('a:x=b:1', 'must be an int'),
])
def test_a_malformed_redirect_is_refused_naming_the_entry(switched_back, monkeypatch, text, words):
    monkeypatch.setenv(compat.REDIRECT_ENV, text)
    with pytest.raises(compat.CompatError, match=f'SOCS_TCP_REDIRECT: .*{words}'):
        compat.install()
    assert not compat.installed()


def test_install_says_clearly_when_socs_is_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, 'socs', None)      # import socs fails as if absent
    monkeypatch.delitem(sys.modules, 'socs.tcp', raising=False)
    with pytest.raises(compat.CompatError, match='socs is not installed'):
        compat.install()
    assert not compat.installed()
    assert 'socs is not installed' in compat.describe()


# -- socs-tcp agent ------------------------------------------------------------------

# An agent file for --agent/--entrypoint: reports what it was given and on which
# base, then runs its reactor briefly with logging to stdout (as OCS's runner does).
PROBE_AGENT = '''
import json, sys
import socs.tcp
from socs.agents.srs_cg635.drivers import SRSCG635Interface
from socs_tcp._reactor_owner import reactor_owner

def main(args=None):
    print('PROBE ' + json.dumps({'args': args, 'base': socs.tcp.TCPInterface.__module__,
                                 'prologix': SRSCG635Interface.__mro__[1].__module__,
                                 'owner': reactor_owner().value}), flush=True)
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    reactor.callLater(0.2, reactor.stop)
    reactor.run()
'''


def launch(launcher: list[str], tmp_path: Path, *args: str, env: dict | None = None):
    agent = tmp_path / 'probe_agent.py'
    agent.write_text(PROBE_AGENT)
    full_env = {k: v for k, v in os.environ.items()
                if k not in ('INSTANCE_ID', 'SITE_HUB', 'SITE_HTTP', 'SITE_HOST',
                             'CROSSBAR_TIMEOUT', compat.FORCE_ENV, 'SOCS_TCP')}
    full_env.update(env or {})
    return subprocess.run([*launcher, '--agent', str(agent), '--entrypoint', 'main', *args],
                          capture_output=True, text=True, timeout=60, env=full_env,
                          cwd=tmp_path)


def probe(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith('PROBE '))
    return json.loads(line[len('PROBE '):])


def test_socs_tcp_agent_hands_over_exactly_what_ocs_agent_cli_gets(tmp_path):
    env = {'INSTANCE_ID': 'probe-1', 'SITE_HUB': 'ws://127.0.0.1:1/ws',
           'CROSSBAR_TIMEOUT': '7'}
    args = ('--site-http', 'http://127.0.0.1:1/call', '--extra', 'x')
    ours = launch([str(BIN / 'socs-tcp'), 'agent'], tmp_path, *args, env=env)
    theirs = launch([str(BIN / 'ocs-agent-cli')], tmp_path, *args, env=env)
    seen_ours, seen_theirs = probe(ours), probe(theirs)
    assert seen_ours['args'] == seen_theirs['args']
    assert seen_ours['args'][:2] == ['--extra', 'x'] and 'probe-1' in seen_ours['args']
    assert seen_ours['base'] == 'socs_tcp._interface' and seen_theirs['base'] == 'socs.tcp'
    assert seen_ours['prologix'] == 'socs_tcp._socs.prologix'
    assert seen_theirs['prologix'] == 'socs.common.prologix_interface'
    assert seen_ours['owner'] == 'application'
    # one line, once the reactor runs, naming the transports and base in use; none from ocs-agent-cli
    assert ours.stdout.count('TCP base: socs_tcp') == 1, ours.stdout
    assert ours.stdout.count('SOCS_TCP: on socs_tcp: tcp (socs.tcp.TCPInterface), prologix (') == 1
    assert 'TCP base' not in theirs.stdout


def test_socs_tcp_agent_takes_the_transports_socs_tcp_selects(tmp_path):
    only = launch([str(BIN / 'socs-tcp'), 'agent'], tmp_path, '--instance-id', 'p',
                  env={'SOCS_TCP': 'prologix'})
    seen = probe(only)
    assert seen['base'] == 'socs.tcp' and seen['prologix'] == 'socs_tcp._socs.prologix'
    bad = launch([str(BIN / 'socs-tcp'), 'agent'], tmp_path, '--instance-id', 'p',
                 env={'SOCS_TCP': 'tcp,prologic'})
    assert bad.returncode == 2 and "'prologic' is not a transport" in bad.stderr


def test_socs_tcp_agent_exits_2_with_the_reason_when_socs_is_missing(tmp_path):
    # None in sys.modules makes 'import socs' fail as it does when socs is not installed
    code = ('import sys; sys.modules["socs"] = None; from socs_tcp.cli import main; '
            'sys.exit(main(["agent", "--instance-id", "x"]))')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert 'socs-tcp agent: socs is not installed' in done.stderr and 'ocs-agent-cli' in done.stderr


def test_socs_tcp_agent_refuses_an_unknown_socs_unless_forced(tmp_path):
    fake = tmp_path / 'fake_socs_meta'
    # A socs release we do not know: metadata of version 0.9.0 shadowing the real one.
    dist = fake / 'socs-0.9.0.dist-info'
    dist.mkdir(parents=True)
    (dist / 'METADATA').write_text('Metadata-Version: 2.1\nName: socs\nVersion: 0.9.0\n')
    env = {'PYTHONPATH': str(fake)}
    refused = launch([str(BIN / 'socs-tcp'), 'agent'], tmp_path, '--instance-id', 'p', env=env)
    assert refused.returncode == 2 and 'socs 0.9.0 is outside' in refused.stderr, refused.stderr
    forced = launch([str(BIN / 'socs-tcp'), 'agent'], tmp_path, '--instance-id', 'p',
                    env={**env, compat.FORCE_ENV: '1'})
    assert probe(forced)['base'] == 'socs_tcp._interface'
    assert 'Forced: switching anyway' in forced.stdout
