"""One diagnosis of the node, shared by `check` (once, or until healthy with --wait) and
`serve` (every interval): detect the context, plan, probe, diagnose, and return one Report.

The caller owns signals: to stop a run it sets `state.interrupted` and cancels the task; the
run then still returns a (partial) report instead of raising. The caller also owns the time
budget: `Limits.deadline` is absolute, and every round and every restart below runs inside it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from agent.clock import Deadline
from agent.inputs import detect
from agent.inputs.given import Inputs
from agent.latency import DEFAULT as DEFAULT_LATENCY
from agent.latency import Thresholds, judged, measured
from agent.latency import slow as is_slow
from agent.model import Check, ContextValue, Report, Result
from probes import _compat, node
from probes.reasons import Reason, Status


class RunChecks(Protocol):
    """The engine's `run`, as the runner and the hook call it (a test passes a fake engine)."""

    async def __call__(self, checks: Sequence[Check], *, timeout: float, deadline: Deadline,
                       concurrency: int, state: Any = None, on_result: Callable[[Result], None] | None = None,
                       known: Mapping[str, Result] | None = None) -> tuple[Result, ...]: ...


REMEASURE_CONCURRENCY = 8  # slow checks measured again at once (_measured_again)


@dataclass(frozen=True, slots=True)
class Limits:
    timeout: float
    deadline: Deadline = field(default_factory=Deadline)  # the whole run, absolute
    concurrency: int = 128
    wait: Deadline | None = None  # hook mode: retry failing checks until healthy or this moment
    latency: Thresholds = DEFAULT_LATENCY  # slower than these, a check that worked warns


async def diagnose_node(inputs: Inputs, limits: Limits, state: Any, *,
                        on_result: Callable[[Result], None] | None = None,
                        on_plan: Callable[[Sequence[Check]], None] | None = None,
                        on_round: Callable[[int, Sequence[Result], float], None] | None = None,
                        reuse: Mapping[str, Result] | None = None,
                        run_checks: RunChecks | None = None) -> Report:
    """`state` is an engine.RunState. `reuse` holds earlier results of checks not to probe this
    time (serve's backoff on endpoints that keep failing): they count as they were. `on_plan` gets the
    checks about to be probed, again when the run starts over with a new plan."""
    from agent import diagnose, engine
    from agent.modes import hook

    probe_all: RunChecks = run_checks or engine.run
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    node_facts = node.collect()
    if inputs.vantage.netns is not None:  # the node facts are the vantage's own (interfaces, resolvers)
        node_facts["vantage"] = {"kind": inputs.vantage.kind.value, "name": inputs.vantage.name,
                                 "host": dict(inputs.vantage.host or {})}
    detected = inputs.local_detection()
    values = inputs.context(detected)
    cat, checks = inputs.plan(values)
    metadata: asyncio.Task[None] | None = None
    try:
        def judge(results: Sequence[Result]) -> bool:
            slow = judged(results, limits.latency)
            return diagnose.diagnose(slow, diagnose.Facts(cat, values, node_facts)).exit_code in (0, 1)

        if limits.wait is not None:
            if detected is not None:
                left = limits.deadline.remaining()
                with contextlib.suppress(TimeoutError):  # the run deadline first: local detection stands
                    async with _compat.timeout(None if left is None else max(left, 0.0)):
                        await detect.imds(detected)
                node_facts["detection"] = detected.notes
                values = inputs.context(detected)
                cat, checks = inputs.plan(values)
            if on_plan is not None:
                on_plan(checks)
            end = limits.wait.earlier(limits.deadline)
            results = await hook.until_healthy(
                checks, end=end, healthy=judge, timeout=limits.timeout,
                concurrency=limits.concurrency, state=state, on_round=on_round, run_checks=probe_all)
            if any(r.reason is Reason.PROBE_CANCELLED for r in results):  # cut short with no earlier result
                state.interrupted = state.interrupted or (
                    limits.deadline.reached if end is limits.deadline else f"wait of {end.budget:g}s over")
        else:
            # Probing starts at once; IMDS is read meanwhile. Only if what it says changes the
            # plan (on Azure it answers in milliseconds) does the run start over, so a node
            # without IMDS never waits for its timeout.
            if detected is not None:
                metadata = asyncio.create_task(detect.imds(detected))
            while True:
                reused = {c.id: reuse[c.id] for c in checks if reuse and c.id in reuse}
                probed = tuple(c for c in checks if c.id not in reused)
                if on_plan is not None:
                    on_plan(probed)

                def record(result: Result) -> None:
                    state.results[result.check.id] = result
                    if on_result is not None:
                        on_result(result)

                attempt = engine.RunState()
                probing = asyncio.create_task(probe_all(
                    probed, timeout=limits.timeout, deadline=limits.deadline, concurrency=limits.concurrency,
                    state=attempt, on_result=record, known=reused))
                try:
                    if metadata is not None and detected is not None:
                        await metadata
                        metadata = None
                        node_facts["detection"] = detected.notes
                        planned_for, values = values, inputs.context(detected)
                        if _values(values) != _values(planned_for):  # the plan follows the values alone
                            new_cat, new_checks = inputs.plan(values)
                            if _signature(new_checks) != _signature(checks):
                                cat, checks = new_cat, new_checks
                                continue
                    fresh = await probing
                finally:
                    if not probing.done():
                        probing.cancel()
                        await asyncio.gather(probing, return_exceptions=True)
                state.interrupted = state.interrupted or attempt.interrupted
                break
            by_id = {**reused, **{r.check.id: r for r in fresh}}
            results = tuple(by_id[c.id] for c in checks)
        results = await _measured_again(results, limits, probe_all)
    except asyncio.CancelledError:
        if not state.interrupted:
            raise
        results = engine.finish(checks, state)
    finally:
        if metadata is not None:
            metadata.cancel()
    results = judged(results, limits.latency)
    signalled = bool(state.interrupted and state.interrupted.startswith("stopped by"))
    diagnosis = diagnose.diagnose(results, diagnose.Facts(cat, values, node_facts), signalled=signalled)
    return Report(started_at=started.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                  duration_ms=int((time.monotonic() - t0) * 1000), context=values, node=node_facts,
                  results=results, diagnosis=diagnosis, catalog=cat, interrupted=state.interrupted)


async def _measured_again(results: tuple[Result, ...], limits: Limits, probe_all: RunChecks) -> tuple[Result, ...]:
    """Checks that worked but slowly are measured once more, after the run's burst, as serve confirms
    a finding before announcing it: a node busy with its own hundreds of checks (or other work), and a
    peer busy with them, can make one answer slow; a slow path is slow twice. The faster figure stands;
    a second attempt that did not pass leaves the first result as it was, so slowness never turns into
    a failure. The layers below a re-measured check are known (its connection comes fresh, or from the
    re-measured check below it). A few at a time: a burst of them would load the node and the peer again."""
    slow = {r.check.id: r for r in judged(results, limits.latency) if is_slow(r)}
    if not slow:
        return results
    again = await probe_all(tuple(r.check for r in results if r.check.id in slow), timeout=limits.timeout,
                            deadline=limits.deadline, concurrency=min(limits.concurrency, REMEASURE_CONCURRENCY),
                            known={r.check.id: r for r in results})
    better = {r.check.id: r for r in again if r.status is Status.PASS and (now := measured(r)) is not None
              and now < (measured(slow[r.check.id]) or now)}
    return tuple(better.get(r.check.id, r) for r in results)


def _values(context: Mapping[str, ContextValue]) -> dict[str, object]:
    """The context without the sources: what planning reads (IMDS often confirms a value, which
    changes its source only, and planning 5,000 endpoints again costs 0.3 s)."""
    return {key: value.value for key, value in context.items()}


def _signature(checks: Sequence[Check]) -> list[tuple[str, object]]:
    return [(c.id, c.spec) for c in checks]
