"""The HWP gripper client (``socs.agents.hwp_gripper.drivers.gripper_client.GripperClient``) on socs_tcp.

:func:`install` replaces SOCS's ``GripperClient`` by a subclass of it whose
transport is a :class:`~socs_tcp._socs._byte_link.ByteLink`; every command method
is SOCS's own (they all go through ``send_command``). What changes:

- construction fails, as SOCS's, when the gripper server cannot be reached
  (with a :class:`LinkTimeout`); once connected, outages are reconnected in
  the background;
- every exchange is bounded by ``timeout`` (SOCS had no timeout at all: a
  silent server blocked the agent for ever). Every failure is a
  :class:`LinkTimeout`, a ``TimeoutError``: the one exception the agent's
  ``monitor_state`` catches (a write on a lost connection is retried once on
  a new one first);
- a reply is one whole pickle, however it was split on the way (SOCS
  unpickled the first ``recv(4096)``); after an unanswered command the line
  is drained first, and the next reply is listened to for ``SETTLE`` seconds
  more: of the replies that came, the last answers the command (the server
  answers in order).
"""

from __future__ import annotations

import importlib
import io
import pickle
import time
from typing import cast

from twisted.logger import Logger

from socs_tcp._socs._byte_link import ByteLink, LinkTimeout
from socs_tcp._socs._shape import require_class

__all__ = ['install', 'uninstall']

log = Logger(namespace='socs_tcp._socs.hwp_gripper')

_MODULE = 'socs.agents.hwp_gripper.drivers.gripper_client'
_NAME = 'GripperClient'
_METHODS = ('send_command', '_init_connection', 'restart', 'close', 'power', 'home', 'move',
            'brake', 'emg', 'alarm', 'alarm_group', 'reset', 'inp', 'act', 'is_cold', 'force',
            'get_state')

#: Seconds a command may take to be answered (moves are answered when done).
DEFAULT_TIMEOUT = 30.0
#: After an unanswered command: how long the line must be quiet before the
#: next, and how long to listen for more replies after a whole one came.
SETTLE = 1.0
#: The port of the gripper server's restart service (as SOCS's ``restart``).
RESTART_PORT = 5656
#: Seconds ``restart`` waits for the server's processes to come back (as SOCS's).
RESTART_WAIT = 10.0


def _replies(data: bytes | bytearray) -> tuple[list[object], int]:
    """The whole pickles at the start of ``data``, and how many bytes they took."""
    stream = io.BytesIO(bytes(data))
    objects, used = [], 0
    while used < len(data):
        try:
            obj = pickle.Unpickler(stream).load()
        except Exception:   # incomplete (or not a pickle): wait for more, or give up at the deadline
            break
        objects.append(obj)
        used = stream.tell()
    return objects, used


def _make_class(base: type) -> type:
    """SOCS's ``GripperClient`` with the transport of this module."""

    class GripperClient(base):
        __doc__ = base.__doc__

        def __init__(self, ip, port, timeout: float = DEFAULT_TIMEOUT):
            self.ip = ip
            self.port = port
            self.timeout = timeout
            self.control_socket = self._init_connection(self.ip, self.port)
            self.data = b''

        def _init_connection(self, ip, port):
            """Return the line to ``ip:port``, connected; later outages reconnect in the background.

            Raises
            ------
            LinkTimeout
                No connection within ``timeout`` (SOCS: ``ConnectionRefusedError``).
                The agent's ``init_connection`` then fails and leaves its client
                unset, which ``monitor_state`` waits out; given a client that
                cannot answer, ``monitor_state`` crashes on its first poll (after
                its ``except TimeoutError`` it reads a reply it never got).
            """
            line = ByteLink(ip, port, self.timeout, quiet=SETTLE)
            if not line.interface.connected:
                why = line.interface.stats.get('last_error') or 'refused or unreachable'
                line.close()
                raise LinkTimeout(f'gripper server at {line.address}: cannot connect: {why}')
            return line

        def send_command(self, command):
            """Send ``command`` (str or bytes) and return the server's unpickled reply.

            Raises
            ------
            TypeError
                ``command`` is neither str nor bytes.
            LinkTimeout
                No whole reply within ``timeout``, or no connection.
            """
            if isinstance(command, str):
                data = command.encode('utf-8')
            elif isinstance(command, bytes):
                data = command
            else:
                raise TypeError(f'command must be str or bytes, got {type(command).__name__}')
            return _exchange(self.control_socket, data)

        def restart(self):
            entries = []
            try:
                self.close()
                entries.append('Previous connection closed')
            except BaseException:
                entries.append('Previous connection already closed')
            result = False
            service = ByteLink(self.ip, RESTART_PORT, self.timeout)
            try:
                service.send_request(b'reset\n')
                time.sleep(0.5)
                service.collect(time.monotonic() + self.timeout, lambda rx: len(rx) > 0)
                resp = service.rx.decode(errors='replace').strip()
                entries.append(f'Restart command response: {resp}')
                result = resp == 'Success'
            except ConnectionError as exc:
                entries.append(f'Restart command failed: {exc}')
            finally:
                service.close()
            time.sleep(RESTART_WAIT)
            self.control_socket = self._init_connection(self.ip, self.port)
            entries.append('Control socket reconnected')
            return {'result': result, 'log': entries}

        def close(self):
            """Close the connection to the gripper server."""
            self.control_socket.close()

    GripperClient.__name__ = GripperClient.__qualname__ = base.__name__
    GripperClient.__module__ = __name__
    return GripperClient


def _exchange(line: ByteLink, data: bytes) -> object:
    try:
        line.send_request(data)
    except ConnectionError as exc:
        line.owed = True
        raise LinkTimeout(f'gripper server at {line.address}: {exc}') from None
    careful = line.owed
    deadline = time.monotonic() + line.timeout
    lost: ConnectionError | None = None
    try:
        line.collect(deadline, lambda rx: bool(_replies(rx)[0]))
        if careful:
            line.collect(min(deadline, time.monotonic() + SETTLE), None)
    except ConnectionError as exc:
        lost = exc
    replies, used = _replies(line.rx)
    if not replies:
        line.owed = True
        why = lost or f'no whole reply within {line.timeout} s ({len(line.rx)} bytes came)'
        raise LinkTimeout(f'gripper server at {line.address}: {data!r}: {why}')
    if len(replies) > 1:
        log.info('gripper server at {address}: {k} late replies dropped',
                 address=line.address, k=len(replies) - 1)
    del line.rx[:used]
    line.owed = False
    return replies[-1]


# -- the swap ------------------------------------------------------------------

_original: type | None = None
_installed: type | None = None


def install() -> None:
    """Make ``gripper_client.GripperClient`` a subclass of SOCS's on socs_tcp.

    Raises
    ------
    socs_tcp.compat.CompatError
        SOCS's class does not have the shape this replaces.
    """
    global _original, _installed
    module = importlib.import_module(_MODULE)
    current = getattr(module, _NAME, None)
    if _installed is not None and current is _installed:
        return
    require_class(f'{_MODULE}.{_NAME}', current, _METHODS, ('self', 'ip', 'port'))
    base = cast(type, current)   # require_class refused anything but a class
    _original, _installed = base, _make_class(base)
    setattr(module, _NAME, _installed)
    log.info('{module}.{name} runs on socs_tcp', module=_MODULE, name=_NAME)


def uninstall() -> None:
    """Put SOCS's own ``GripperClient`` back (nothing to do if not installed)."""
    global _original, _installed
    if _original is None:
        return
    module = importlib.import_module(_MODULE)
    if getattr(module, _NAME, None) is _installed:
        setattr(module, _NAME, _original)
    _original = _installed = None
