"""A device that answers as a recording says: ``socs-tcp simulate replay FILE``.

A recording (``SOCS_TCP_RECORD=FILE``, format in `socs_tcp._record`) holds
what a client sent to a device and what came back. `ReplaySimulator` serves
it: each request it reads is matched to the recorded requests, and the reply
recorded after it is sent. Being a `socs_tcp.sim.DeviceServer`, it takes the
whole fault vocabulary on top (``socs-tcp simulate replay FILE
--control-port 0``, then ``delay 2``, ``stop``, ``garbage ...``).

How requests are matched:

- Requests are framed by the terminator the recorded requests end with
  (``\\r\\n``, ``\\n`` or ``\\r``), or else each read is one request.
- Several requests sent before a reply came are write-only commands (no
  reply) followed by the one the reply answers.
- A request recorded several times is answered with its recorded replies in
  turn (a polled reading changes as it did), starting over after the last.
- A request never recorded gets no reply (logged), as from a device that
  ignores what it does not know.
- Bytes the device sent on connecting, before any request, are its greeting.

With ``recorded_timing`` each reply leaves as long after its request as it
did when recorded; an injected ``delay`` adds to that.
"""

from __future__ import annotations

import os
from collections import defaultdict

from twisted.logger import Logger

from socs_tcp import _record as record
from socs_tcp.sim._server import DeviceServer

__all__ = ['Exchange', 'ReplaySimulator', 'exchanges']

log = Logger(namespace='socs_tcp.sim.devices.replay')

_TERMINATORS = (b'\r\n', b'\n', b'\r')


class Exchange(tuple):
    """One recorded request, its reply (None: no reply) and the reply's latency in seconds."""

    __slots__ = ()

    def __new__(cls, request: bytes, reply: bytes | None, latency: float):
        return super().__new__(cls, (request, reply, latency))

    request = property(lambda self: self[0])
    reply = property(lambda self: self[1])
    latency = property(lambda self: self[2])


def _links(events: list[record.Event]) -> list[str]:
    return sorted({e.link for e in events})


def _terminator(groups: list[bytes]) -> bytes | None:
    for term in _TERMINATORS:
        if groups and all(g.endswith(term) for g in groups):
            return term
    return None


def exchanges(events: list[record.Event]) -> tuple[list[Exchange], bytes | None, bytes]:
    """Turn one link's events into exchanges; return them, the request terminator and the greeting.

    The terminator is None when the requests have none in common (each read
    is then one request); requests in the exchanges are without it.
    """
    # Runs of sent and received bytes, in order: [kind, first time, last time, data].
    runs: list[list] = []
    greeting = b''
    for e in events:
        if e.kind == record.OPEN:
            runs.append(['open', e.time, e.time, b''])
        elif e.kind in (record.SENT, record.RECEIVED):
            if runs and runs[-1][0] == e.kind:
                runs[-1][2] = e.time
                runs[-1][3] += e.data
            else:
                runs.append([e.kind, e.time, e.time, e.data])
    # A greeting: what came after the first open, before anything was sent.
    for i, run in enumerate(runs):
        if run[0] == record.SENT:
            break
        if run[0] == record.RECEIVED and i and runs[i - 1][0] == 'open':
            greeting = run[3]
            break
    sent = [run[3] for run in runs if run[0] == record.SENT]
    term = _terminator(sent)
    result: list[Exchange] = []
    for i, run in enumerate(runs):
        if run[0] != record.SENT:
            continue
        requests = run[3].split(term) if term else [run[3]]
        if term:
            requests = requests[:-1]  # ends with the terminator: the last piece is empty
        reply, latency = None, 0.0
        if i + 1 < len(runs) and runs[i + 1][0] == record.RECEIVED:
            reply, latency = runs[i + 1][3], max(0.0, runs[i + 1][1] - run[2])
        for request in requests[:-1]:
            result.append(Exchange(request, None, 0.0))
        if requests:
            result.append(Exchange(requests[-1], reply, latency))
    return result, term, greeting


def _whole_read(buf: bytearray) -> bytes | None:
    """Framer for requests without a terminator: whatever has arrived is one request."""
    if not buf:
        return None
    data = bytes(buf)
    buf.clear()
    return data


class ReplaySimulator(DeviceServer):
    """A `DeviceServer` answering as a recording of one device says.

    Parameters
    ----------
    recording : str or PathLike
        The recording file (see `socs_tcp._record`).
    link : str, optional
        Which device of the recording (``host:port``), if it holds several.
    recorded_timing : bool
        Send each reply as late as it came when recorded.
    host, port :
        Where to listen (see `DeviceServer`).
    **kwargs :
        Passed to `DeviceServer`.

    Raises
    ------
    ValueError
        The file is not a recording, holds no exchange for the link, or
        several devices without ``link`` saying which.
    """

    def __init__(self, recording: str | os.PathLike | None = None, *, link: str | None = None,
                 recorded_timing: bool = False, host: str = '127.0.0.1', port: int = 0,
                 **kwargs) -> None:
        if recording is None:
            raise ValueError('replay needs a recording: socs-tcp simulate replay FILE')
        events = record.read(recording)
        links = _links(events)
        if link is None:
            if len(links) != 1:
                raise ValueError(f'{recording}: holds {len(links)} devices {links}; '
                                 'say which with link=HOST:PORT (--link)')
            link = links[0]
        elif link not in links:
            raise ValueError(f'link must be one of {links} in {recording}, got {link!r}')
        found, term, greeting = exchanges([e for e in events if e.link == link])
        if not found:
            raise ValueError(f'{recording}: nothing was sent to {link}: nothing to replay')
        self.link = link
        self.recorded_timing = bool(recorded_timing)
        self.exchanges = found
        self._replies: dict[bytes, list[Exchange]] = defaultdict(list)
        for exchange in found:
            self._replies[exchange.request].append(exchange)
        self._next: dict[bytes, int] = defaultdict(int)
        self._extra_delay = 0.0
        framing = ({'terminator': term, 'reply_terminator': None} if term
                   else {'framer': _whole_read})
        super().__init__(self._answer, host=host, port=port,
                         greeting=greeting or None, **framing, **kwargs)

    def _answer(self, request: bytes) -> bytes | None:
        recorded = self._replies.get(request)
        if not recorded:
            log.info('replay {link}: {request!r} was never recorded; no reply',
                     link=self.link, request=request)
            return None
        n = self._next[request]
        self._next[request] = n + 1
        exchange = recorded[n % len(recorded)]
        if self.recorded_timing:
            # The delay fault shapes this very reply (it is read when the reply is queued).
            self._faults.delay = self._extra_delay + exchange.latency
        return exchange.reply

    def set_delay(self, seconds: float) -> None:
        """Delay each reply ``seconds`` more (on top of the recorded timing, if used)."""
        super().set_delay(seconds)
        self._extra_delay = self._faults.delay

    def reset_faults(self) -> None:
        """Clear every fault (the recorded timing, if used, stays)."""
        super().reset_faults()
        self._extra_delay = 0.0

    def rewind(self) -> None:
        """Answer each request with its first recorded reply again."""
        self._next.clear()
