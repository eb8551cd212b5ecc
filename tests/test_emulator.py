"""socs_tcp.testing.emulator: SOCS's device emulator over TCP, with injected faults.

Clients here are plain sockets, as SOCS drivers use; the emulator runs in its
own reactor thread whatever the test's reactor does.
"""

from __future__ import annotations

import socket
import time

import pytest

from socs_tcp.testing.emulator import DeviceEmulator, create_device_emulator
from tests._tools_support import wait_until

emulator = create_device_emulator({'*IDN?': 'ACME,1', 'READ?': ['1.0', '2.0']},
                                  relay_type='tcp', port=0)
bytes_emulator = create_device_emulator({b'\x01\x03': b'\x01\x03\x02\x00\x07'},
                                        relay_type='tcp', port=0, encoding=None)
reconnecting = create_device_emulator({'PING': 'PONG'}, relay_type='tcp', port=0, reconnect=True)


def connect(emu: DeviceEmulator) -> socket.socket:
    return socket.create_connection(('127.0.0.1', emu.socket_port), timeout=2)


def ask(sock: socket.socket, msg: bytes, timeout: float = 2.0) -> bytes:
    sock.settimeout(timeout)
    sock.sendall(msg)
    return sock.recv(4096)


def silent_for(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return True
    raise AssertionError(f'expected silence, got {data!r}')


def refused(emu_port: int) -> bool:
    try:
        socket.create_connection(('127.0.0.1', emu_port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False  # queued while the port closed: not refused yet, ask again
    return False


# -- SOCS's behaviour ---------------------------------------------------------------

def test_answers_from_the_dict_as_socs_does(emulator):
    with connect(emulator) as sock:
        assert ask(sock, b'*IDN?\r\n') == b'ACME,1'           # stripped, no terminator added
        assert ask(sock, b'READ?\n') == b'1.0'                 # a list answers in turn
        assert ask(sock, b'READ?\n') == b'2.0'
        sock.sendall(b'READ?\n')
        assert silent_for(sock, 0.2)                           # used up: no reply
        emulator.define_responses({'A': 'a'}, default_response='?')
        assert ask(sock, b'A\n') == b'a'
        assert ask(sock, b'whatever\n') == b'?'
        emulator.update_responses({'B': 'b'})
        assert ask(sock, b'B\n') == b'b'


def test_raw_bytes_with_encoding_none(bytes_emulator):
    with connect(bytes_emulator) as sock:
        assert ask(sock, b'\x01\x03') == b'\x01\x03\x02\x00\x07'


def test_without_reconnect_the_emulator_is_done_once_its_client_hung_up(emulator):
    with connect(emulator) as sock:
        assert ask(sock, b'*IDN?') == b'ACME,1'
    wait_until(lambda: refused(emulator.server.port), 5, 'the emulator to stop listening')


def test_with_reconnect_the_next_client_is_served(reconnecting):
    for _ in range(2):
        with connect(reconnecting) as sock:
            assert ask(sock, b'PING') == b'PONG'


def test_relay_types_and_ports():
    with pytest.raises(NotImplementedError, match="relay_type must be 'tcp'"):
        create_device_emulator({}, relay_type='telnet')
    socs_emulator = pytest.importorskip('socs.testing.device_emulator')
    serial = create_device_emulator({}, relay_type='serial')
    assert serial.__module__ == socs_emulator.__name__   # SOCS's own socat relay
    with pytest.raises(ValueError, match='port'):
        create_device_emulator({}, relay_type='tcp', port=70000)


def test_shutdown_frees_the_port_at_once_for_the_next_emulator():
    first = DeviceEmulator({'X': '1'})
    first.create_tcp_relay(0)
    port = first.socket_port
    first.shutdown()
    assert first.socket_port is None
    second = DeviceEmulator({'X': '2'})
    start = time.monotonic()
    second.create_tcp_relay(port)
    try:
        assert time.monotonic() - start < 1.0   # SOCS's waits a second in shutdown()
        with connect(second) as sock:
            assert ask(sock, b'X') == b'2'
    finally:
        second.shutdown()


# -- faults ---------------------------------------------------------------------------

def test_inject_delay_makes_replies_late(emulator):
    assert emulator.inject('delay', 0.5) == 'delay 0.5'
    with connect(emulator) as sock:
        sock.sendall(b'*IDN?')
        assert silent_for(sock, 0.3)
        sock.settimeout(2)
        assert sock.recv(100) == b'ACME,1'


def test_inject_silence_and_back(emulator):
    emulator.inject('silent', 'on')
    with connect(emulator) as sock:
        sock.sendall(b'*IDN?')
        assert silent_for(sock, 0.3)
        emulator.inject('silent', 'off')
        assert ask(sock, b'*IDN?') == b'ACME,1'


def test_inject_garbage_before_the_next_reply(emulator):
    emulator.inject('garbage', b'\xff\x00')
    with connect(emulator) as sock:
        assert ask(sock, b'*IDN?') == b'\xff\x00ACME,1'
        assert ask(sock, b'*IDN?') == b'ACME,1'


def test_inject_hangup_closes_and_keeps_listening(emulator):
    sock = connect(emulator)
    with sock:
        wait_until(lambda: emulator.server.connection_count == 1, 2, 'the connection')
        assert emulator.inject('hangup') == 'closed 1 connections'
        sock.settimeout(2)
        assert sock.recv(100) == b''               # the device hung up (FIN)
    with connect(emulator) as again:               # our fault, not the client's: still there
        assert ask(again, b'*IDN?') == b'ACME,1'


def test_inject_stop_and_start(emulator):
    port = emulator.socket_port
    emulator.inject('stop')
    assert refused(port)
    emulator.inject('start')
    with connect(emulator) as sock:
        assert ask(sock, b'*IDN?') == b'ACME,1'


def test_inject_hold_delivers_a_late_reply_to_the_next_connection_as_a_bridge_does(reconnecting):
    reconnecting.inject('hold', 0.3)
    with connect(reconnecting) as sock:
        sock.sendall(b'PING')
        assert silent_for(sock, 0.1)              # the client gives up and reconnects
    time.sleep(0.4)                               # the instrument answers meanwhile
    with connect(reconnecting) as sock:
        sock.settimeout(2)
        assert sock.recv(100) == b'PONG'          # the stale reply, before any request
        assert ask(sock, b'PING') == b'PONG'


def test_inject_says_what_is_wrong(emulator):
    with pytest.raises(ValueError, match="unknown command 'explode'"):
        emulator.inject('explode')
    with pytest.raises(ValueError, match=r"inject\('delay', 'soon'\): .*'soon'"):
        emulator.inject('delay', 'soon')
    emulator.shutdown()
    with pytest.raises(RuntimeError, match='not running'):
        emulator.inject('stop')
