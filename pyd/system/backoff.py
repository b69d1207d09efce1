"""Backoff: a delay that doubles with each failure in a row, up to a cap.

One rule for everything pyd retries: a worker number whose boot failed, the service process,
a supervised program that crashed quickly, a remote log target that cannot be reached.
"""

from __future__ import annotations


class Backoff:
    """`failed()` gives the next delay (first, 2 * first, ... up to cap) and when to try again;
    `reset()` after a success, so the next failure starts from `first` again."""

    def __init__(self, first: float, cap: float):
        self.first = first
        self.cap = cap
        self.failures = 0  # in a row
        self.delay = 0.0  # the last delay given
        self.not_before = 0.0  # on the caller's clock: no new try before this

    def failed(self, now: float = 0.0) -> float:
        """One more failure: the delay before the next try (also set as not_before - now)."""
        self.failures += 1
        # Doubled from the last delay, not 2 ** failures: no overflow however long it fails.
        self.delay = min(self.cap, self.delay * 2) if self.failures > 1 else min(self.cap,
                                                                                 self.first)
        self.not_before = now + self.delay
        return self.delay

    def waiting(self, now: float) -> bool:
        """Whether `now` is still before the next try."""
        return now < self.not_before

    def reset(self) -> None:
        self.failures, self.delay, self.not_before = 0, 0.0, 0.0
