"""Fixtures for SOCS's drivers on socs_tcp's transports, inside the test process.

``on_transports`` forgets SOCS's modules, then activates every transport as
``SOCS_TCP=1`` does (:mod:`socs_tcp._socs._activation`), so that the test
imports SOCS's unchanged drivers afresh, on socs_tcp; afterwards it puts
SOCS's classes back and forgets them again. The Prologix links get short
timeouts so that fault tests take a fraction of SOCS's fixed 5 s, and a
shorter pause after each write.

``SOCS_TCP_TESTS_PLAIN=1`` in the environment runs the same tests on plain
socs instead (no activation), to show what they catch: Prologix's fixed port
1234 is then really used, so run that inside ``unshare -n`` (see
``PROLOGIX_PORT``).
"""

from __future__ import annotations

import os

import pytest

from socs_compat_fixtures import forget_socs_modules
from socs_fake_bridge import FakeBridge
from socs_tcp import compat

PLAIN = os.environ.get('SOCS_TCP_TESTS_PLAIN') == '1'

#: Link timeout in these tests (SOCS: 5 s) and the quiet period that ends a drain.
TIMEOUT = 0.5
QUIET = 0.2
#: The pause after each write (SOCS: 0.1 s; the fake box needs none).
WRITE_PAUSE = 0.02


@pytest.fixture
def on_transports(monkeypatch):
    """SOCS's TCP transports on socs_tcp for this test (plain socs with SOCS_TCP_TESTS_PLAIN=1)."""
    from socs_tcp._socs import _activation
    from socs_tcp._socs._line import LineDevice
    forget_socs_modules()
    compat.uninstall()
    if not PLAIN:
        monkeypatch.setattr(LineDevice, 'link_timeout', TIMEOUT)
        monkeypatch.setattr(LineDevice, 'drain_quiet', QUIET)
        monkeypatch.setattr(LineDevice, 'write_pause', WRITE_PAUSE)
        _activation.activate(['tcp', 'prologix', 'scpi_psu', 'serial'])
    try:
        yield
    finally:
        _activation.deactivate()
        forget_socs_modules()


def prologix_bridge(respond, monkeypatch) -> FakeBridge:
    """A fake Prologix box: on a free port reached through SOCS_TCP_REDIRECT (plain: on 1234)."""
    bridge = FakeBridge(respond, port=1234 if PLAIN else 0)
    monkeypatch.setenv(compat.REDIRECT_ENV, f'127.0.0.1:1234=127.0.0.1:{bridge.port}')
    return bridge
