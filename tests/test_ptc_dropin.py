"""Drop-in proof on real code: SOCS's Cryomech PTC driver, unchanged, on our base class.

``socs.tcp.TCPInterface`` is replaced by ``socs_tcp.TCPInterface`` before the
driver module is imported, so ``class PTC(TCPInterface)`` stands on ours.
"""

import importlib
import struct
import sys

import pytest
import pytest_twisted

import socs_tcp
from socs_tcp.sim import DeviceServer, mbap_framer
from tests.conftest import in_worker

# Register values, in the order of the PTC's register map (see breakdownReplyData).
FLOATS = {21: 11.5, 25: 26.25, 29: 31.0, 33: 72.5, 37: 85.0, 41: 84.5, 45: 290.0, 49: 289.5,
          53: 204.0, 57: 14.25, 61: 12345.0}   # first byte index of each float's low word


def register_reply(request: bytes) -> bytes:
    """The CPA's answer to 'read 0x35 input registers from 1', as the PTC decodes it."""
    tid = request[:2]
    data = bytearray(115)
    data[9:11] = struct.pack('>H', 3)        # operating state
    data[11:13] = struct.pack('>H', 1)       # compressor on
    for low, value in FLOATS.items():
        b = struct.pack('>f', value)
        data[low + 2:low + 4], data[low:low + 2] = b[0:2], b[2:4]  # the CPA's word order
    data[65:67] = struct.pack('>H', 0)       # pressure unit
    data[67:69] = struct.pack('>H', 2)       # temperature unit
    data[69:71] = struct.pack('>H', 4321)    # serial
    data[71:73] = bytes([7, 2])              # model
    data[73:75] = bytes([1, 4])              # software revision
    pdu = bytes([0x01, 0x04, 106]) + bytes(data[9:115])
    return tid + b'\x00\x00' + struct.pack('>H', len(pdu)) + pdu


@pytest.fixture
def PTC(monkeypatch):
    import socs.tcp
    monkeypatch.setattr(socs.tcp, 'TCPInterface', socs_tcp.TCPInterface)
    monkeypatch.delitem(sys.modules, 'socs.agents.cryomech_cpa.drivers', raising=False)
    drivers = importlib.import_module('socs.agents.cryomech_cpa.drivers')
    yield drivers.PTC
    sys.modules.pop('socs.agents.cryomech_cpa.drivers', None)


@pytest_twisted.inlineCallbacks
def test_socs_ptc_driver_reads_through_socs_tcp_across_a_device_restart(PTC):
    assert issubclass(PTC, socs_tcp.TCPInterface)
    device = DeviceServer(register_reply, framer=mbap_framer)
    device.start()

    def read(ptc):
        flag, data = ptc.get_data()
        assert flag is False, 'the PTC could not decode the reply'
        assert data['Operating_State'] == 3 and data['Compressor_State'] == 1
        assert data['Coolant_In_Temp'] == pytest.approx(11.5)
        assert data['Helium_Temp'] == pytest.approx(72.5)
        assert data['Motor_Current'] == pytest.approx(14.25)
        assert ptc.serial == 4321 and ptc.model == '7_2' and ptc.software_revision == '1.4'

    def body():
        ptc = PTC('127.0.0.1', port=device.port, timeout=1)
        read(ptc)
        device.blocking.stop_listening()
        device.blocking.drop_connections()
        with pytest.raises(ConnectionError):  # what the agent's degraded loop catches
            ptc.get_data()
        device.blocking.start()
        read(ptc)
        ptc.close()
    try:
        yield in_worker(body)
    finally:
        yield device.stop()
    assert len(device.requests) >= 2
