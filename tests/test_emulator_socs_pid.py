"""SOCS's hwp_pid driver, unchanged, on socs_tcp's emulator: a fault SOCS's own emulator cannot make.

SOCS tests this driver with ``socs.testing.device_emulator`` (its
``tests/agents/hwp_pid/test_pid_controller.py`` passes unchanged on
``socs_tcp.testing.emulator`` but for the import). This test sits beside
them: the controller goes away and comes back while the driver is in use,
and the driver must read the direction again. On SOCS's emulator it cannot
be written (no ``inject``); here it runs.
"""

import time

import pytest

pid_controller = pytest.importorskip('socs.agents.hwp_pid.drivers.pid_controller',
                                     reason='socs is not installed')

from socs_tcp.testing.emulator import create_device_emulator  # noqa: E402

pid_emu = create_device_emulator({'*R02': 'R02400000\r'}, relay_type='tcp', port=0,
                                 reconnect=False)


def test_get_direction_again_after_the_controller_restarted(pid_emu):
    pid = pid_controller.PID('127.0.0.1', pid_emu.socket_port)
    assert pid.get_direction().msg_type == 'read'
    pid_emu.inject('restart', 0.5)
    start = time.monotonic()
    decoded = pid.get_direction()
    assert decoded.msg_type == 'read', decoded
    assert time.monotonic() - start < 10
    assert pid_emu.server.request_count >= 2
