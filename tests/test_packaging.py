"""What a user can check about the package they installed: its version and its licence.

Building the sdist and wheel and using the wheel outside the repository is
`.ci/wheel-smoke` (``make wheel-smoke``), a CI step of its own.
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import socs_tcp
from socs_tcp.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_version_is_the_installed_distributions():
    assert socs_tcp.__version__ == version('socs_tcp')
    assert re.match(r'^\d+\.\d+', socs_tcp.__version__), socs_tcp.__version__


def test_socs_tcp_version_prints_it(capsys):
    try:
        main(['--version'])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f'socs-tcp {socs_tcp.__version__}'


def test_socs_tcp_version_from_the_installed_script():
    done = subprocess.run([Path(sys.executable).parent / 'socs-tcp', '--version'],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f'socs-tcp {socs_tcp.__version__}'


def test_licence_file_matches_the_declared_licence():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / 'setup.cfg')
    assert cfg['metadata']['license'] == 'BSD-2-Clause'
    text = (ROOT / 'LICENSE').read_text()
    assert 'BSD 2-Clause License' in text and 'the socs_tcp authors' in text
    assert 'version' not in cfg['metadata'], 'the version comes from git (setuptools-scm), not setup.cfg'
