"""The outages of the link between an agent and its device.

`OutageTracker` turns a stream of poll outcomes into outages: the first
failure of an outage is logged, later ones only counted (a device that is off
for an hour must not write 3600 identical errors), and the first success after
it logs "Connection re-established". `as_dict` is what goes into
``session.data`` so an operator sees the state without reading logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Seconds between attempts while the device is unreachable.
RETRY_INTERVAL = 1.0


class OutageTracker:
    """Outage bookkeeping for one device, updated by the acquisition thread.

    Parameters
    ----------
    log
        Logger with ``info``/``error`` taking ``{name}`` placeholders and
        keyword values (the OCS agent's ``log``).
    device : str
        Name used in log messages, e.g. ``'compressor at 10.0.0.5:502'``.
    clock : callable
        Returns the time (``time.time``); injectable for tests.

    Attributes
    ----------
    connected : bool
        True once a poll succeeded and none failed since.
    last_error : str or None
        The latest failure, kept after recovery for diagnosis.
    outage_started : float or None
        When the current outage began (None while connected).
    outages : int
        Outages seen since the agent started.
    failures : int
        Failed attempts in the current outage.
    """

    def __init__(self, log, device: str, clock: Callable[[], float] = time.time):
        self.log = log
        self.device = device
        self._clock = clock
        self.connected = False
        self.last_error: str | None = None
        self.outage_started: float | None = None
        self.outages = 0
        self.failures = 0
        self._ever_connected = False

    @property
    def down(self) -> bool:
        """True during an outage (a failure and no success since)."""
        return self.outage_started is not None

    def failed(self, error: BaseException) -> bool:
        """Record a failed attempt; log it only if it starts an outage.

        Returns
        -------
        bool
            True if this failure started a new outage.
        """
        self.last_error = f'{type(error).__name__}: {error}'
        self.connected = False
        self.failures += 1
        if self.outage_started is not None:
            return False
        self.outage_started = self._clock()
        self.outages += 1
        # "Lost" only if it ever answered: at startup a wrong address is the likelier cause.
        what = 'Lost contact with' if self._ever_connected else 'Cannot reach'
        self.log.error(what + ' {device} ({error}); retrying every {retry:g} s, '
                       'further failures are not logged until the connection is '
                       're-established', device=self.device, error=self.last_error,
                       retry=RETRY_INTERVAL)
        return True

    def succeeded(self) -> bool:
        """Record a successful poll; log the recovery if it ends an outage.

        Returns
        -------
        bool
            True if this success ended an outage.
        """
        self.connected = True
        self._ever_connected = True
        if self.outage_started is None:
            return False
        duration = self._clock() - self.outage_started
        self.log.info('Connection re-established with {device} after {duration:.1f} s '
                      '({failures} failed attempts).', device=self.device,
                      duration=duration, failures=self.failures)
        self.outage_started = None
        self.failures = 0
        return True

    def describe_outage(self) -> str:
        """One line for an operator: since when the device is unreachable, and why."""
        since = time.strftime('%H:%M:%S', time.localtime(self.outage_started or self._clock()))
        return f'{self.device} unreachable since {since} ({self.last_error})'

    def as_dict(self) -> dict:
        """The state as JSON-safe values for ``session.data``."""
        return {
            'connected': self.connected,
            'last_error': self.last_error,
            'outage_started': self.outage_started,
            'outages': self.outages,
        }
