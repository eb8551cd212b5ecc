"""The states of a link to a device, and the one table of what each event does in each.

Words for ending a connection, used with these meanings only (here, in
``_factory`` and ``_protocol``):

abort
    We end a connection ourselves, at once (``abortConnection``): nothing
    more is read from it or written to it.
lost
    A connection has ended, whoever ended it (the device, the network, or our
    abort). Only then is a new one made: single-client devices refuse a
    second one.
reconnect
    Abort the connection and make a new one once it is lost (a reply timed
    out: the connection can no longer be trusted).
release
    Abort the connection, or stop the attempt under way, and stay idle until
    a call needs the device (``comm.close()``).
close
    End the link for good: no connection and no attempt ever again.

(Bytes, not connections, are *dropped*: stale input, unsent output.)

``DeviceClientFactory.handle(event, detail)`` looks up
``TRANSITIONS[state.name, event]``: the name of the next state and the action,
a function here that does everything the transition does and returns the
next state. An action first builds the next state and hands it to the link
(``link._enter``), then does its other effects: callbacks it fires see the
link in its new state; an event they send is applied once the action is
done. A pair missing from the table means the event changes nothing in that
state. The actions are the factory's own code, kept here beside the table:
they use its private members (``_enter``, ``_dial``, ``_waiters``, ...),
which are no API of the exported factory class.

Each state holds what exists only in it: the protocol of the connection
(``Connected``), the scheduled retry (``Waiting``), the Deferreds waiting for
the last connection to be lost (``Closing``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from twisted.internet.defer import Deferred
from twisted.internet.error import NotConnectingError

from socs_tcp._errors import DeviceDisconnected, NotConnected
from socs_tcp._protocol import DeviceProtocol
from socs_tcp._retry import Retry

if TYPE_CHECKING:
    from socs_tcp._factory import DeviceClientFactory


class LinkState(enum.Enum):
    """The name of where the link to the device stands."""

    IDLE = 'idle'                    # no connection and none wanted: not started yet, or released
    CONNECTING = 'connecting'        # an attempt is under way
    CONNECTED = 'connected'
    WAITING = 'waiting'              # the next attempt is scheduled (backoff)
    RECONNECTING = 'reconnecting'    # we aborted the connection; a new one follows once it is lost
    RELEASING = 'releasing'          # we aborted the connection; the link idles once it is lost
    CLOSING = 'closing'              # closed; the aborted connection is not lost yet
    CLOSED = 'closed'                # for good, and no connection left


class LinkEvent(enum.Enum):
    """What can happen to a link (the ``detail`` each one carries)."""

    CONNECT = 'connect'      # someone needs the device: connect now, skipping any backoff wait
    RETRY = 'retry'          # the backoff wait is over
    MADE = 'made'            # the attempt succeeded (the new DeviceProtocol)
    FAILED = 'failed'        # the attempt failed (its Failure)
    LOST = 'lost'            # the connection was lost (its Failure)
    RECONNECT = 'reconnect'  # reconnect (why, a str)
    RELEASE = 'release'      # release (why, a str)
    CLOSE = 'close'          # close (a CloseRequest)


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """Why the link closes, and the Deferred to fire once its last connection is lost."""

    why: str                 # 'closed', 'ended: the reactor is stopping', ...
    done: Deferred


# -- the states ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Idle:
    name: ClassVar[LinkState] = LinkState.IDLE


@dataclass(frozen=True, slots=True)
class Connecting:
    name: ClassVar[LinkState] = LinkState.CONNECTING


@dataclass(frozen=True, slots=True)
class Connected:
    name: ClassVar[LinkState] = LinkState.CONNECTED
    protocol: DeviceProtocol


@dataclass(frozen=True, slots=True)
class Waiting:
    name: ClassVar[LinkState] = LinkState.WAITING
    retry: Retry


@dataclass(frozen=True, slots=True)
class Reconnecting:
    name: ClassVar[LinkState] = LinkState.RECONNECTING


@dataclass(frozen=True, slots=True)
class Releasing:
    name: ClassVar[LinkState] = LinkState.RELEASING


@dataclass(frozen=True, slots=True)
class Closing:
    name: ClassVar[LinkState] = LinkState.CLOSING
    done: list[Deferred] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Closed:
    name: ClassVar[LinkState] = LinkState.CLOSED


State = Idle | Connecting | Connected | Waiting | Reconnecting | Releasing | Closing | Closed
Action = Callable[['DeviceClientFactory', State, Any], State]  # (link, state, the event's detail)


# -- the actions ---------------------------------------------------------------

def dial(link: DeviceClientFactory, state: State, _: Any) -> State:
    """Start a connection attempt."""
    new = link._enter(Connecting())
    link._dial()
    return new


def dial_now(link: DeviceClientFactory, state: State, _: Any) -> State:
    """Start an attempt now, cancelling the scheduled retry (if it has not run)."""
    assert isinstance(state, Waiting)
    state.retry.cancel()
    return dial(link, state, None)


def adopt(link: DeviceClientFactory, state: State, protocol: Any) -> State:
    """The attempt succeeded: the connection carries the link; callers waiting for one get it."""
    new = link._enter(Connected(protocol))
    link.resetDelay()
    link.generation += 1
    protocol.generation = link.generation
    link.stats.connects += 1
    link.stats.last_connect_time = link.reactor.seconds()
    link.bridge.connection_up(link.generation, protocol.socket(), protocol.transport)
    link.log.info('{address}: connected', address=link.address)
    link._outage_logged = False
    waiters, link._waiters = link._waiters, []
    for d, _ in waiters:
        if not d.called:  # cancelled by the callback of one fired before it
            d.callback(protocol)
    return new


def attempt_failed(link: DeviceClientFactory, state: State, reason: Any) -> State:
    """Count and report the failure, fail the callers that wait for no more, retry later."""
    new = link._enter(Waiting(link.retry()))
    cause = reason.getErrorMessage()
    link.stats.connect_failures += 1
    link.stats.record_error(f'cannot connect: {cause}')
    error = NotConnected(f'cannot connect to {link.address}: {cause}')
    link.bridge.attempt_failed(error)
    if not link._outage_logged:
        link._outage_logged = True  # once per outage: dead devices must not flood the log
        link.log.warn('{address}: cannot connect ({reason}); retrying in the background',
                      address=link.address, reason=cause)
    link._fail_waiters(error)
    return new


def setup_failed(link: DeviceClientFactory, state: State, reason: Any) -> State:
    """A connection lost before it was made (its setup failed): retry later."""
    return link._enter(Waiting(link.retry()))


def connection_lost(link: DeviceClientFactory, state: State, reason: Any) -> State:
    """The device or the network ended the connection: say why; retry soon, spread over links."""
    assert isinstance(state, Connected)
    new = link._enter(Waiting(link.retry(after_loss=True)))
    cause = reason.getErrorMessage()
    count_lost(link, cause)
    link.log.info('{address}: connection lost ({reason})', address=link.address, reason=cause)
    link.bridge.connection_down(state.protocol.generation, DeviceDisconnected(
        f'connection to {link.address} lost: {cause}'))
    return new


def abort_to_reconnect(link: DeviceClientFactory, state: State, why: Any) -> State:
    """Reconnect: abort the connection (callers see it end at once); a new one once it is lost."""
    assert isinstance(state, Connected)
    new = link._enter(Reconnecting())
    abort_connection(link, state.protocol, str(why))
    return new


def abort_to_release(link: DeviceClientFactory, state: State, why: Any) -> State:
    """Release: abort the connection (callers see it end at once); idle once it is lost."""
    assert isinstance(state, Connected)
    new = link._enter(Releasing())
    abort_connection(link, state.protocol, str(why))
    return new


def reconnect_instead(link: DeviceClientFactory, state: State, _: Any) -> State:
    """Someone needs the device while it is being released: connect once the connection is lost."""
    return link._enter(Reconnecting())


def release_instead(link: DeviceClientFactory, state: State, _: Any) -> State:
    """Released while reconnecting: idle once the connection is lost."""
    return link._enter(Releasing())


def lost_to_reconnect(link: DeviceClientFactory, state: State, reason: Any) -> State:
    """The connection we aborted is lost: make the new one."""
    count_lost(link, reason.getErrorMessage())
    return dial(link, state, None)


def lost_to_idle(link: DeviceClientFactory, state: State, reason: Any) -> State:
    """The connection we aborted is lost: stay idle until a call needs the device."""
    new = link._enter(Idle())
    count_lost(link, reason.getErrorMessage())
    return new


def stop_attempt(link: DeviceClientFactory, state: State, why: Any) -> State:
    """Release while connecting: stop the attempt (its failure then changes nothing)."""
    new = link._enter(Idle())
    stop_connecting(link)
    end_waits(link, why)
    return new


def cancel_retry(link: DeviceClientFactory, state: State, why: Any) -> State:
    """Release while waiting: no retry."""
    assert isinstance(state, Waiting)
    new = link._enter(Idle())
    state.retry.cancel()
    end_waits(link, why)
    return new


def close(link: DeviceClientFactory, state: State, request: Any) -> State:
    """Close: stop whatever is under way, abort the connection, fail every caller."""
    has_connection = isinstance(state, (Connected, Reconnecting, Releasing))
    new = link._enter(Closing([request.done]) if has_connection else Closed())
    if isinstance(state, Connected):
        abort_connection(link, state.protocol, request.why)
    elif isinstance(state, Waiting):
        state.retry.cancel()
    elif isinstance(state, Connecting):
        stop_connecting(link)
    link._release_everyone(NotConnected(f'connection to {link.address} {request.why}'))
    if isinstance(new, Closed):
        closed_for_good(link, [request.done])
    return new


def wait_closing(link: DeviceClientFactory, state: State, request: Any) -> State:
    """Closed already, the last connection not lost yet: this caller waits for it too."""
    assert isinstance(state, Closing)
    state.done.append(request.done)
    return state


def already_closed(link: DeviceClientFactory, state: State, request: Any) -> State:
    """Closed, no connection left: nothing to wait for."""
    request.done.callback(None)
    return state


def closed_and_lost(link: DeviceClientFactory, state: State, reason: Any) -> State:
    """The last connection of a closed link is lost: whoever waited for that hears it."""
    assert isinstance(state, Closing)
    new = link._enter(Closed())
    count_lost(link, reason.getErrorMessage())
    closed_for_good(link, state.done)
    return new


def abort_late(link: DeviceClientFactory, state: State, protocol: Any) -> State:
    """A connection made after the link was released or closed (too late to stop): not kept."""
    protocol.abort()
    return state


# -- effects shared by several actions ----------------------------------------------

def abort_connection(link: DeviceClientFactory, protocol: DeviceProtocol, why: str) -> None:
    link.bridge.connection_down(protocol.generation, DeviceDisconnected(
        f'connection to {link.address} aborted: {why}'))
    link.log.info('{address}: aborting the connection ({reason})', address=link.address, reason=why)
    protocol.abort()


def count_lost(link: DeviceClientFactory, cause: str) -> None:
    link.stats.disconnects += 1
    link.stats.record_error(f'connection lost: {cause}')


def closed_for_good(link: DeviceClientFactory, done: list[Deferred]) -> None:
    """No connection left: the reactor need not wait for this link to stop; tell whoever waits."""
    link._unwatch_shutdown()
    for d in done:
        d.callback(None)


def end_waits(link: DeviceClientFactory, why: str) -> None:
    """Released before a connection came: nothing connects in idle, so ``whenConnected`` waits end."""
    link._fail_waiters(NotConnected(f'connection to {link.address} released: {why}'), everyone=True)


def stop_connecting(link: DeviceClientFactory) -> None:
    if link.connector is not None:
        try:
            link.connector.stopConnecting()
        except NotConnectingError:
            pass


S, E = LinkState, LinkEvent

#: (state, event) -> (next state, action).
TRANSITIONS: dict[tuple[LinkState, LinkEvent], tuple[LinkState, Action]] = {
    (S.IDLE, E.CONNECT): (S.CONNECTING, dial),
    (S.IDLE, E.CLOSE): (S.CLOSED, close),

    (S.CONNECTING, E.MADE): (S.CONNECTED, adopt),
    (S.CONNECTING, E.FAILED): (S.WAITING, attempt_failed),
    (S.CONNECTING, E.LOST): (S.WAITING, setup_failed),
    (S.CONNECTING, E.RELEASE): (S.IDLE, stop_attempt),
    (S.CONNECTING, E.CLOSE): (S.CLOSED, close),

    (S.CONNECTED, E.LOST): (S.WAITING, connection_lost),
    (S.CONNECTED, E.RECONNECT): (S.RECONNECTING, abort_to_reconnect),
    (S.CONNECTED, E.RELEASE): (S.RELEASING, abort_to_release),
    (S.CONNECTED, E.CLOSE): (S.CLOSING, close),

    (S.WAITING, E.CONNECT): (S.CONNECTING, dial_now),
    (S.WAITING, E.RETRY): (S.CONNECTING, dial_now),
    (S.WAITING, E.RELEASE): (S.IDLE, cancel_retry),
    (S.WAITING, E.CLOSE): (S.CLOSED, close),

    (S.RECONNECTING, E.LOST): (S.CONNECTING, lost_to_reconnect),
    (S.RECONNECTING, E.RELEASE): (S.RELEASING, release_instead),
    (S.RECONNECTING, E.CLOSE): (S.CLOSING, close),

    (S.RELEASING, E.LOST): (S.IDLE, lost_to_idle),
    (S.RELEASING, E.CONNECT): (S.RECONNECTING, reconnect_instead),
    (S.RELEASING, E.CLOSE): (S.CLOSING, close),

    (S.CLOSING, E.LOST): (S.CLOSED, closed_and_lost),
    (S.CLOSING, E.CLOSE): (S.CLOSING, wait_closing),
    (S.CLOSED, E.CLOSE): (S.CLOSED, already_closed),

    (S.IDLE, E.MADE): (S.IDLE, abort_late),
    (S.CLOSED, E.MADE): (S.CLOSED, abort_late),
}
