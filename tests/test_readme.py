"""The README: short, its two commands first, its example runs, its links lead somewhere."""

from __future__ import annotations

import re

from tests.docs_examples import ROOT, markdown_blocks, run_blocks

README = ROOT / 'README.md'


def test_readme_is_short():
    assert len(README.read_bytes()) <= 8 * 1024


def test_the_two_commands_come_first():
    first_block = re.search(r'```bash\n(.*?)```', README.read_text(), re.DOTALL).group(1)
    commands = [line.split('#')[0].strip() for line in first_block.splitlines()]
    assert commands == ['make demo', 'make test']


def test_install_from_a_path_and_a_git_url():
    text = README.read_text()
    assert 'pip install ./socs_tcp' in text and '@ git+' in text


def test_every_relative_link_exists():
    links = re.findall(r'\]\(([^)#]+)\)', README.read_text())
    local = [link for link in links if '://' not in link]
    assert len(local) >= 15
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing


def test_getting_started_runs_against_a_simulator(tmp_path):
    blocks = markdown_blocks(README)
    assert len(blocks) == 1 and len(blocks[0].code.strip().splitlines()) <= 16
    problems = run_blocks(blocks, tmp_path)
    assert not problems, '\n\n'.join(problems)
