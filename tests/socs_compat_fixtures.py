"""Fixtures that run SOCS's own modules on socs_tcp inside the test process.

SOCS drivers bind ``socs.tcp.TCPInterface`` when their module is imported, so
``on_socs_tcp`` forgets every imported ``socs.*`` module (except ``socs.tcp``)
before switching with ``socs_tcp.compat.install()``: the test then imports
drivers and agents afresh, on socs_tcp. Afterwards it switches back and
forgets them again, so later tests import them on SOCS's own class.

Use from a test module with ``from socs_compat_fixtures import on_socs_tcp``.
"""

from __future__ import annotations

import sys

import pytest

from socs_tcp import compat


def forget_socs_modules() -> None:
    """Drop every imported ``socs.*`` module but ``socs`` and ``socs.tcp``."""
    for name in [n for n in sys.modules if n.startswith('socs.') and n != 'socs.tcp']:
        del sys.modules[name]


@pytest.fixture
def on_socs_tcp():
    """``socs.tcp.TCPInterface`` is socs_tcp's for this test; SOCS modules import afresh."""
    forget_socs_modules()
    compat.install()
    try:
        yield
    finally:
        compat.uninstall()
        forget_socs_modules()
