"""One retry timer for every link of a reactor, and a cap on background attempts per second.

A link whose device is down waits, then tries again (see ``Backoff``). With a
reactor timer per link, a site with a thousand dead devices pays for a
thousand entries in the reactor's timer heap (every timer operation walks
it) and wakes the reactor once per attempt. Here all the links of a reactor
share one ``RetryTimer``:

- one reactor timer, set for the earliest due retry: the reactor's heap holds
  one entry, however many links wait;
- due times rounded up to a grid that grows with the delay (about an eighth
  of it, a power of two between ``MIN_GRID`` and ``MAX_GRID`` seconds), so
  that one wake-up serves every retry due in that slot;
- at most ``rate`` background attempts per second over the whole reactor (a
  token bucket holding ``rate * BATCH`` attempts, the most one wake-up runs):
  when more are due, the rest run in later batches, oldest due first. A call that needs the device
  does not come through here: it connects at once.
"""

from __future__ import annotations

import heapq
import itertools
import math
import weakref
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

#: Background connection attempts per second, over all links of a reactor.
#: A thousand dead devices at a 30 s backoff cap need about 33.
DEFAULT_RATE = 100.0
#: Seconds of attempts the rate allows in one batch (the token bucket's size).
#: A batch keeps the reactor busy for a few ms (about 130 us of CPU per failed
#: attempt): a call that needs its device meanwhile waits for it to end.
BATCH = 0.25
MIN_GRID = 1 / 64
MAX_GRID = 4.0

log = Logger()


def grid_step(delay: float) -> float:
    """The grid, in seconds, that a retry ``delay`` seconds away is rounded up to."""
    if delay <= 8 * MIN_GRID:
        return MIN_GRID
    return min(MAX_GRID, 2.0 ** math.floor(math.log2(delay / 8)))


class Retry:
    """One scheduled retry: runs ``action`` once it is due, unless cancelled first."""

    __slots__ = ('due', '_order', '_action', '_timer')

    def __init__(self, due: float, order: int, action: Callable[[], object], timer: RetryTimer) -> None:
        self.due = due
        self._order = order
        self._action: Callable[[], object] | None = action
        self._timer = timer

    def __lt__(self, other: Retry) -> bool:
        return (self.due, self._order) < (other.due, other._order)

    @property
    def pending(self) -> bool:
        """Neither run nor cancelled yet."""
        return self._action is not None

    def cancel(self) -> None:
        """Do not run (nothing if it already ran or was cancelled)."""
        if self._action is not None:
            self._action = None
            self._timer._cancelled_one()

    def _run(self) -> None:
        action, self._action = self._action, None
        if action is not None:
            action()


class RetryTimer:
    """The retries of every link of one reactor, on one reactor timer.

    Parameters
    ----------
    clock : IReactorTime
        The reactor (or a ``Clock`` in tests).
    rate : float
        Background attempts per second, at most.
    """

    def __init__(self, clock: Any, rate: float = DEFAULT_RATE) -> None:
        if not rate > 0:
            raise ValueError(f'rate must be > 0 attempts per second, got {rate!r}')
        self._clock = clock
        self._rate = float(rate)
        self._capacity = max(1.0, self._rate * BATCH)
        self._tokens = self._capacity
        self._refilled = clock.seconds()
        self._heap: list[Retry] = []
        self._cancelled = 0                   # cancelled retries still in the heap
        self._order = itertools.count()       # equal due times run in the order scheduled
        self._call: Any = None  # the reactor's IDelayedCall, while one is set
        self._batch_at: float | None = None  # when the next batch of a backlog was due

    def __len__(self) -> int:
        """Retries scheduled and not cancelled."""
        return len(self._heap) - self._cancelled

    def schedule(self, delay: float, action: Callable[[], object]) -> Retry:
        """Run ``action`` about ``delay`` seconds from now: at the next grid point at or after it."""
        step = grid_step(delay)
        due = math.ceil((self._clock.seconds() + delay) / step) * step
        retry = Retry(due, next(self._order), action, self)
        heapq.heappush(self._heap, retry)
        self._wake_at(due)
        return retry

    def _wake_at(self, when: float) -> None:
        if self._call is not None:
            if self._call.getTime() <= when:
                return
            self._call.cancel()
        self._call = self._clock.callLater(max(0.0, when - self._clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._call = None
        now = self._clock.seconds()
        capacity = self._capacity
        if self._batch_at is not None:
            # A backlog: a reactor that woke us late must not lower the rate.
            capacity += max(0.0, now - self._batch_at) * self._rate
            self._batch_at = None
        self._tokens = min(capacity, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        # (self._heap, not a local name: a retry's action may cancel others, which can rebuild it)
        while self._heap and self._heap[0].due <= now:
            if self._heap[0].pending and self._tokens < 1:
                break
            retry = heapq.heappop(self._heap)
            if not retry.pending:
                self._cancelled -= 1
                continue
            self._tokens -= 1
            try:
                retry._run()
            except Exception:
                log.failure('a scheduled connection attempt failed to start')
        while self._heap and not self._heap[0].pending:
            heapq.heappop(self._heap)
            self._cancelled -= 1
        if self._heap:
            if self._heap[0].due <= now:  # over the rate: the next batch once the bucket is full again
                self._batch_at = now + (self._capacity - self._tokens) / self._rate
                self._wake_at(self._batch_at)
            else:
                self._wake_at(self._heap[0].due)

    def _cancelled_one(self) -> None:
        self._cancelled += 1
        if self._cancelled > 64 and self._cancelled > len(self._heap) // 2:
            self._heap = [r for r in self._heap if r.pending]
            heapq.heapify(self._heap)
            self._cancelled = 0


_timers: weakref.WeakKeyDictionary[Any, RetryTimer] = weakref.WeakKeyDictionary()


def retry_timer(clock: Any) -> RetryTimer:
    """The one ``RetryTimer`` of ``clock`` (made on first use)."""
    timer = _timers.get(clock)
    if timer is None:
        timer = _timers[clock] = RetryTimer(clock)
    return timer
