"""The states of a link to a device and the one table of transitions between them.

``DeviceClientFactory`` owns the state, in the reactor thread, and changes it
only by looking up ``TRANSITIONS[state, event]``: the new state and the
name of the factory method that acts on the change (or None: nothing to do).
A pair missing from the table means the event changes nothing in that state.
"""

from __future__ import annotations

import enum


class LinkState(enum.Enum):
    """Where the link to the device stands."""

    IDLE = 'idle'                    # no connection and none wanted: not started yet, or put to rest
    CONNECTING = 'connecting'        # an attempt is under way
    CONNECTED = 'connected'
    WAITING = 'waiting'              # the next attempt is scheduled (backoff)
    DROPPING = 'dropping'            # we aborted the connection; a new one follows once it is gone
    RESTING = 'resting'              # we aborted the connection; the link idles once it is gone
    CLOSED = 'closed'                # for good


class LinkEvent(enum.Enum):
    """What can happen to a link."""

    CONNECT = 'connect'    # someone needs the device: connect now, skipping any backoff wait
    STARTED = 'started'    # a connection attempt began (the backoff timer fired)
    MADE = 'made'          # the attempt succeeded
    FAILED = 'failed'      # the attempt failed
    DROP = 'drop'          # abort the connection and replace it (a reply timed out, say)
    REST = 'rest'          # abort the connection and stay idle until CONNECT (``comm.close()``)
    LOST = 'lost'          # the connection ended
    CLOSE = 'close'        # stop for good (``close()``, the reactor stopping)


S, E = LinkState, LinkEvent

#: (state, event) -> (new state, action). Actions are DeviceClientFactory methods.
TRANSITIONS: dict[tuple[LinkState, LinkEvent], tuple[LinkState, str | None]] = {
    (S.IDLE, E.CONNECT): (S.CONNECTING, '_attempt'),
    (S.IDLE, E.CLOSE): (S.CLOSED, None),

    (S.CONNECTING, E.MADE): (S.CONNECTED, '_adopt'),
    (S.CONNECTING, E.FAILED): (S.WAITING, '_retry_later'),
    # A connection that ends before it was made (its setup failed): try again later.
    (S.CONNECTING, E.LOST): (S.WAITING, '_retry_later'),
    (S.CONNECTING, E.REST): (S.IDLE, '_cancel_retry'),
    (S.CONNECTING, E.CLOSE): (S.CLOSED, '_cancel_retry'),

    (S.CONNECTED, E.LOST): (S.WAITING, '_retry_later'),
    (S.CONNECTED, E.DROP): (S.DROPPING, '_abort'),
    (S.CONNECTED, E.REST): (S.RESTING, '_abort'),
    (S.CONNECTED, E.CLOSE): (S.CLOSED, '_abort'),

    (S.WAITING, E.CONNECT): (S.CONNECTING, '_attempt_now'),
    (S.WAITING, E.STARTED): (S.CONNECTING, None),
    (S.WAITING, E.REST): (S.IDLE, '_cancel_retry'),
    (S.WAITING, E.CLOSE): (S.CLOSED, '_cancel_retry'),

    (S.DROPPING, E.LOST): (S.CONNECTING, '_attempt'),
    (S.DROPPING, E.REST): (S.RESTING, None),
    (S.DROPPING, E.CLOSE): (S.CLOSED, None),

    (S.RESTING, E.LOST): (S.IDLE, None),
    (S.RESTING, E.CONNECT): (S.DROPPING, None),
    (S.RESTING, E.CLOSE): (S.CLOSED, None),

    # A connection that completes after the link was closed or put to rest
    # (the attempt could not be stopped in time) is not kept.
    (S.IDLE, E.MADE): (S.IDLE, '_refuse'),
    (S.CLOSED, E.MADE): (S.CLOSED, '_refuse'),
}
