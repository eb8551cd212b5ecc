"""The socs_tcp.testing pytest plugin, used the way the documentation says.

The test file of the User Guide's "Testing your own agent" page (its
``# file: test_*.py`` block) is written to a directory outside this
repository and run by a fresh ``pytest``, as a user would: the plugin must
come from the installed entry point, and the example may use nothing but the
documented fixtures and ``wait_for``. It runs one of our agents end to end
(private crossbar, simulator, ``ocs-agent-cli``, an outage).

In the slow tier (``make test-slow``). The default run loads the plugin from
the same installed entry point and uses its fixtures on real agents
(``simulated_device`` and ``run_agent`` in test_record_agent.py, ``ocs_stack``
in test_socs_agents_e2e.py), and runs a user's own test file in a fresh
``pytest`` in test_emulator.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from socs_tcp.testing import processes_with_env
from tests.docs_examples import DOCS, rst_blocks

PAGE = DOCS / 'user' / 'testing_agents.rst'

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(150)]


def docs_example() -> tuple[str, str]:
    """The name and code of the test file on the "Testing your own agent" page."""
    files = [(b.file_name, b.code) for b in rst_blocks(PAGE) if (b.file_name or '').startswith('test_')]
    assert len(files) == 1, f'expected one "# file: test_*.py" example on {PAGE}, found {files}'
    return files[0]


def test_the_documented_test_file_runs_as_a_users_own_test_file(tmp_path):
    name, code = docs_example()
    (tmp_path / name).write_text(code)
    # Every process the plugin starts inherits this marker, so survivors can be found.
    marker = uuid.uuid4().hex
    env = dict(os.environ, SOCS_TCP_PLUGIN_EXAMPLE=marker)
    done = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', name],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=140)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert '1 passed' in done.stdout, done.stdout
    assert processes_with_env('SOCS_TCP_PLUGIN_EXAMPLE', marker) == []
