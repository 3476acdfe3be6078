"""The run's one time budget. The caller turns `--deadline` into one absolute Deadline, counted
from the start of the process (start-up and imports included, as the user's stopwatch counts),
and hands it down: runner, hook rounds and serve rounds pass it on, and the engine alone turns it
into each check's window. Nothing below the caller adds time of its own."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


def process_age() -> float:
    """Seconds since this process started, from the kernel's start time (Linux), else 0."""
    try:
        with open("/proc/self/stat", "rb") as handle:
            fields = handle.read().rpartition(b")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time after boot
        return max(time.clock_gettime(time.CLOCK_BOOTTIME) - started, 0.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


@dataclass(frozen=True, slots=True)
class Deadline:
    """A point on the monotonic clock (None: no limit) and the budget it came from, for messages."""

    at: float | None = None
    budget: float | None = None  # seconds the user gave, to say which limit was reached

    @classmethod
    def from_process_start(cls, seconds: float | None) -> Deadline:
        if seconds is None:
            return cls()
        return cls(time.monotonic() - process_age() + seconds, seconds)

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        """`seconds` from now: a serve round's own budget."""
        return cls() if seconds is None else cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()

    def earlier(self, other: Deadline) -> Deadline:
        """The stricter of two limits (--wait and --deadline clip to the earlier)."""
        if self.at is None:
            return other
        if other.at is None or self.at <= other.at:
            return self
        return other

    @property
    def reached(self) -> str:
        """What a report says when this limit ended the run."""
        return f"run deadline of {self.budget:g}s reached" if self.budget else "run deadline reached"

    def window(self, timeout: float) -> float:
        """A check's window: its timeout, cut to what is left of the run (never below zero)."""
        left = self.remaining()
        return timeout if left is None else max(min(timeout, left), 0.0)
