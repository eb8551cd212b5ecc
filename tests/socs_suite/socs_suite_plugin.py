"""pytest plugin that lets SOCS's own integration tests run without Docker.

SOCS's tests (``tests/`` of the simonsobs/socs repository) get their crossbar
from ``docker compose`` through pytest-docker's ``docker_services`` fixture,
on 127.0.0.1:18001 (their ``default.yaml``). This plugin provides that
fixture with crossbar from PyPI instead (`socs_tcp.testing`'s router
configuration), and a ``cov`` fixture when pytest-cov is absent; SOCS's test
files are used unchanged. Loaded by ``run.sh`` with ``-p socs_suite_plugin``.

It also keeps what each agent printed (ocs.testing reads it and throws it
away unless the agent failed) in ``$SOCS_SUITE_AGENT_LOGS``: that is where
the line naming the transports socs_tcp took over shows that a test really
ran on socs_tcp.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

CROSSBAR_PORT = 18001          # SOCS's tests/default.yaml
REALM, ADDRESS_ROOT = 'test_realm', 'observatory'

_counter = itertools.count(1)


@pytest.fixture(scope='session')
def docker_services():
    """A crossbar router on 127.0.0.1:18001 for the whole session (SOCS's compose service)."""
    from socs_tcp.testing._crossbar import Crossbar, find_executable

    cbdir = Path(tempfile.mkdtemp(prefix='socs-suite-crossbar-'))
    env = {k: v for k, v in os.environ.items() if k != 'SOCS_TCP'}   # the router is not an agent
    router = Crossbar(find_executable('crossbar', 'pip install crossbar'), cbdir / 'cb',
                      realm=REALM, address_root=ADDRESS_ROOT, port=CROSSBAR_PORT, env=env)
    try:
        router.wait_ready(timeout=60)
        yield router
    finally:
        record = router.process.stop()
        assert record.clean, f'crossbar did not stop cleanly: {record}'
        shutil.rmtree(cbdir, ignore_errors=True)


def pytest_sessionfinish(session, exitstatus):
    """Note which SOCS transports this pytest process itself ran on (tests that
    use SOCS's drivers in-process, e.g. moxa_serial's and pmx's)."""
    logs = os.environ.get('SOCS_SUITE_AGENT_LOGS')
    if not logs or os.environ.get('SOCS_TCP', '').strip() in ('', '0'):
        return
    from socs_tcp._socs import _activation
    Path(logs, '000-pytest-process.log').write_text(
        f'pytest process {os.getpid()}\n{_activation.describe()}\n')


def pytest_configure(config):
    if not config.pluginmanager.hasplugin('pytest_cov'):
        config.pluginmanager.register(_NoCoverage(), 'socs_suite_no_cov')
    _keep_agent_output()


class _NoCoverage:
    @pytest.fixture
    def cov(self):
        """pytest-cov's fixture, for tests that merge the agents' coverage: none collected."""
        return None


def _keep_agent_output() -> None:
    """Wrap ocs.testing's agent runner so the agent's output is saved, not dropped."""
    logs = os.environ.get('SOCS_SUITE_AGENT_LOGS')
    if not logs:
        return
    from ocs import testing

    original = testing._AgentRunner.shutdown
    if getattr(original, 'keeps_output', False):
        return

    def shutdown(self):
        proc = self.proc
        communicate = proc.communicate

        def keep(*args, **kwargs):
            out, err = communicate(*args, **kwargs)
            path = Path(logs) / f'{next(_counter):03d}-{self.agent_name}.log'
            path.write_text(f'$ {" ".join(self.cmd)}\n--- stdout\n{out or ""}\n'
                            f'--- stderr\n{err or ""}\n')
            return out, err

        proc.communicate = keep
        try:
            return original(self)
        finally:
            proc.communicate = communicate

    shutdown.keeps_output = True
    testing._AgentRunner.shutdown = shutdown
