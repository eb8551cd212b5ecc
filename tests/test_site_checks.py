"""The checks ``socs-tcp agent`` makes before handing over to OCS: one clear line, no traceback."""

from __future__ import annotations

import inspect
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from socs_tcp import _agent_cli
from socs_tcp._site_checks import SiteCheckError, check_agent_args, refuse


def write_site(directory, instances=(('psu-1', 'PowerSupplyAgent'),), host='localhost', name='default'):
    directory.mkdir(parents=True, exist_ok=True)
    site = {'hub': {'wamp_server': 'ws://127.0.0.1:1/ws', 'wamp_http': 'http://127.0.0.1:1/call',
                    'wamp_realm': 'test_realm', 'address_root': 'observatory'},
            'hosts': {host: {'agent-instances': [
                {'agent-class': cls, 'instance-id': iid, 'arguments': [['--ip-address', '127.0.0.1']]}
                for iid, cls in instances]}}}
    path = directory / f'{name}.yaml'
    path.write_text(yaml.safe_dump(site))
    return path


def reason(argv, environ):
    with pytest.raises(SiteCheckError) as info:
        check_agent_args(argv, environ)
    message = str(info.value)
    assert '\n' not in message
    return message


def test_a_good_launch_passes(tmp_path):
    write_site(tmp_path)
    env = {'OCS_CONFIG_DIR': str(tmp_path)}
    check_agent_args(['--instance-id', 'psu-1'], env)
    # the agent's own flags, OCS's site options, '=' forms and argparse's unambiguous prefixes
    check_agent_args(['--instance-id=psu-1', '--port', '5025', '--mode=acq', '--site-host', 'elsewhere',
                      '--log-dir', str(tmp_path), '--sample-int', '1'], env)
    check_agent_args(['--site', 'none', '--instance-id', 'x'], {})   # OCS's "no site config"


def test_ocs_config_dir_unset(tmp_path):
    msg = reason(['--instance-id', 'psu-1'], {})
    assert msg.startswith('OCS_CONFIG_DIR is not set') and '--site-file' in msg


def test_ocs_config_dir_not_a_directory(tmp_path):
    assert 'is not a directory' in reason(['--instance-id', 'psu-1'], {'OCS_CONFIG_DIR': str(tmp_path / 'no')})


def test_site_file_missing(tmp_path):
    assert f'site config {tmp_path}/default.yaml does not exist' in reason(
        ['--instance-id', 'psu-1'], {'OCS_CONFIG_DIR': str(tmp_path)})
    assert 'no such file' in reason(['--instance-id', 'psu-1', '--site-file', str(tmp_path / 'x.yaml')], {})
    write_site(tmp_path, name='lab')
    check_agent_args(['--instance-id', 'psu-1', '--site', 'lab'], {'OCS_CONFIG_DIR': str(tmp_path)})


def test_site_file_not_a_site_config(tmp_path):
    (tmp_path / 'default.yaml').write_text('just: [a, list\n')
    assert 'cannot be read' in reason(['--instance-id', 'a'], {'OCS_CONFIG_DIR': str(tmp_path)})
    (tmp_path / 'default.yaml').write_text('- 1\n')
    assert 'is not an OCS site config' in reason(['--instance-id', 'a'], {'OCS_CONFIG_DIR': str(tmp_path)})


def test_unknown_instance_id_names_the_known_ones(tmp_path):
    write_site(tmp_path, [('psu-1', 'PowerSupplyAgent'), ('cmp-1', 'CompressorAgent')])
    msg = reason(['--instance-id', 'psu-9'], {'OCS_CONFIG_DIR': str(tmp_path)})
    assert "instance id 'psu-9' is not in host block 'localhost'" in msg and 'psu-1, cmp-1' in msg
    assert 'no --instance-id' in reason([], {'OCS_CONFIG_DIR': str(tmp_path)})
    check_agent_args([], {'OCS_CONFIG_DIR': str(tmp_path), 'INSTANCE_ID': 'cmp-1'})


def test_no_host_block(tmp_path):
    write_site(tmp_path, host='daq-1')
    msg = reason(['--instance-id', 'psu-1'], {'OCS_CONFIG_DIR': str(tmp_path)})
    assert 'no host block' in msg and 'daq-1' in msg and '--site-host' in msg
    check_agent_args(['--instance-id', 'psu-1', '--site-host', 'daq-1'], {'OCS_CONFIG_DIR': str(tmp_path)})


def test_agent_class_no_plugin_provides(tmp_path):
    write_site(tmp_path, [('x-1', 'NoSuchAgent')])
    msg = reason(['--instance-id', 'x-1'], {'OCS_CONFIG_DIR': str(tmp_path)})
    assert "agent class 'NoSuchAgent'" in msg and 'PowerSupplyAgent' in msg


def test_unknown_flags_are_named(tmp_path):
    write_site(tmp_path)
    env = {'OCS_CONFIG_DIR': str(tmp_path)}
    msg = reason(['--instance-id', 'psu-1', '--prot', '5025', '--verbose'], env)
    assert msg.startswith('unknown arguments --prot --verbose')
    assert 'ambiguous' not in msg
    # an ambiguous prefix is not accepted either (argparse refuses it too)
    assert reason(['--instance-id', 'psu-1', '--site-h', 'x'], env).startswith('unknown argument --site-h ')
    assert 'unknown argument --s ' in reason(['--instance-id', 'psu-1', '--s', '1'], env)


def test_agent_file_needs_an_entrypoint(tmp_path):
    write_site(tmp_path, [('mine', 'MyAgent')])
    env = {'OCS_CONFIG_DIR': str(tmp_path)}
    assert '--entrypoint' in reason(['--instance-id', 'mine', '--agent', 'my_agent.py'], env)
    check_agent_args(['--instance-id', 'mine', '--agent', 'my_agent.py', '--entrypoint', 'main',
                      '--anything'], env)


def test_refuse_writes_one_line():
    out = io.StringIO()
    assert refuse(['--instance-id', 'a'], {}, stream=out) is True
    assert out.getvalue().startswith('socs-tcp agent: OCS_CONFIG_DIR is not set')
    assert out.getvalue().count('\n') == 1


# The launcher as socs-tcp agent runs it: the checks, then _agent_cli.main. ``socs-tcp agent``
# itself once its main() calls refuse().
_LAUNCH = ('import sys; from socs_tcp import _site_checks, _agent_cli; '
           'sys.exit(2 if _site_checks.refuse(sys.argv[1:]) else _agent_cli.main(sys.argv[1:]))')
_WIRED = '_site_checks' in inspect.getsource(_agent_cli)
LAUNCHERS = [pytest.param([sys.executable, '-c', _LAUNCH], id='checks-then-agent-cli'),
             pytest.param(['socs-tcp', 'agent'], id='socs-tcp-agent',
                          marks=pytest.mark.skipif(not _WIRED, reason='socs_tcp._agent_cli does not call '
                                                   '_site_checks.refuse yet'))]


@pytest.mark.parametrize('launcher', LAUNCHERS)
@pytest.mark.parametrize('case', ['no-config-dir', 'no-site-file', 'unknown-instance', 'unknown-flag'])
def test_through_a_process_one_line_and_no_traceback(tmp_path, launcher, case):
    config = tmp_path / 'config'
    write_site(config)
    env = {'PATH': os.environ['PATH'], 'OCS_CONFIG_DIR': str(config)}
    argv = ['--instance-id', 'psu-1']
    if case == 'no-config-dir':
        del env['OCS_CONFIG_DIR']
    elif case == 'no-site-file':
        env['OCS_CONFIG_DIR'] = str(tmp_path)
    elif case == 'unknown-instance':
        argv = ['--instance-id', 'psu-7']
    else:
        argv += ['--no-such-flag']
    if launcher[0] == 'socs-tcp':
        launcher = [str(Path(sys.executable).parent / 'socs-tcp'), 'agent']
    done = subprocess.run(launcher + argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert 'Traceback' not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('socs-tcp agent: '), done.stderr
