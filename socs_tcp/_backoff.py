"""Retry timing for reconnects, as a value rather than constants in the code."""

from __future__ import annotations

import random
from dataclasses import dataclass

from twisted.internet.protocol import ReconnectingClientFactory

#: Relative spread of the first retry after a lost connection (see ``Backoff``).
FIRST_SPREAD = 0.5


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter between reconnect attempts.

    The defaults suit lab devices: the first retry comes quickly (a device that
    blinked is back at once), and the cap keeps a dead device from being
    forgotten for long (``ReconnectingClientFactory``'s own cap is an hour)
    while a site with many dead devices does not spend its CPU on them (each
    failed attempt costs about a hundred microseconds; the retries of all
    links share one timer and a cap on attempts per second, see
    `socs_tcp._retry`). Background retries only matter for links nobody is
    using: a call that finds no connection connects at once, whatever the
    backoff says. The delay goes back to
    ``initial`` after every successful connection.

    Parameters
    ----------
    initial : float
        Seconds before the first retry after a failure or a lost connection.
    factor : float
        Growth of the delay after each further failure (>= 1).
    max_delay : float
        The cap on the delay, in seconds.
    jitter : float
        Relative spread of each delay (0 <= jitter < 1): a wait is drawn
        uniformly within ``delay * (1 +- jitter)``, so that many devices that
        failed together do not retry in lockstep. The first retry after a
        lost connection is spread wider, over ``initial * (1 +- FIRST_SPREAD)``
        (or the jitter if larger): every link to a device that went down
        loses its connection at the same instant. Each wait is then rounded
        up to the shared retry timer's grid (at most an eighth of it more).
    """

    initial: float = 0.25
    factor: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        for name in ('initial', 'factor', 'max_delay', 'jitter'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f'Backoff {name} must be a number, not {type(value).__name__}')
        if self.initial <= 0:
            raise ValueError(f'Backoff initial must be > 0, got {self.initial!r}')
        if self.factor < 1:
            raise ValueError(f'Backoff factor must be >= 1, got {self.factor!r}')
        if self.max_delay < self.initial:
            raise ValueError(f'Backoff max_delay ({self.max_delay!r}) must be >= initial ({self.initial!r})')
        if not 0 <= self.jitter < 1:
            raise ValueError(f'Backoff jitter must be in [0, 1), got {self.jitter!r}')

    def apply_to(self, factory: ReconnectingClientFactory) -> None:
        """Set ``factory``'s retry attributes (``initialDelay``, ``factor``, ...) from this policy.

        ``factory.jitter`` is the relative spread used by ``wait``, which the
        factory's ``retry`` calls instead of Twisted's Gaussian draw (that can
        come out negative).
        """
        factory.initialDelay = factory.delay = self.initial
        factory.factor = self.factor
        factory.maxDelay = self.max_delay  # type: ignore[assignment]  # Twisted's default is an int
        factory.jitter = self.jitter

    @staticmethod
    def wait(delay: float, jitter: float, rng: random.Random | None = None) -> float:
        """One wait of about ``delay`` seconds: within ``delay * (1 +- jitter)``, always > 0 for jitter < 1."""
        return delay * (1.0 + jitter * (rng or _random).uniform(-1.0, 1.0))


_random = random.Random()
