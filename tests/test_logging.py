"""What operators read: socs_tcp's log lines keep their reason in OCS's log files.

OCS agents write their log files through Twisted's legacy log system, which
owns some event keys (``message``, ``format``, ``why``, ``isError``, ...): a
line logged with one of those as a field loses it (``cannot connect (())``).
Here the text comes from the legacy system itself, as an OCS log file gets it.
"""

from __future__ import annotations

import time

import pytest_twisted
from twisted.logger import LegacyLogObserverWrapper, Logger
from twisted.python import log as legacy_log

import socs_tcp._interface
import socs_tcp._link_channel
from socs_tcp import Backoff, DeviceClientFactory, DeviceTimeout, NotConnected, TCPInterface
from tests.conftest import in_worker

#: Keys of Twisted's legacy event dicts (twisted.python.log): never a log field.
LEGACY_KEYS = {'message', 'format', 'isError', 'failure', 'why', 'system', 'time', 'printed'}


@pytest_twisted.inlineCallbacks
def test_every_link_log_line_says_why_in_the_legacy_log(line_device, monkeypatch):
    texts, keys = [], set()
    # The legacy system's view of an event, as OCS's log file observer gets it.
    to_legacy = LegacyLogObserverWrapper(lambda event: texts.append(legacy_log.textFromEventDict(event)))

    def observe(event: dict) -> None:
        keys.update(event)                 # the fields as socs_tcp logged them
        to_legacy(dict(event))
    monkeypatch.setattr(DeviceClientFactory, 'log', Logger(namespace='socs_tcp._factory', observer=observe))
    monkeypatch.setattr(socs_tcp._interface, 'log', Logger(namespace='socs_tcp._interface', observer=observe))
    monkeypatch.setattr(socs_tcp._link_channel, 'log', Logger(namespace='socs_tcp._link_channel', observer=observe))

    def body():
        dev = TCPInterface('127.0.0.1', line_device.port, 0.2, read_termination=b'\n',
                           backoff=Backoff(initial=0.05, max_delay=0.1))
        line_device.blocking.set_silent(True)
        try:
            dev.query(b'unanswered\n')
        except DeviceTimeout:
            pass
        line_device.blocking.set_silent(False)
        assert dev.query(b'back\n') == b'back'
        line_device.blocking.stop()            # connection lost, then refused
        deadline = time.monotonic() + 2
        while dev.stats['connect_failures'] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            dev.query(b'down\n')
        except NotConnected:
            pass
        dev.close()

    yield in_worker(body)
    text = '\n'.join(texts)
    assert 'aborting the connection (no reply within the timeout)' in text, text
    assert 'connection lost (' in text and 'connection lost (()' not in text, text
    assert 'cannot connect (' in text and 'efused' in text and '(())' not in text, text
    assert not keys & LEGACY_KEYS, keys & LEGACY_KEYS
