"""Builders for synthetic results: diagnosis and rendering are pure, so their tests need no network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agent import catalog, planner
from agent.inputs import context
from agent.model import Check, ContextValue, Result
from probes._trace import Fact
from probes.reasons import Reason, Status

GUID = "9f1c2a3b-4d5e-4f60-8a7b-0c1d2e3f4a5b"
PE_CONTEXT: dict[str, object] = {
    "region": "eastus", "workspace_id": GUID, "workspace_name": "contoso-ml",
    "storage_account": "contosomlsa", "compute_name": "ci-alice", "compute": "instance",
    "public_ip": False, "private_endpoint": True,
}


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
             default_addresses: Mapping[str, tuple[str, ...]] | None = None) -> tuple[Result, ...]:
    """Results as the engine would produce them: given outcomes, passes elsewhere, and skips for
    every check whose dependency did not pass."""
    results: dict[str, Result] = {}
    for check in checks:  # planner order: a check's dependency always comes first
        below = results.get(check.needs) if check.needs else None
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
