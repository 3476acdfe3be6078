"""What one probe saw: timed phases and JSON-able facts, plus the error a probe raises when the
peer answered but not as expected. One Trace per check; never shared between checks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from probes.reasons import Reason

Fact = str | int | float | bool | None | list["Fact"] | dict[str, "Fact"]


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    start: float  # seconds since the check started
    end: float | None  # None: still running when the check ended (deadline or failure)


class Trace:
    """Collects the phases a probe went through and the evidence it gathered.

    The engine reads it after the probe returns, raises or is cancelled at its deadline, so the
    phase that was open at a timeout is the phase that timed out."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._phases: list[list[object]] = []
        self._open: list[str] = []
        self.facts: dict[str, Fact] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        entry: list[object] = [name, self.elapsed(), None]
        self._phases.append(entry)
        self._open.append(name)
        yield  # an exception (or the deadline's cancellation) leaves the phase open: it failed
        entry[2] = self.elapsed()
        self._open.remove(name)

    def note(self, **facts: Fact) -> None:
        self.facts.update(facts)

    def passed(self, address: str) -> None:
        """Record an address that passed this layer, as soon as it passes: the engine hands
        `addresses_ok` to the next layer, and reads it when the deadline cuts a probe short."""
        ok = self.facts.setdefault("addresses_ok", [])
        assert isinstance(ok, list)
        ok.append(address)

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    @property
    def current(self) -> str | None:
        """The innermost phase still open, i.e. where a deadline or an exception struck.

        A phase left by an exception stays open (its `end` stays None), so this still names it
        after the exception has unwound the probe."""
        return self._open[-1] if self._open else None

    @property
    def phases(self) -> tuple[Phase, ...]:
        return tuple(Phase(str(n), float(s), None if e is None else float(e))  # type: ignore[arg-type]
                     for n, s, e in self._phases)


class ProbeError(Exception):
    """The peer answered, but not as the check expects (wrong status, wrong answer, no reply)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
