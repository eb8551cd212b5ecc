"""``SOCS_TCP`` in a process's environment: SOCS's transports switched at interpreter start.

Each test starts a fresh interpreter of this virtualenv, where socs_tcp is
installed with its ``socs_tcp-activation.pth`` (editable install: the test
suite's own; a wheel's content is checked too). Unset, the ``.pth`` line
imports nothing; set, SOCS's classes are replaced when SOCS's modules are
first imported, whoever starts the program (``python -m coverage run
agent.py``, as OCS's test runner does), and the agent's log says once which
transports were taken over.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from socs_compat_fixtures import forget_socs_modules
from socs_tcp._socs import _activation, _registry

ROOT = Path(__file__).resolve().parent.parent
PTH = 'socs_tcp-activation.pth'
ALL = ['tcp', 'prologix', 'scpi_psu', 'serial']   # the transports of this module's owner; others may exist


def python(code: str, env: dict[str, str] | None = None, args: tuple[str, ...] = (),
           cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` (or ``args``) in a fresh interpreter, with ``env`` over ours less SOCS_TCP*."""
    full = {k: v for k, v in os.environ.items() if not k.startswith('SOCS_TCP')}
    full.update(env or {})
    command = [sys.executable, *args] if args else [sys.executable, '-c', textwrap.dedent(code)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=full, cwd=cwd)


def report(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


WHAT_IS_LOADED = '''
    import json, sys
    print(json.dumps({
        'modules': sorted(m for m in sys.modules if m.split('.')[0] in ('socs', 'socs_tcp', 'twisted', 'serial')),
        'finders': [type(f).__module__ for f in sys.meta_path],
    }))
'''


def test_the_pth_file_is_installed_with_the_package():
    installed = Path(sysconfig.get_paths()['purelib']) / PTH
    assert installed.read_text() == (ROOT / PTH).read_text()


@pytest.mark.parametrize('value', [None, '', '0'])
def test_unset_or_off_the_line_imports_nothing(value):
    seen = report(python(WHAT_IS_LOADED, env={} if value is None else {'SOCS_TCP': value}))
    assert seen['modules'] == []
    assert 'socs_tcp._socs._activation' not in seen['finders']


def test_set_it_imports_no_socs_module_at_start_only_the_finder():
    seen = report(python(WHAT_IS_LOADED, env={'SOCS_TCP': '1'}))
    assert not [m for m in seen['modules'] if m.split('.')[0] in ('socs', 'serial')], seen['modules']
    assert seen['finders'][0] == 'socs_tcp._socs._activation'


SWITCHED = '''
    import json
    import serial
    import socs.tcp
    from socs.agents.cryomech_cpa.drivers import PTC
    from socs.agents.scpi_psu.drivers import PsuInterface, ScpiPsuInterface
    from socs.agents.srs_cg635.drivers import SRSCG635Interface
    from socs.agents.tektronix3021c.drivers import TektronixInterface
    def on(cls):
        return sorted({c.__module__ for c in cls.__mro__ if c.__module__.startswith('socs_tcp')})
    print(json.dumps({
        'tcp': on(socs.tcp.TCPInterface), 'cryomech': on(PTC), 'psu': on(PsuInterface),
        'direct_psu': on(ScpiPsuInterface), 'clock': on(SRSCG635Interface),
        'awg': on(TektronixInterface), 'serial': serial.protocol_handler_packages,
    }))
'''


def test_set_every_transport_is_switched_before_the_drivers_bind_it():
    seen = report(python(SWITCHED, env={'SOCS_TCP': '1'}))
    assert seen['tcp'] == ['socs_tcp._interface'] and seen['cryomech'] == ['socs_tcp._interface']
    for name in ('psu', 'clock', 'awg'):
        assert seen[name] == ['socs_tcp._socs._line', 'socs_tcp._socs.prologix'], (name, seen)
    assert seen['direct_psu'] == ['socs_tcp._socs._line', 'socs_tcp._socs.scpi_psu']
    assert seen['serial'][0] == 'socs_tcp._socs'


def test_a_selection_switches_only_the_transports_it_names():
    seen = report(python(SWITCHED, env={'SOCS_TCP': ' prologix , serial'}))
    assert seen['tcp'] == [] and seen['cryomech'] == [] and seen['direct_psu'] == []
    assert seen['clock'] == ['socs_tcp._socs._line', 'socs_tcp._socs.prologix']
    assert seen['serial'][0] == 'socs_tcp._socs'


@pytest.mark.parametrize('value, bad', [('tcp,prologx', "'prologx'"), ('yes', "'yes'"), ('tcp,,serial', "''")])
def test_a_bad_value_ends_the_process_with_one_line_naming_it(value, bad):
    done = python('print("the program ran")', env={'SOCS_TCP': value})
    assert done.returncode == 2 and done.stdout == ''
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert f'SOCS_TCP={value!r}' in lines[0] and f'{bad} is not a transport' in lines[0]
    assert 'valid: 1 (all), 0 (none)' in lines[0] and ', '.join(ALL) in lines[0]


def test_a_transport_this_socs_tcp_lacks_is_an_error_only_when_named(monkeypatch):
    ghost = _registry.Transport('ghost', 'socs.agents.ghost.drivers', 'socs.agents.ghost.drivers.Ghost')
    monkeypatch.setitem(_registry.TRANSPORTS, 'ghost', ghost)
    assert 'ghost' not in _registry.parse_selection('1')
    with pytest.raises(_registry.SelectionError, match=r"'ghost' is not part of this socs_tcp "
                                                        r'\(socs_tcp._socs.ghost is missing\)'):
        _registry.parse_selection('tcp,ghost')


def test_a_socs_release_not_checked_is_refused_when_socs_is_imported(tmp_path):
    fake = tmp_path / 'fake_socs_meta'
    dist = fake / 'socs-0.9.0.dist-info'
    dist.mkdir(parents=True)
    (dist / 'METADATA').write_text('Metadata-Version: 2.1\nName: socs\nVersion: 0.9.0\n')
    code = 'import socs.common.prologix_interface; print("the program went on")'
    env = {'PYTHONPATH': str(fake), 'SOCS_TCP': 'prologix'}
    refused = python(code, env=env)
    assert refused.returncode == 2 and 'went on' not in refused.stdout
    assert refused.stderr.splitlines()[-1].startswith('socs_tcp: SOCS_TCP: not switching '
                                                      'socs.common.prologix_interface.PrologixInterface')
    assert 'socs 0.9.0 is outside' in refused.stderr and 'SOCS_TCP_FORCE=1' in refused.stderr
    forced = python(code, env={**env, 'SOCS_TCP_FORCE': '1'})
    assert forced.returncode == 0 and 'went on' in forced.stdout, forced.stderr


# An agent as OCS's test runner starts it (python -m coverage run agent.py): SOCS
# drivers imported at the top, the reactor run with logging to stdout.
AGENT = '''
import json, sys
from ocs import ocs_agent  # noqa: F401 (imports the reactor, as every OCS agent)
from socs.agents.cryomech_cpa.drivers import PTC  # noqa: F401 (imports socs.tcp)
from socs.agents.scpi_psu.drivers import PsuInterface
from socs.agents.pfeiffer_tc400.drivers import PfeifferTC400  # noqa: F401 (imports serial)
from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver

print('BASES ' + json.dumps([c.__module__ for c in PsuInterface.__mro__]), flush=True)
globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
reactor.callLater(0.3, reactor.stop)
reactor.run()
'''


def test_an_agent_started_by_coverage_runs_on_socs_tcp_and_says_so_once(tmp_path):
    pytest.importorskip('coverage')
    pytest.importorskip('pfeiffer_vacuum_protocol')
    (tmp_path / 'agent.py').write_text(AGENT)
    done = python('', env={'SOCS_TCP': '1'}, args=('-u', '-m', 'coverage', 'run', 'agent.py'), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    bases = json.loads(next(x for x in done.stdout.splitlines() if x.startswith('BASES '))[6:])
    assert 'socs_tcp._socs.prologix' in bases
    lines = [x for x in done.stdout.splitlines() if 'SOCS_TCP: on socs_tcp:' in x]
    assert len(lines) == 1, done.stdout
    for name in ALL:
        assert f'{name} (' in lines[0]
    assert 'TCP base: socs_tcp' in lines[0]
    assert (tmp_path / '.coverage').exists()     # coverage really ran the agent


def test_a_wheel_ships_the_pth_file_at_its_root(tmp_path):
    from tests.test_docker_config import _has_build_backend
    # offline with this environment's setuptools when it can; else pip fetches the backend
    isolation = ['--no-build-isolation'] if _has_build_backend() else []
    done = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', *isolation,
                           '-w', str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    wheel = next(tmp_path.glob('socs_tcp-*.whl'))
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(PTH).decode() == (ROOT / PTH).read_text()
        assert 'socs_tcp/_socs/_activation.py' in archive.namelist()


def test_the_docker_images_build_context_has_what_ships_the_pth_file():
    from tests.test_docker_config import build_context_files
    files = {p.relative_to(ROOT).as_posix() for p in build_context_files()}
    assert {'setup.py', PTH, 'MANIFEST.in'} <= files     # MANIFEST.in: an sdist has it too


@pytest.fixture
def fresh_socs():
    forget_socs_modules()
    yield
    _activation.deactivate()
    forget_socs_modules()


def test_a_module_imported_already_is_switched_at_once_and_switched_back(fresh_socs):
    import socs.common.prologix_interface as module
    original = module.PrologixInterface
    _activation.activate(['prologix'])
    assert module.PrologixInterface is not original and issubclass(module.PrologixInterface, original)
    assert _activation.taken_over() == ['prologix']
    assert _activation.deactivate() == ['prologix']
    assert module.PrologixInterface is original
    assert _activation._finder not in sys.meta_path


def test_activate_refuses_an_unknown_name(fresh_socs):
    with pytest.raises(_registry.SelectionError, match="unknown transport 'tcpp'"):
        _activation.activate(['tcpp'])


class NotPrologix:                       # a PrologixInterface of another shape: no configure()
    def __init__(self, ip_address, gpibAddr):
        pass

    def conn_socket(self):
        pass

    def write(self, msg):
        pass

    def read(self):
        pass


def test_a_socs_class_of_another_shape_is_refused_naming_what_differs(fresh_socs, monkeypatch):
    from socs_tcp import compat
    monkeypatch.delenv(compat.FORCE_ENV, raising=False)
    import socs.common.prologix_interface as module
    monkeypatch.setattr(module, 'PrologixInterface', NotPrologix)
    with pytest.raises(compat.CompatError, match=r'PrologixInterface has no configure\(\)'):
        _activation.activate(['prologix'])
    assert module.PrologixInterface is NotPrologix and _activation.taken_over() == []
    monkeypatch.setenv(compat.FORCE_ENV, '1')
    _activation.activate(['prologix'])
    assert issubclass(module.PrologixInterface, NotPrologix)


def test_a_pyserial_without_a_handler_list_is_refused(fresh_socs, monkeypatch):
    import serial

    from socs_tcp import compat
    monkeypatch.setattr(serial, 'protocol_handler_packages', ('serial.urlhandler',))
    with pytest.raises(compat.CompatError, match='protocol_handler_packages is not a list'):
        _activation.activate(['serial'])


def test_a_twisted_program_that_is_no_socs_agent_gets_no_line():
    done = python('''
        import sys
        from twisted.internet import reactor
        from twisted.logger import globalLogBeginner, textFileLogObserver
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
        reactor.callLater(0.1, reactor.stop)
        reactor.run()
        print('ran')
    ''', env={'SOCS_TCP': '1'})
    assert done.returncode == 0 and 'ran' in done.stdout, done.stderr
    assert 'SOCS_TCP' not in done.stdout
