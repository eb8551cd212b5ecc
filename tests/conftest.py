"""Shared fixtures.

pytest-twisted runs the reactor in the main thread, as an OCS agent does.
Blocking socs_tcp calls therefore run in worker threads (``in_worker``), the
way OCS runs blocking tasks and processes.
"""

import pytest
import pytest_twisted
from twisted.internet import threads

from socs_tcp.sim import DeviceServer


def in_worker(fn, *args, **kwargs):
    """Run blocking ``fn`` in the reactor's thread pool; return a Deferred."""
    return threads.deferToThread(fn, *args, **kwargs)


def echo(request: bytes) -> bytes:
    return request


@pytest.fixture
def line_device():
    """A line-terminated echo device on 127.0.0.1; stopped after the test."""
    server = DeviceServer(echo, terminator=b'\n')
    server.start()
    yield server
    pytest_twisted.blockon(server.stop())


class RecordingTap:
    """A tap (``socs_tcp._tap``) that keeps every event it is told, in order."""

    def __init__(self):
        self.events: list = []

    def opened(self, link):
        self.events.append(('opened', link))

    def sent(self, link, data):
        self.events.append(('sent', link, data))

    def received(self, link, data):
        self.events.append(('received', link, data))

    def closed(self, link, reason):
        self.events.append(('closed', link, reason))

    @property
    def told(self) -> list:
        """The bytes it was told, as ``('sent' or 'received', data)``, in order."""
        return [(event[0], event[2]) for event in self.events if event[0] in ('sent', 'received')]
