"""Hook mode: run the checks, then run again only what failed (and what it held back), with
backoff, until the node is healthy or the wait is over. Never runs past the wait: every round
runs inside the one deadline it is given (the earlier of --wait and --deadline)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from agent.clock import Deadline
from agent.model import Check, Result
from probes.reasons import Reason, Status

if TYPE_CHECKING:
    from agent.engine import RunState
    from agent.runner import RunChecks

FIRST_BACKOFF = 1.0  # seconds before the first retry; doubles each round
MAX_BACKOFF = 15.0  # a setup script waiting for a firewall change wants to notice it quickly
MARGIN = 0.2  # seconds kept back for diagnosis and writing the report
LAST_ROUND = 0.5  # seconds: the shortest retry worth starting before the end


def _retryable(result: Result) -> bool:
    return result.status in (Status.FAIL, Status.WARN) or result.reason in (
        Reason.SKIP_DEPENDENCY, Reason.PROBE_CANCELLED)


async def until_healthy(checks: Sequence[Check], *, end: Deadline, healthy: Callable[[Sequence[Result]], bool],
                        timeout: float, concurrency: int, state: RunState, run_checks: RunChecks,
                        on_round: Callable[[int, Sequence[Result], float], None] | None = None
                        ) -> tuple[Result, ...]:
    """Results of the last round merged over the earlier ones. `state` collects every finished
    result, so a signal mid-round still leaves the best knowledge for a partial report."""
    stop = Deadline(end.at - MARGIN, end.budget) if end.at is not None else end
    current: dict[str, Result] = {}
    pending = list(checks)
    backoff = FIRST_BACKOFF
    rounds = 0
    while True:
        rounds += 1
        fresh = await run_checks(pending, timeout=timeout, deadline=stop, concurrency=concurrency, known=current,
                                 on_result=lambda r: state.results.__setitem__(r.check.id, r))
        for result in fresh:  # a retry cut off by the wait's end keeps the earlier, real result
            if result.reason is not Reason.PROBE_CANCELLED or result.check.id not in current:
                current[result.check.id] = result
        results = tuple(current[c.id] for c in checks)
        left = stop.remaining()
        if healthy(results) or left is None or left <= LAST_ROUND:
            return results  # healthy, or too little time for another round
        # The last retry comes early enough to run: a port opened in the wait's last seconds answers
        # in milliseconds, and a check the end cuts keeps its earlier, real result.
        pause = min(backoff, left - LAST_ROUND)
        if on_round is not None:
            on_round(rounds, results, pause)
        await asyncio.sleep(pause)
        backoff = min(backoff * 2, MAX_BACKOFF)
        left = stop.remaining()
        if left is None or left <= 0:
            return results
        pending = [c for c in checks if _retryable(current[c.id])]
