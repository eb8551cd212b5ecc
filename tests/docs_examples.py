"""The code examples of the documentation site and the README, as the tests run them.

Rules (written for authors in docs/developer/testing.rst): every ``.. code-block:: python``
of a page (every fenced ``python`` block of a Markdown file) runs, in order, in one
namespace, in a fresh interpreter; a block whose first line is ``# file: NAME.py`` is written
to that file instead: ``test_*.py`` files are run by pytest as a user's own test file, others
as ``python NAME.py --help``, which must exit 0.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / 'docs'
FILE_MARK = re.compile(r'^# file: (\S+\.py)\s*$')


@dataclass
class Block:
    source: Path
    line: int          # 1-based line of the block's first code line in ``source``
    code: str

    @property
    def file_name(self) -> str | None:
        first = self.code.split('\n', 1)[0]
        match = FILE_MARK.match(first)
        return match.group(1) if match else None


def rst_blocks(path: Path) -> list[Block]:
    """The ``.. code-block:: python`` blocks of a reST file (options after the directive allowed)."""
    lines = path.read_text().split('\n')
    blocks = []
    i = 0
    while i < len(lines):
        if re.match(r'^(\s*)\.\. code-block:: python\s*$', lines[i]):
            indent = len(lines[i]) - len(lines[i].lstrip())
            i += 1
            while i < len(lines) and (lines[i].strip().startswith(':') or not lines[i].strip()):
                i += 1
            start, body = i, []
            while i < len(lines) and (not lines[i].strip() or
                                      len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i])
                i += 1
            code = textwrap.dedent('\n'.join(body)).strip('\n') + '\n'
            blocks.append(Block(path, start + 1, code))
        else:
            i += 1
    return blocks


def markdown_blocks(path: Path) -> list[Block]:
    """The fenced ``python`` blocks of a Markdown file."""
    text = path.read_text()
    return [Block(path, text[:m.start(1)].count('\n') + 1, m.group(1))
            for m in re.finditer(r'^```python\n(.*?)^```', text, re.DOTALL | re.MULTILINE)]


def doc_pages() -> dict[str, list[Block]]:
    """Every page of the site that has Python examples: ``'user/getting_started.rst' -> blocks``."""
    pages = {}
    for path in sorted(DOCS.rglob('*.rst')):
        if '_build' in path.parts:
            continue
        blocks = rst_blocks(path)
        if blocks:
            pages[str(path.relative_to(DOCS))] = blocks
    return pages


_RUNNER = '''\
import json, sys
namespace = {"__name__": "__main__"}
for source, line, code in json.load(open(sys.argv[1])):
    exec(compile("\\n" * (line - 1) + code, source, "exec"), namespace)
'''


def child_env(marker: str) -> dict[str, str]:
    """The environment examples run in: ``socs-tcp`` on PATH, and a marker to find survivors by."""
    env = dict(os.environ, SOCS_TCP_DOCS_EXAMPLE=marker, PYTHONUNBUFFERED='1')
    env['PATH'] = f'{Path(sys.executable).parent}{os.pathsep}{env.get("PATH", "")}'
    for name in ('OCS_CONFIG_DIR', 'INSTANCE_ID', 'SITE_HUB', 'SITE_HTTP', 'SITE_HOST'):
        env.pop(name, None)
    return env


def run_blocks(blocks: list[Block], workdir: Path, timeout: float = 120) -> list[str]:
    """Run a page's examples in ``workdir``; return the problems found (empty: all good).

    ``test_*.py`` file blocks are written but not run here (see ``test_testing_plugin``).
    """
    from socs_tcp.testing import processes_with_env

    marker = uuid.uuid4().hex
    env = child_env(marker)
    problems = []
    inline = []
    for block in blocks:
        name = block.file_name
        if name is None:
            inline.append((str(block.source), block.line, block.code))
        else:
            (workdir / name).write_text(block.code)
    if inline:
        (workdir / '_runner.py').write_text(_RUNNER)
        (workdir / '_blocks.json').write_text(json.dumps(inline))
        done = subprocess.run([sys.executable, '_runner.py', '_blocks.json'], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            problems.append(f'examples exited with {done.returncode}:\n{done.stdout[-3000:]}\n'
                            f'{done.stderr[-4000:]}')
    for block in blocks:
        name = block.file_name
        if name is None or name.startswith('test_'):
            continue
        done = subprocess.run([sys.executable, name, '--help'], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            problems.append(f'{block.source}:{block.line}: python {name} --help exited with '
                            f'{done.returncode}:\n{done.stderr[-3000:]}')
    survivors = processes_with_env('SOCS_TCP_DOCS_EXAMPLE', marker)
    if survivors:
        problems.append(f'processes the examples started are still running: {survivors}')
        for proc in survivors:
            proc.kill()
    return problems
