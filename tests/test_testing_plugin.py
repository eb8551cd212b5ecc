"""The socs_tcp.testing pytest plugin, used the way its README section says.

The README's "Testing your own agent" example is written to a file outside
this repository and run by a fresh ``pytest``, as a user would: the plugin
must come from the installed entry point, and the example may use nothing
but the documented fixtures and ``wait_for``. It runs one of our agents end
to end (private crossbar, simulator, ``ocs-agent-cli``, an outage).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from socs_tcp.testing import processes_with_env

README = Path(__file__).resolve().parent.parent / 'README.md'

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


def readme_example() -> str:
    """The first python block of the README section "Testing your own agent"."""
    section = README.read_text().split('\n## Testing your own agent\n', 1)[1].split('\n## ', 1)[0]
    match = re.search(r'```python\n(.*?)```', section, re.DOTALL)
    assert match, 'no python example in the README section "Testing your own agent"'
    return match.group(1)


def test_the_readme_example_runs_as_a_users_own_test_file(tmp_path):
    (tmp_path / 'test_my_agent.py').write_text(readme_example())
    # Every process the plugin starts inherits this marker, so survivors can be found.
    marker = uuid.uuid4().hex
    env = dict(os.environ, SOCS_TCP_PLUGIN_EXAMPLE=marker)
    done = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'test_my_agent.py'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=140)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert '1 passed' in done.stdout, done.stdout
    assert processes_with_env('SOCS_TCP_PLUGIN_EXAMPLE', marker) == []
