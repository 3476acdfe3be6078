"""Lab scenarios as data: what the simulated VNet looks like and what the agent should find.

A scenario names DNS behaviour, NSG/firewall faults, and TLS/WebSocket/UDP behaviour of the
simulated Azure side. The names in SCENARIOS are API: `aml-netcheck demo` and the end-to-end
tests use them.

Name lists (`nxdomain`, `servfail`, `tls_intercept`) hold exact names or shell-style patterns
(`*.blob.core.windows.net`); `"*"` matches every name.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

FaultAction = Literal["drop", "reset", "reject-port", "reject-admin"]
Protocol = Literal["tcp", "udp"]
PrivateZones = Literal["linked", "unlinked", "missing"]
Resolver = Literal["azure", "custom"]


@dataclass(frozen=True, slots=True)
class Fault:
    """An NSG or firewall rule on the way into "Azure": host None means every destination."""

    action: FaultAction
    protocol: Protocol
    port: int
    host: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ("drop", "reset", "reject-port", "reject-admin"):
            raise ValueError(f"unknown fault action {self.action!r}")
        if self.protocol not in ("tcp", "udp"):
            raise ValueError(f"unknown protocol {self.protocol!r}")
        if self.action == "reset" and self.protocol != "tcp":
            raise ValueError("a reset fault needs protocol tcp")
        if not 0 < self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")


@dataclass(frozen=True, slots=True)
class Context:
    """The agent's CLI context for the simulated node (what `check` is told)."""

    region: str = "eastus"
    workspace_id: str = "6f1c2b7e-3d4a-4c5b-9e8f-0a1b2c3d4e5f"
    workspace_name: str = "contoso-ml"
    storage_account: str = "contosomlstore"
    compute_name: str = "ci-lab-01"
    compute: Literal["instance", "cluster", "serverless"] = "instance"
    public_ip: bool = False
    private_endpoint: bool = True


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str  # one line
    description: str  # what is injected and what the agent should say, for `demo --list`
    context: Context = field(default_factory=Context)
    # DNS: which server the node uses, how the privatelink zones look from the VNet
    resolver: Resolver = "azure"
    # privatelink zones: linked (PE addresses), unlinked (public answers), missing (NXDOMAIN)
    private_zones: PrivateZones = "linked"
    custom_dns_forwards: bool = True  # the custom server forwards the private zones to Azure DNS
    nxdomain: tuple[str, ...] = ()
    servfail: tuple[str, ...] = ()
    # NSGs and firewalls
    faults: tuple[Fault, ...] = ()
    # the HTTPS/WebSocket/UDP side
    tls_intercept: tuple[str, ...] = ()  # names whose TLS is intercepted by the untrusted CA
    websocket_refused: bool = False
    udp_silent: bool = False
    # what the agent should conclude
    expected_exit: int = 0
    expected_findings: tuple[str, ...] = ()

    def check_args(self) -> list[str]:
        """The context as `aml-netcheck check` options."""
        c = self.context
        values = {
            "--region": c.region,
            "--workspace-id": c.workspace_id,
            "--workspace-name": c.workspace_name,
            "--storage-account": c.storage_account,
            "--compute-name": c.compute_name,
            "--compute": c.compute,
        }
        return [
            *(part for option in values.items() for part in option),
            "--public-ip" if c.public_ip else "--no-public-ip",
            "--private-endpoint" if c.private_endpoint else "--no-private-endpoint",
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        """Inverse of to_dict (the server process gets its scenario as JSON)."""
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        values["context"] = Context(**data["context"])
        values["faults"] = tuple(Fault(**f) for f in data["faults"])
        return cls(**values)


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether a DNS name is one of the names or shell-style patterns of a scenario list."""
    name = name.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(name, p.lower()) for p in patterns)


_PRIVATE = Context()
_PUBLIC = Context(public_ip=True, private_endpoint=False)
BATCH_FRONT_ENDS = (
    f"{_PRIVATE.region}.batch.azure.com",
    f"{_PRIVATE.region}.service.batch.azure.com",
)
"""Every name under these resolves to the front end's own address (see lab.zones), so a fault on
these two hosts blocks all of `*.eastus.batch.azure.com` and `*.eastus.service.batch.azure.com`."""

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "healthy-private",
            "Healthy: private-endpoint workspace, compute instance without public IP",
            "Everything an Azure ML compute instance needs is reachable: the workspace, notebook "
            "and storage names resolve to their private endpoints through linked privatelink "
            "zones, outbound 443/445/8787/18881 and UDP 5831 are open, TLS is issued by the "
            "expected Microsoft CA and WebSockets upgrade. Expect a clean report.",
        ),
        Scenario(
            "healthy-public",
            "Healthy: public workspace, compute instance with a public IP",
            "A workspace without private endpoints and a compute instance with a public IP: every "
            "name resolves to its public front end and all required ports are open. Expect a clean "
            "report.",
            context=_PUBLIC,
        ),
        Scenario(
            "nsg-drop-445",
            "An NSG silently drops SMB (TCP 445) to storage",
            "An NSG rule drops outbound TCP 445, so the workspace file share (Azure Files over "
            "SMB) cannot be mounted; connections time out. Expect smb-blocked.",
            faults=(Fault("drop", "tcp", 445),),
            expected_exit=2,
            expected_findings=("smb-blocked",),
        ),
        Scenario(
            "firewall-reset",
            "A firewall resets HTTPS to Azure Batch",
            "A firewall without the BatchNodeManagement rule answers TCP 443 to "
            + " and ".join(f"*.{h}" for h in BATCH_FRONT_ENDS)
            + " with a TCP reset (faults on "
            + " and ".join(BATCH_FRONT_ENDS)
            + ", the shared front ends of those names). Expect egress-rejected.",
            faults=tuple(Fault("reset", "tcp", 443, h) for h in BATCH_FRONT_ENDS),
            expected_exit=2,
            expected_findings=("egress-rejected",),
        ),
        Scenario(
            "udp-5831-closed",
            "UDP 5831 (compute instance management) is rejected",
            "A firewall rejects outbound UDP 5831 with ICMP port-unreachable, so the compute "
            "instance cannot be created, updated or deleted. Expect udp-blocked.",
            faults=(Fault("reject-port", "udp", 5831),),
            expected_exit=2,
            expected_findings=("udp-blocked",),
        ),
        Scenario(
            "nxdomain",
            "A required public name does not resolve (graph.windows.net NXDOMAIN)",
            "The resolver answers NXDOMAIN for graph.windows.net (a broken conditional forwarder "
            "or a DNS filter). Expect dns-name-missing.",
            nxdomain=("graph.windows.net",),
            expected_exit=2,
            expected_findings=("dns-name-missing",),
        ),
        Scenario(
            "pe-resolves-public",
            "Private endpoint names resolve to public addresses (privatelink zones not linked)",
            "The privatelink.api.azureml.ms and privatelink.notebooks.azure.net zones are not "
            "linked to the VNet, so the workspace names follow their CNAMEs to public front ends "
            "instead of the private endpoint. Expect private-endpoint-resolves-public.",
            private_zones="unlinked",
            expected_exit=2,
            expected_findings=("private-endpoint-resolves-public",),
        ),
        Scenario(
            "tls-inspection-untrusted",
            "A TLS-inspecting firewall re-signs HTTPS with a CA the node does not trust",
            "Every HTTPS connection is intercepted and presented with a certificate from "
            "'Contoso Inspection CA' (O=Contoso Firewall), which is not in the node's trust "
            "store. Expect tls-intercepted-untrusted.",
            tls_intercept=("*",),
            expected_exit=2,
            expected_findings=("tls-intercepted-untrusted",),
        ),
        Scenario(
            "websocket-refused",
            "A middlebox refuses WebSocket upgrades (Jupyter will not work)",
            "HTTPS works, but every WebSocket upgrade to the compute instance names is answered "
            "HTTP 403 by a proxy or firewall. Expect websocket-blocked.",
            websocket_refused=True,
            expected_exit=2,
            expected_findings=("websocket-blocked",),
        ),
    )
}

DEFAULT_SCENARIO = "healthy-private"


def scenario(name: str) -> Scenario:
    """The named scenario; KeyError listing the known names otherwise."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
