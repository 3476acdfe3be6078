"""One diagnosis of the node, shared by `check` (once, or until healthy with --wait) and
`serve` (every interval): detect the context, plan, probe, diagnose, and return one Report.

The caller owns signals: to stop a run it sets `state.interrupted` and cancels the task; the
run then still returns a (partial) report instead of raising."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from agent import catalog, planner
from agent.inputs import context
from agent.inputs import detect
from agent.inputs import proxy
from agent.inputs.config import Config
from agent.inputs.detect import Detected
from agent.model import Check, ContextValue, Report, Result
from probes import node


class InputError(ValueError):
    """A context value from the options or the config file is unusable; one line."""


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the user gave (options and config file), validated before anything is sent."""

    given: Mapping[str, object]  # context options from the command line
    config: Config = field(default_factory=Config)
    plan_options: planner.PlanOptions = field(default_factory=planner.PlanOptions)
    detect: bool = True

    @classmethod
    def build(cls, given: Mapping[str, object], cfg: Config, features: tuple[str, ...],
              detect_context: bool) -> Inputs:
        proxied = proxy.settings(os.environ, node.environment_file())
        inputs = cls(given, cfg, planner.PlanOptions(
            features=frozenset(features or cfg.settings.features),
            expected_issuers=cfg.settings.expected_issuers or planner.DEFAULT_EXPECTED_ISSUERS,
            blocked=cfg.policy.blocked, blocked_reason=cfg.policy.reason,
            proxy=proxied.url, no_proxy=proxied.no_proxy), detect_context)
        inputs.context()  # a bad option or config value stops here, before any detection or probing
        return inputs

    def context(self, detected: Detected | None = None) -> dict[str, ContextValue]:
        layers: list[tuple[context.Source, Any]] = [("option", self.given), ("config", self.config.context)]
        if detected is not None:
            layers.append((detected.sources, detected.values))
        try:
            return context.build(layers)
        except context.ContextError as exc:
            raise InputError(str(exc)) from None

    def local_detection(self) -> Detected | None:
        """Detection from files and the environment only: sends nothing (plan and rules)."""
        return detect.local(os.environ) if self.detect else None

    def plan(self, values: Mapping[str, ContextValue]) -> tuple[catalog.Catalog, tuple[Check, ...]]:
        cat = planner.with_endpoints(
            catalog.load(str(values["cloud"].value)),
            ((e.host, e.port, e.probe, e.purpose, e.required) for e in self.config.endpoints))
        return cat, planner.plan(cat, values, self.plan_options)


@dataclass(frozen=True, slots=True)
class Limits:
    timeout: float
    deadline: float | None = None
    concurrency: int = 128
    wait: float | None = None  # hook mode: retry failing checks until healthy or this many seconds


async def diagnose_node(inputs: Inputs, limits: Limits, state: Any, *,
                        on_result: Callable[[Result], None] | None = None,
                        on_plan: Callable[[int], None] | None = None,
                        on_round: Callable[[int, Sequence[Result], float], None] | None = None,
                        reuse: Mapping[str, Result] | None = None) -> tuple[Report, catalog.Catalog]:
    """`state` is an engine.RunState. `reuse` holds earlier results of checks not to probe this
    time (serve's backoff on endpoints that keep failing): they count as they were."""
    from agent import diagnose, engine
    from agent.modes import hook as wait

    started = datetime.now(UTC)
    t0 = time.monotonic()
    inputs = replace(inputs, plan_options=replace(  # a slow second resolver must not eat the check's time
        inputs.plan_options, dns_query_timeout=min(2.0, limits.timeout / 2)))
    node_facts = node.collect()
    detected = inputs.local_detection()
    values = inputs.context(detected)
    cat, checks = inputs.plan(values)
    metadata: asyncio.Task[None] | None = None
    try:
        def judge(results: Sequence[Result]) -> bool:
            findings = diagnose.diagnose(results, diagnose.Facts(cat, values, node_facts))
            return diagnose.verdict(findings, results)[1] in (0, 1)

        if limits.wait:
            if detected is not None:
                await detect.imds(detected)
                node_facts["detection"] = detected.notes
                values = inputs.context(detected)
                cat, checks = inputs.plan(values)
            if on_plan is not None:
                on_plan(len(checks))
            results = await wait.until_healthy(checks, wait=limits.wait, healthy=judge, timeout=limits.timeout,
                                               concurrency=limits.concurrency, state=state, on_round=on_round)
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
                    on_plan(len(probed))

                def record(result: Result) -> None:
                    state.results[result.check.id] = result
                    if on_result is not None:
                        on_result(result)

                attempt = engine.RunState()
                probing = asyncio.create_task(engine.run(
                    probed, timeout=limits.timeout, deadline=limits.deadline, concurrency=limits.concurrency,
                    state=attempt, on_result=record, known=reused))
                try:
                    if metadata is not None and detected is not None:
                        await metadata
                        metadata = None
                        node_facts["detection"] = detected.notes
                        values = inputs.context(detected)
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
    except asyncio.CancelledError:
        if not state.interrupted:
            raise
        results = engine.finish(checks, state)
    finally:
        if metadata is not None:
            metadata.cancel()
    findings = diagnose.diagnose(results, diagnose.Facts(cat, values, node_facts))
    signalled = bool(state.interrupted and state.interrupted.startswith("stopped by"))
    status, exit_code = diagnose.verdict(findings, results, signalled=signalled)
    return Report(started_at=started.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                  duration_ms=int((time.monotonic() - t0) * 1000), status=status, exit_code=exit_code,
                  context=values, node=node_facts, results=results, findings=findings,
                  catalog_version=cat.version, interrupted=state.interrupted), cat



def _signature(checks: Sequence[Check]) -> list[tuple[str, object]]:
    return [(c.id, sorted(c.params.items())) for c in checks]
