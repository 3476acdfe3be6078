"""The values that flow through a run: checks in, results and findings out, one report.

Frozen dataclasses with no I/O, so every mode (check, serve, demo) and every renderer works on
the same value and none re-derives it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from probes._trace import Fact, Phase
from probes.reasons import Reason, Status
from probes.specs import Layer, Spec


class CheckPath(StrEnum):
    """How a check reaches its target: as the node does by itself, or through the configured proxy."""

    DIRECT = "direct"
    PROXY = "proxy"  # the request through the configured proxy
    TO_PROXY = "to-proxy"  # reaching the proxy itself


class Severity(IntEnum):
    INFO = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Check:
    """One probe of one layer of one endpoint. `needs` names the check whose passing addresses
    this one connects to, which is how a TCP failure keeps TLS and HTTP from failing again. The
    planner builds the probe's Spec, so the engine runs exactly what the plan shows."""

    id: str
    spec: Spec
    host: str
    port: int | None
    protocol: str  # tcp | udp
    requirements: tuple[str, ...]
    needs: str | None = None
    path: CheckPath = CheckPath.DIRECT
    skip: Reason | None = None  # set at planning time: missing context or blocked by policy
    skip_detail: str = ""

    @property
    def layer(self) -> Layer:
        return self.spec.layer

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}/{self.protocol}" if self.port else self.host


@dataclass(frozen=True, slots=True)
class Result:
    check: Check
    status: Status
    reason: Reason | None  # None on pass
    phase: str | None  # the phase that failed, or was open at the deadline
    detail: str  # one line for humans; "" on pass
    elapsed: float  # seconds
    phases: tuple[Phase, ...] = ()
    evidence: Mapping[str, Fact] = field(default_factory=dict)
    addresses: tuple[str, ...] = ()  # addresses that passed this layer; the next layer uses them

    @property
    def reason_is_context_skip(self) -> bool:
        """Skipped for want of a context value: worth showing, it says what to give."""
        return self.reason is Reason.SKIP_MISSING_CONTEXT


@dataclass(frozen=True, slots=True)
class Finding:
    code: str  # stable, kebab-case: DESIGN.md's finding table
    severity: Severity
    summary: str
    cause: str
    remedy: str
    targets: tuple[str, ...]  # "host:port/proto"
    checks: tuple[str, ...]  # ids of the results this finding explains
    docs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ContextValue:
    value: str | bool | None
    source: str  # option | config | environment | imds | mounts | resolv.conf | default


@dataclass(frozen=True, slots=True)
class Report:
    started_at: str  # RFC 3339, UTC
    duration_ms: int
    status: str  # ok | warning | critical | unknown
    exit_code: int
    context: Mapping[str, ContextValue]
    node: Mapping[str, Fact]
    results: tuple[Result, ...]
    findings: tuple[Finding, ...]
    catalog_version: str
    interrupted: str | None = None  # why the run ended early, if it did
