"""SOCS_TCP_RECORD in a running agent's environment: its device traffic is recorded (e2e)."""

from __future__ import annotations

import pytest

from socs_tcp import _record as record
from socs_tcp.testing import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_an_agent_launched_as_a_site_launches_it_records_its_device(simulated_device, run_agent,
                                                                      tmp_path, monkeypatch):
    folder = tmp_path / 'site'
    monkeypatch.setenv(record.RECORD_ENV, f'{folder}/')   # the agent inherits it
    device = simulated_device('psu')
    client = run_agent('PowerSupplyAgent',
                       ['--ip-address', '127.0.0.1', '--port', device.port, '--mode', 'acq'])
    wait_for(lambda: client.acq.status().session.get('data', {}).get('fields'), 30, 'readings')
    path = folder / f'127.0.0.1_{device.port}.rec'
    wait_for(lambda: path.exists() and any(e.kind == '<' for e in record.read(path)),
             10, 'replies in the recording')
    events = record.read(path)
    assert events[0].kind == record.OPEN
    assert any(e.kind == '>' and e.data.startswith(b'MEAS:VOLT?') for e in events), events
