"""The lint CI runs and the lint pre-commit runs are the same ruff."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_pre_commit_runs_the_ruff_version_the_test_extra_pins():
    setup = configparser.ConfigParser()
    setup.read(ROOT / 'setup.cfg')
    pins = re.findall(r'^ruff==(\S+)$', setup['options.extras_require']['test'], re.MULTILINE)
    assert len(pins) == 1, 'setup.cfg: the test extra pins ruff exactly once (ruff==X.Y.Z)'
    config = yaml.safe_load((ROOT / '.pre-commit-config.yaml').read_text())
    ruff = [r for r in config['repos'] if r['repo'].endswith('/ruff-pre-commit')]
    assert [r['rev'] for r in ruff] == [f'v{pins[0]}']
    assert [h['id'] for h in ruff[0]['hooks']] == ['ruff-check']


def test_ci_lints_before_it_tests():
    steps = [line.strip() for line in (ROOT / '.ci' / 'run').read_text().splitlines()
             if line.strip().startswith('make ')]
    assert 'make lint' in steps and steps.index('make lint') < steps.index('make test'), steps
