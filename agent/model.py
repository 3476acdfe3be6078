"""The values that flow through a run: checks in, results and findings out, one report.

Frozen dataclasses with no I/O, so every mode (check, serve, demo) and every renderer works on
the same value and none re-derives it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from agent.catalog import Catalog
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

    @property
    def attempted(self) -> tuple[str, ...]:
        """The addresses the check went to: the ones the engine handed it, else what it resolved."""
        for key in ("tried", "addresses"):
            value = self.evidence.get(key)
            if isinstance(value, list) and value:
                return tuple(str(v) for v in value)
        return ()


class Owner(StrEnum):
    """Who answers for a step of a traced path: the team a ticket for it goes to. Stable codes."""

    NODE = "node"  # this node: the flow's source
    FABRIC = "azure-fabric"  # Azure's fabric at the first hop: the NSGs (the NIC's, the subnet's) or the platform
    APPLIANCE = "appliance"  # a hop that answered: a virtual appliance or firewall, a gateway, on-premises
    SERVICE = "service"  # the destination


class StepState(StrEnum):
    """What the flow did at a step of its traced path. Stable codes."""

    PASSED = "passed"  # the flow got past it
    DIED = "died"  # where the flow died, as far as the node sees (at or just behind it)
    SILENT = "silent"  # past where the flow died: nothing came back
    REACHED = "reached"  # the destination answered the copies of the flow
    NOT_REACHED = "not-reached"  # the destination, which the flow never reached


@dataclass(frozen=True, slots=True)
class PathStep:
    """One step of a dropped flow's traced path (Finding.trace), as diagnosis read it: for a picture
    of the path, so no renderer reads the hops again."""

    owner: Owner
    state: StepState
    address: str | None  # None: a hop that stayed silent (`*`), or the fabric, which answers no hop limit
    hop: int | None = None  # the hop limit it answered at (or stayed silent for); None for the ends and the fabric
    name: str = ""  # the node's hostname, the destination's name


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
    path: str = ""  # where the flow died, as traced (probes/_hops.py): "node → 10.0.0.1 → * → addr:port (...)"
    flow: str = ""  # the failing flow as the control plane names it: "10.0.0.4:* → 198.18.1.1:443/tcp"
    confirm: tuple[str, ...] = ()  # Azure CLI commands that check the flow from the control plane
    trace: tuple[PathStep, ...] = ()  # `path` step by step: node, fabric, hops, destination (empty when untraced)


@dataclass(frozen=True, slots=True)
class ContextValue:
    value: str | bool | None
    source: str  # option | config | environment | imds | mounts | resolv.conf | default


class Health(StrEnum):
    """The node's verdict: the report's `status` (the exit code follows it)."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"


class Unneeded(StrEnum):
    """Why diagnosis judged a failing check not needed: stable codes (reports carry them)."""

    PROXIED = "reached-through-proxy"  # Azure ML reaches the endpoint through the proxy, which works
    PROXY_RESOLVES = "resolved-by-proxy"  # the name is reached only through the proxy, which resolves it

    @property
    def text(self) -> str:
        return {Unneeded.PROXIED: "not needed: reached through the proxy",
                Unneeded.PROXY_RESOLVES: "not needed: the proxy resolves this name"}[self]


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Everything diagnosis decided, in one value: every output reads it, none decides again."""

    findings: tuple[Finding, ...]
    unneeded: Mapping[str, Unneeded]  # check id -> why its result does not count
    health: Health
    exit_code: int  # the default (nagios) profile


@dataclass(frozen=True, slots=True)
class Report:
    """One run, whole: the only value a renderer reads."""

    started_at: str  # RFC 3339, UTC
    duration_ms: int
    context: Mapping[str, ContextValue]
    node: Mapping[str, Fact]
    results: tuple[Result, ...]
    diagnosis: Diagnosis
    catalog: Catalog  # the rows the plan came from (with the config's own endpoints)
    interrupted: str | None = None  # why the run ended early, if it did

    @property
    def status(self) -> str:
        return self.diagnosis.health.value

    @property
    def exit_code(self) -> int:
        return self.diagnosis.exit_code

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.diagnosis.findings

    @property
    def catalog_version(self) -> str:
        return self.catalog.version

    @property
    def vantage(self) -> str:
        """Where the run looked from: "host", or "KIND:NAME" (a network namespace, a container)."""
        seen = self.node.get("vantage")
        return f"{seen.get('kind')}:{seen.get('name')}" if isinstance(seen, dict) else "host"

    def unneeded(self, result: Result) -> Unneeded | None:
        return self.diagnosis.unneeded.get(result.check.id)

    def failing(self, result: Result) -> bool:
        """A check that failed (or warned) and counts: what every format calls failing."""
        return result.status in (Status.FAIL, Status.WARN) and result.check.id not in self.diagnosis.unneeded


def primary_address(node: Mapping[str, Fact] | object) -> str | None:
    """The IPv4 address of the interface holding the default route: the source of every flow."""
    if not isinstance(node, Mapping):
        return None
    routes = node.get("default_routes")
    interfaces = node.get("interfaces")
    names = [r.get("interface") for r in routes if isinstance(r, dict)] if isinstance(routes, list) else []
    for interface in interfaces if isinstance(interfaces, list) else []:
        if isinstance(interface, dict) and interface.get("name") in names:
            addresses = interface.get("addresses")
            for address in addresses if isinstance(addresses, list) else []:
                if isinstance(address, str) and ":" not in address:
                    return address.split("/")[0]
    return None
