"""The OCS side both sample agents share: one polled device, one lock, one feed.

`PolledDeviceAgent` holds what every "poll a device, publish, accept
commands" agent needs, so each agent file shows only its device's tasks:

- the driver is built lazily, in a worker thread, on first use (never in the
  main thread before the reactor runs);
- one `TimeoutLock` is shared by the tasks and ``acq``; ``acq`` calls
  ``release_and_acquire`` every loop so a waiting task always gets in, and a
  task wakes ``acq`` from its wait between samples so it gets in at once
  rather than up to one ``--sample-interval`` later;
- ``acq`` survives every device fault (unreachable, silent, garbage,
  refused): it marks the session degraded, logs once per outage, retries every
  `RETRY_INTERVAL` s, and logs "Connection re-established" when the device
  answers again; it waits on an Event that a stop request sets, so stopping
  is prompt;
- ``session.data`` always holds the latest readings (``fields``), their
  ``timestamp`` and the connection state (``connected``, ``last_error``,
  ``outage_started``, ``outages``);
- tasks run through `run_task`: while ``acq`` knows the device is down (and
  no new connection has been made since) they fail at once with a clear
  message; any device error ends them with ``False`` and the lock freed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ocs import ocs_agent
from ocs.ocs_twisted import TimeoutLock

from socs_tcp.agents.errors import DeviceReportedError, ReplyError
from socs_tcp.agents.outages import RETRY_INTERVAL, OutageTracker

#: What a device fault looks like to the agent: unreachable or silent
#: (ConnectionError), a reply that can't be trusted (ReplyError), or the
#: device refusing a request (DeviceReportedError).
DEVICE_FAULTS = (ConnectionError, ReplyError, DeviceReportedError)


def _describe(error: BaseException) -> str:
    if isinstance(error, ConnectionError):
        return f'device unreachable ({type(error).__name__}: {error})'
    if isinstance(error, ReplyError):
        return f'bad reply from device ({error})'
    return f'refused by the device ({error})'


class PolledDeviceAgent:
    """Base for an agent that polls one TCP device.

    Subclasses set `feed_name` and `device_kind`, and implement `make_device`
    and `read_sample`.

    Parameters
    ----------
    agent : ocs.ocs_agent.OCSAgent
        The OCS agent (its ``log``, feeds and ops).
    ip_address : str
        The device's address.
    port : int
        The device's TCP port.
    timeout : float
        Seconds one device exchange may take.
    sample_interval : float
        Seconds between two samples of ``acq``.
    """

    feed_name: str = ''
    device_kind: str = 'device'

    def __init__(self, agent, ip_address: str, port: int, timeout: float = 5.0,
                 sample_interval: float = 1.0):
        self.agent = agent
        self.log = agent.log
        self.ip_address = ip_address
        self.port = int(port)
        self.timeout = float(timeout)
        self.sample_interval = float(sample_interval)
        self.lock = TimeoutLock()
        # acq holds the lock between samples and hands it over at each loop,
        # so a task waits at most one interval plus one exchange.
        self.lock_wait = self.sample_interval + self.timeout + 2.0
        self.outages = OutageTracker(
            self.log, f'{self.device_kind} at {ip_address}:{self.port}')
        self.latest: dict = {}
        self.latest_time: float | None = None
        self._device = None
        self._stop_events: dict = {}   # acq session id -> threading.Event
        # Set by a task (or a stop request) to end acq's wait between samples early.
        self._wakeup = threading.Event()
        self.agent.register_feed(self.feed_name, record=True,
                                 agg_params={'frame_length': 60}, buffer_time=1)

    # -- hooks -----------------------------------------------------------------
    def make_device(self):
        """Build the driver (called once, in a worker thread, holding the lock)."""
        raise NotImplementedError

    def read_sample(self, device) -> dict:
        """Read one sample: ``{field: value}``; numbers go to the feed, all to session.data.

        Raises
        ------
        ConnectionError, ReplyError, DeviceReportedError
            On any device fault.
        """
        raise NotImplementedError

    # -- device ----------------------------------------------------------------
    @property
    def device(self):
        """The driver, built on first use (call from a worker thread)."""
        if self._device is None:
            self._device = self.make_device()
        return self._device

    def _device_known_down(self) -> bool:
        # acq saw the device fail, and the interface hasn't (re)connected since:
        # trying would only wait for another failure.
        return self.outages.down and not (self._device is not None
                                             and self._device.connected)

    # -- tasks -------------------------------------------------------------------
    def run_task(self, job: str, action: Callable[[object], str]) -> tuple[bool, str]:
        """Run ``action(device)`` under the lock as task ``job``.

        Parameters
        ----------
        job : str
            Task name (lock owner and message prefix).
        action : callable
            Does the device work and returns the success message.

        Returns
        -------
        (bool, str)
            ``(True, message)`` on success; ``(False, reason)`` if the lock is
            busy, the device is known to be down (not attempted), or the
            device fails or refuses. The lock is free again in every case.
        """
        self._wakeup.set()     # acq hands the lock over at its next loop, now
        with self.lock.acquire_timeout(self.lock_wait, job=job) as acquired:
            if not acquired:
                return False, f'{job}: could not acquire the lock (held by {self.lock.job})'
            if self._device_known_down():
                msg = f'{job} not attempted: {self.outages.describe_outage()}'
                self.log.warn('{msg}', msg=msg)
                return False, msg
            try:
                message = action(self.device)
            except DEVICE_FAULTS as exc:
                msg = f'{job} failed: {_describe(exc)}'
                self.log.error('{msg}', msg=msg)
                return False, msg
        return True, message

    # -- acquisition -------------------------------------------------------------------
    def session_data(self) -> dict:
        """What ``acq`` keeps in ``session.data``: readings, their time, link state."""
        data = {'fields': dict(self.latest), 'timestamp': self.latest_time}
        data.update(self.outages.as_dict())
        return data

    def _sample(self, session) -> bool:
        """Take, publish and record one sample; on a device fault mark degraded."""
        try:
            fields = self.read_sample(self.device)
        except DEVICE_FAULTS as exc:
            self.outages.failed(exc)
            session.degraded = True
            session.data = self.session_data()
            return False
        now = time.time()
        self.outages.succeeded()
        session.degraded = False
        self.latest, self.latest_time = fields, now
        numbers = {k: v for k, v in fields.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.agent.publish_to_feed(self.feed_name, {
            'block_name': self.feed_name, 'timestamp': now, 'data': numbers})
        # A new dict each time: the reactor thread may be encoding the old one.
        session.data = self.session_data()
        return True

    @ocs_agent.param('test_mode', default=False, type=bool)
    def acq(self, session, params):
        """acq(test_mode=False)

        **Process** - Poll the device every ``--sample-interval`` seconds and
        publish to the feed.

        Device faults never end it: the session turns degraded, the outage is
        logged once, the device is retried every second, and the session
        recovers by itself when the device answers again.

        Parameters
        ----------
        test_mode : bool, optional
            Take one sample and exit (for testing).

        Notes
        -----
        ``session.data`` looks like::

            {'fields': {...latest readings...},
             'timestamp': 1700000000.0,      # of those readings (None before any)
             'connected': True,
             'last_error': None,             # latest failure, kept after recovery
             'outage_started': None,         # float while the device is down
             'outages': 0}
        """
        stop = self._stop_events.setdefault(session.session_id, threading.Event())
        if not self.lock.acquire(timeout=self.lock_wait, job='acq'):
            self._stop_events.pop(session.session_id, None)
            return False, f'Could not start acq: lock held by {self.lock.job}'
        held = True
        self._wakeup.clear()      # a task that ran before this acq must not cut its first wait
        try:
            session.set_status('running')
            session.data = self.session_data()
            while not stop.is_set():
                if not held:
                    held = self.lock.acquire(timeout=self.lock_wait, job='acq')
                    if not held:
                        self.log.warn('acq: lock still held by {job}; waiting', job=self.lock.job)
                        continue
                ok = self._sample(session)
                if params['test_mode']:
                    break
                self._wakeup.wait(self.sample_interval if ok else RETRY_INTERVAL)
                self._wakeup.clear()
                held = self.lock.release_and_acquire(timeout=self.lock_wait)
        finally:
            if held:
                self.lock.release()
            self._stop_events.pop(session.session_id, None)
            self.agent.feeds[self.feed_name].flush_buffer()
        return True, 'Acquisition exited cleanly.'

    def _stop_acq(self, session, params):
        """Ask ``acq`` to stop; it exits within one wait."""
        if session.status not in ('starting', 'running'):
            return False, 'acq is not running'
        self._stop_events.setdefault(session.session_id, threading.Event()).set()
        self._wakeup.set()
        session.set_status('stopping')
        return True, 'Requested acq to stop.'
