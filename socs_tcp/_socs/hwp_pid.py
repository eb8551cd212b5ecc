"""The HWP PID controller driver (``socs.agents.hwp_pid.drivers.pid_controller.PID``) on socs_tcp.

:func:`install` replaces SOCS's ``PID`` by a subclass of it whose transport is
a :class:`~socs_tcp._socs._byte_link.ByteLink`: every command, getter and decoder
is SOCS's own, only the connection and ``send_message`` change:

- construction never raises: a controller that is down at start-up is
  connected in the background (SOCS raised ``RuntimeError`` and the agent's
  main process died);
- each exchange is bounded (the 0.5 s SOCS leaves the controller to answer,
  plus ``timeout``, from when the request went out; after an unanswered
  request the line must first be quiet, which ``ByteLink.drain`` bounds),
  tried once, and fails with a :class:`LinkError` or :class:`LinkTimeout`
  (SOCS retried by recursing without bound). The getters'
  ``retry_multiple_times`` catches it, and so does the agent's action loop;
- the reply returned answers this request: input is flushed before it, the
  line is drained after an unanswered one, a reply to a read (``*R01``,
  ``*R02``, ``*X01``) must echo its command (or be an error reply, ``?43``),
  and of glued replies the last is taken (the controller answers in order).
"""

from __future__ import annotations

import importlib
import time
from typing import cast

from twisted.logger import Logger

from socs_tcp._socs._byte_link import ByteLink, LinkError, LinkTimeout
from socs_tcp._socs._shape import require_class

__all__ = ['install', 'uninstall']

log = Logger(namespace='socs_tcp._socs.hwp_pid')

_MODULE = 'socs.agents.hwp_pid.drivers.pid_controller'
_NAME = 'PID'
_METHODS = ('send_message', 'return_messages', 'get_freq', 'get_target', 'get_direction',
            'set_direction', 'declare_freq', 'tune_stop', 'tune_freq', 'set_pid', 'set_scale',
            '_establish_connection', '_decode_array')

#: Seconds SOCS's driver gives the controller before reading its reply.
ANSWER_TIME = 0.5
#: SOCS's socket timeout for the controller.
DEFAULT_TIMEOUT = 2.0


def _expected(msg: str) -> str | None:
    """The start of the reply a read command must get (``*X01`` -> ``X01``), or None."""
    if len(msg) >= 4 and msg[0] == '*' and msg[1] in 'RX':
        return msg[1:4]
    return None


def _choose(text: str, expected: str | None) -> str | None:
    """The reply in ``text``: the last piece that answers the request, or None.

    An error reply (``?43``: the controller rejected the command) answers
    any request: SOCS's driver returns it and its decoder reports the error.
    """
    pieces = [p.strip() for p in text.replace('\n', '\r').split('\r')]
    pieces = [p for p in pieces if p]
    if expected is not None:
        pieces = [p for p in pieces if p.startswith(expected) or p.startswith('?')]
    return pieces[-1] if pieces else None


def _make_class(base: type) -> type:
    """SOCS's ``PID`` with the transport of this module."""

    class PID(base):
        __doc__ = base.__doc__

        def __init__(self, ip, port, verb=False, timeout: float = DEFAULT_TIMEOUT):
            self.verb = verb
            self.ip = ip
            self.port = port
            self.hex_freq = '00000'
            self.conn = self._establish_connection(self.ip, int(self.port), timeout)

        @staticmethod
        def _establish_connection(ip, port, timeout=DEFAULT_TIMEOUT):
            """Return the line to the controller; it connects in the background if it cannot now."""
            return ByteLink(ip, port, timeout)

        def send_message(self, msg):
            """Send ``msg`` to the controller and return its reply (str, stripped).

            Raises
            ------
            TypeError
                ``msg`` is not a str.
            LinkError
                The controller cannot be reached, or the connection was lost.
            LinkTimeout
                No reply to ``msg`` within the time allowed.
            """
            if not isinstance(msg, str):
                raise TypeError(f'msg must be str, got {type(msg).__name__}')
            return _exchange(self.conn, msg)

    PID.__name__ = PID.__qualname__ = base.__name__
    PID.__module__ = __name__
    return PID


def _exchange(line: ByteLink, msg: str) -> str:
    expected = _expected(msg)
    try:
        line.send_request((msg + '\r\n').encode())
    except ConnectionError as exc:
        raise LinkError(f'PID controller at {line.address}: {exc}') from None
    # From the moment the request went out: waiting for a quiet line before it
    # (after an unanswered request) must not eat the controller's time to answer.
    started = time.monotonic()
    careful = line.owed
    deadline = started + ANSWER_TIME + line.timeout

    def answered(rx: bytearray) -> bool:
        return _choose(rx.decode(errors='replace'), expected) is not None

    lost: ConnectionError | None = None
    try:
        # As SOCS does: the controller has ANSWER_TIME to answer (and must not
        # be sent the next message sooner). After an unanswered request, the
        # whole time is listened through: the last reply is this one's.
        line.collect(started + ANSWER_TIME, None)
        line.collect(deadline, None if careful else answered)
    except ConnectionError as exc:
        lost = exc
    text = line.rx.decode(errors='replace')
    line.rx.clear()
    reply = _choose(text, expected)
    if reply is None:
        line.owed = True
        if lost is not None:
            raise LinkError(f'PID controller at {line.address}: {lost}') from None
        raise LinkTimeout(f'PID controller at {line.address}: no reply to {msg!r} '
                          f'(got {text!r})')
    if reply != text.strip():
        log.info('PID controller at {address}: kept {reply!r} of {text!r}',
                 address=line.address, reply=reply, text=text)
    line.owed = False
    return reply


# -- the swap ------------------------------------------------------------------

_original: type | None = None
_installed: type | None = None


def install() -> None:
    """Make ``pid_controller.PID`` a subclass of SOCS's on socs_tcp.

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
    require_class(f'{_MODULE}.{_NAME}', current, _METHODS, ('self', 'ip', 'port', 'verb'))
    base = cast(type, current)   # require_class refused anything but a class
    _original, _installed = base, _make_class(base)
    setattr(module, _NAME, _installed)
    log.info('{module}.{name} runs on socs_tcp', module=_MODULE, name=_NAME)


def uninstall() -> None:
    """Put SOCS's own ``PID`` back (nothing to do if not installed)."""
    global _original, _installed
    if _original is None:
        return
    module = importlib.import_module(_MODULE)
    if getattr(module, _NAME, None) is _installed:
        setattr(module, _NAME, _original)
    _original = _installed = None
