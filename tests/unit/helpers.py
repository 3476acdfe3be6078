"""Builders for synthetic results: diagnosis and rendering are pure, so their tests need no network."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent import catalog, planner
from agent.clock import Deadline
from agent.inputs import context
from agent.inputs.config import Config
from agent.inputs.given import Inputs
from agent.model import Check, ContextValue, Result
from probes import node
from probes._trace import Fact
from probes.reasons import Reason, Status

if sys.version_info >= (3, 11):  # for the tests that read TOML: they run on 3.10 too (tests/test_pythons.py)
    import tomllib as tomllib
else:
    import tomli as tomllib  # noqa: F401 (for the tests, as above)

GUID = "9f1c2a3b-4d5e-4f60-8a7b-0c1d2e3f4a5b"
PE_CONTEXT: dict[str, object] = {
    "region": "eastus", "workspace_id": GUID, "workspace_name": "contoso-ml",
    "storage_account": "contosomlsa", "compute_name": "ci-alice", "compute": "instance",
    "public_ip": False, "private_endpoint": True,
}


def given_inputs(environ: pytest.MonkeyPatch, tmp_path: Path, **overrides: object) -> Inputs:
    """Inputs as `--no-detect` builds them from PE_CONTEXT's options (detection reads nothing, so
    nothing asks IMDS); no proxy in this machine's environment or /etc/environment changes the plan."""
    for name in node.PROXY_VARIABLES:
        environ.delenv(name, raising=False)
    empty = tmp_path / "environment"
    empty.write_text("")
    environ.setattr(node, "ETC_ENVIRONMENT", empty)
    inputs = Inputs.build({**PE_CONTEXT, **overrides}, Config(), (), detect_context=False)
    assert inputs.local_detection() is None
    return inputs


def make_context(**overrides: object) -> dict[str, ContextValue]:
    return context.build([("option", {**PE_CONTEXT, **overrides})])


def make_plan(features: Sequence[str] = (), options: planner.PlanOptions | None = None,
              **overrides: object) -> tuple[Check, ...]:
    chosen = options or planner.PlanOptions(features=frozenset(features))
    return planner.plan(catalog.load(), make_context(**overrides), chosen)


@dataclass(frozen=True)
class Outcome:
    reason: Reason | None = None
    status: Status | None = None
    evidence: Mapping[str, Fact] = field(default_factory=dict)
    addresses: tuple[str, ...] | None = None
    detail: str = "synthetic"
    phase: str | None = None


def simulate(checks: Sequence[Check], outcomes: Mapping[str, Outcome],
             default_addresses: Mapping[str, tuple[str, ...]] | None = None,
             known: Mapping[str, Result] | None = None) -> tuple[Result, ...]:
    """Results as the engine would produce them: given outcomes, passes elsewhere, and skips for
    every check whose dependency did not pass. `known` holds earlier results of checks not in
    `checks` that these may depend on (as the engine's `known`)."""
    results: dict[str, Result] = {}
    for check in checks:  # planner order: a check's dependency always comes first
        below = (results.get(check.needs) or (known or {}).get(check.needs)) if check.needs else None
        if check.skip is not None:
            results[check.id] = Result(check, Status.SKIP, check.skip, None, check.skip_detail, 0.0)
            continue
        if below is not None and below.status not in (Status.PASS, Status.WARN):
            results[check.id] = Result(check, Status.SKIP, Reason.SKIP_DEPENDENCY, None, "not tried", 0.0)
            continue
        outcome = outcomes.get(check.id, Outcome())
        addresses = outcome.addresses
        if addresses is None:
            addresses = (default_addresses or {}).get(check.host, ("198.18.0.10",)) \
                if check.layer.value == "dns" else (below.addresses if below else ())
        status = outcome.status or (outcome.reason.status if outcome.reason else Status.PASS)
        results[check.id] = Result(check, status, outcome.reason, outcome.phase,
                                   outcome.detail if outcome.reason else "", 0.01,
                                   evidence=dict(outcome.evidence),
                                   addresses=addresses if status in (Status.PASS, Status.WARN) else ())
    return tuple(results[c.id] for c in checks)


@dataclass(frozen=True)
class Call:
    """What one call of a FakeEngine was given."""

    checks: tuple[str, ...]
    timeout: float
    deadline: Deadline
    concurrency: int
    known: Mapping[str, Result]
    at: float  # time.monotonic() when the call came in: to compare with a deadline, never to time a test


class FakeEngine:
    """A stand-in for agent.engine.run (runner.RunChecks): synthetic results from `simulate`, no
    probe runs. Call n uses rounds[n-1] (the last one repeats). Like the engine it records each
    result in `state` and hands it to `on_result`. Checks in `hang` (and the checks that need
    them) never finish: the call reports the others, sets `hanging` and waits to be cancelled."""

    def __init__(self, *rounds: Mapping[str, Outcome], hang: Collection[str] = (),
                 addresses: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.rounds: tuple[Mapping[str, Outcome], ...] = rounds or ({},)
        self.hang = frozenset(hang)
        self.addresses = addresses
        self.calls: list[Call] = []
        self.returned: list[tuple[Result, ...]] = []
        self.hanging = asyncio.Event()

    async def __call__(self, checks: Sequence[Check], *, timeout: float, deadline: Deadline, concurrency: int,
                       state: Any = None, on_result: Callable[[Result], None] | None = None,
                       known: Mapping[str, Result] | None = None) -> tuple[Result, ...]:
        self.calls.append(Call(tuple(c.id for c in checks), timeout, deadline, concurrency, dict(known or {}),
                               time.monotonic()))
        outcomes = self.rounds[min(len(self.calls), len(self.rounds)) - 1]
        results = simulate(checks, outcomes, self.addresses, known=known)
        hung: set[str] = set()
        for check in checks:  # planner order: a check's dependency comes first
            if check.id in self.hang or check.needs in hung:
                hung.add(check.id)
        for result in results:
            if result.check.id in hung:
                continue
            if state is not None:
                state.results[result.check.id] = result
            if on_result is not None:
                on_result(result)
        if hung:
            self.hanging.set()
            await asyncio.Event().wait()  # until the caller cancels the run
        self.returned.append(results)
        return results
