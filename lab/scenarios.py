"""Lab scenarios as data: what the simulated VNet looks like and what the agent should find.

A scenario names DNS behaviour, NSG/firewall faults, and TLS/WebSocket/UDP behaviour of the
simulated Azure side. The names in SCENARIOS are API: `aml-netcheck demo` and the end-to-end
tests use them.

Name lists (`nxdomain`, `servfail`, `tls_intercept`, `proxy_deny`, `firewall_deny_http`) hold
exact names or shell-style patterns (`*.blob.core.windows.net`); `"*"` matches every name.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

from lab import addresses
from lab.names import private_names

FaultAction = Literal["drop", "reset", "reject-port", "reject-admin"]
Protocol = Literal["tcp", "udp"]
FaultSite = Literal["azure", "appliance"]
PrivateZones = Literal["linked", "unlinked", "missing"]
Resolver = Literal["azure", "custom"]
ProxyMode = Literal["open", "auth", "unreachable"]
WebSocketFront = Literal["nginx", "nginx-no-upgrade"]


@dataclass(frozen=True, slots=True)
class Fault:
    """An NSG or firewall rule on the way into "Azure": port None means every port; host is a
    name, an address or a network (CIDR), None for every destination. `at` "appliance": the
    scenario's network virtual appliance applies it as it forwards (the packet passed one hop)."""

    action: FaultAction
    protocol: Protocol
    port: int | None
    host: str | None = None
    at: FaultSite = "azure"

    def __post_init__(self) -> None:
        if self.action not in ("drop", "reset", "reject-port", "reject-admin"):
            raise ValueError(f"unknown fault action {self.action!r}")
        if self.protocol not in ("tcp", "udp"):
            raise ValueError(f"unknown protocol {self.protocol!r}")
        if self.action == "reset" and self.protocol != "tcp":
            raise ValueError("a reset fault needs protocol tcp")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")
        if self.at not in ("azure", "appliance"):
            raise ValueError(f"unknown fault site {self.at!r}")


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
    # the storage account's own private endpoints (blob, file); None: as the workspace has one.
    # What `check` is told of them is the scenario's `options`.
    storage_private_endpoint: bool | None = None

    @property
    def storage_has_private_endpoint(self) -> bool:
        return self.private_endpoint if self.storage_private_endpoint is None else self.storage_private_endpoint


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
    # a real nginx terminates TLS at the workspace private endpoint (the compute instance names) and
    # proxies to the lab's WebSocket backend; "nginx-no-upgrade": without forwarding the Upgrade headers
    websocket_front: WebSocketFront | None = None
    udp_silent: bool = False
    smb_silent: bool = False  # 445 accepted by a middlebox that never answers, in place of samba
    smb_max_protocol: str = "SMB3_11"  # samba's `server max protocol` (SMB2_10: at most SMB 2.1)
    # what the agent should conclude
    expected_exit: int = 0
    expected_findings: tuple[str, ...] = ()
    _: KW_ONLY
    # a forward proxy at addresses.PROXY (a real squid, lab.squid): the node's HTTPS_PROXY/HTTP_PROXY/NO_PROXY
    # name it
    proxy: ProxyMode | None = None  # auth: 407 without lab.squid.CREDENTIALS; unreachable: down
    proxy_credentials: bool = False  # the node's proxy URLs carry lab.squid.CREDENTIALS
    proxy_deny: tuple[str, ...] = ()  # names the proxy refuses with 403
    proxy_connect_ports: tuple[int, ...] = ()  # CONNECT only to these ports (a stock squid: SSL_ports 443); (): any
    proxy_reaches_private: bool = True  # False: the proxy has no route to the PE subnet (503)
    proxy_inspects: bool = False  # the proxy bumps TLS to 443 with the inspection CA (squid ssl-bump)
    proxy_trusts_services: bool = True  # an inspecting proxy's own trust store verifies the services' certificates
    no_proxy: tuple[str, ...] = ()  # the node's NO_PROXY entries
    # the path and the servers
    appliance: bool = False  # the node's gateway is a network virtual appliance routing on to Azure (forced tunnel)
    # names whose addresses the compute subnet's route table sends to next hop Internet, around the appliance
    internet_routes: tuple[str, ...] = ()
    path_mtu: int | None = None  # TCP 443 packets toward the node above this size vanish, no ICMP
    slow_from: tuple[str, ...] = ()  # networks whose packets toward the node come `slow_ms` late (lab.delay)
    slow_ms: float = 0.0
    node_mtu: int | None = None  # the node's uplink MTU, as its admin set it (None: the link's 1500)
    # a container behind a Docker bridge in the node, with this MTU on the bridge and its interface
    # (Docker's default is 1500 whatever the uplink); `check --netns` looks from it
    container_mtu: int | None = None
    server_clock_offset: int = 0  # seconds the simulated Azure clocks run ahead of the node's
    firewall_deny_http: tuple[str, ...] = ()  # names whose plain HTTP (80) a firewall answers 470
    resource_firewall: tuple[str, ...] = ()  # names whose HTTPS answer is their service's network-rule denial (403)
    identity_denied: tuple[str, ...] = ()  # names whose service refuses the node's managed identity (RBAC)
    # DNS records and trust
    instance_address: str | None = None  # the compute instance names' A record (None: the PE)
    more_resolvers: tuple[Resolver, ...] = ()  # further nameservers in the node's resolv.conf, after `resolver`
    hosts: tuple[str, ...] = ()  # lines added to the node's /etc/hosts, as written
    inspection_ca_trusted: bool = False  # the inspection CA is in the node's trust store
    # what `check` is told: False, nothing (the agent detects the context: CI_*, mounts, IMDS)
    context_options: bool = True
    options: tuple[str, ...] = ()  # further `check` options (--storage-private-endpoint)

    def check_args(self) -> list[str]:
        """The context as `aml-netcheck check` options (none without `context_options`)."""
        if not self.context_options:
            return []
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
            *self.options,
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
NO_PROXY_LOCAL = ("localhost", "127.0.0.1", addresses.IMDS, addresses.AZURE_DNS)
NO_PROXY_PRIVATE = (*NO_PROXY_LOCAL, *private_names(_PRIVATE))
"""NO_PROXY of a node that reaches its private endpoints directly: the local names, IMDS, Azure DNS
and every private endpoint name of the default context."""
_PROXY = f"{addresses.PROXY}:{addresses.PROXY_PORT}"
IDENTITY_OPTIONS = ("--use-identity", "--key-vault", "contoso-kv", "--container-registry", "contosoacr")
"""check --use-identity with the workspace's key vault and registry named (the lab's managed identity scenarios)."""
_STORAGE = _PRIVATE.storage_account
_OLD_BLOB_PE = "10.0.1.99"  # a storage private endpoint address since deleted (hosts-file-stale)


def _proxied(name: str, summary: str, description: str, **knobs: Any) -> Scenario:
    """A private node whose only way out is the proxy: direct TCP 443 to the internet is
    dropped; private endpoints, DNS, IMDS and UDP stay direct."""
    knobs.setdefault("proxy", "open")
    knobs.setdefault("no_proxy", NO_PROXY_PRIVATE)
    faults = (Fault("drop", "tcp", 443, addresses.PUBLIC_NET),)
    return Scenario(name, summary, description, faults=faults, **knobs)


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
            "smb-silent-middlebox",
            "Something accepts TCP 445 to storage and never answers SMB",
            "A firewall or proxy on the path terminates TCP 445: connections to the storage account's "
            "file endpoint are accepted, but the SMB2 NEGOTIATE never gets an answer, so the share cannot "
            "be mounted although a TCP check passes. Expect smb-blocked.",
            smb_silent=True,
            expected_exit=2,
            expected_findings=("smb-blocked",),
        ),
        Scenario(
            "smb-dialect-old",
            "The SMB server on 445 negotiates at most SMB 2.1",
            "The server answering on 445 (an SMB proxy, or a server that is not Azure Files) is capped at "
            "SMB 2.1 (samba's server max protocol = SMB2_10): the share would mount without encryption and "
            "never from outside the region. Expect smb-dialect-old (a warning).",
            smb_max_protocol="SMB2_10",
            expected_exit=1,
            expected_findings=("smb-dialect-old",),
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
        Scenario(
            "websocket-nginx",
            "Healthy: nginx in front of the compute instance proxies the WebSocket upgrade",
            "A real nginx listens on the workspace private endpoint, where the compute instance names "
            "resolve, terminates TLS with the lab CA's certificates and proxies to the instance's "
            "HTTP/WebSocket backend with proxy_http_version 1.1 and the Upgrade and Connection headers "
            "set, as nginx documents for WebSocket. Expect a clean report.",
            websocket_front="nginx",
        ),
        Scenario(
            "websocket-no-upgrade",
            "A reverse proxy in front of the instance does not forward the WebSocket upgrade",
            "The same nginx, configured as a plain reverse proxy: without proxy_set_header Upgrade and "
            "Connection (hop-by-hop headers) the backend gets an ordinary request and answers it, so "
            "every WebSocket handshake gets a plain HTTP answer instead of 101 while HTTPS works. "
            "Expect websocket-blocked.",
            websocket_front="nginx-no-upgrade",
            expected_exit=2,
            expected_findings=("websocket-blocked",),
        ),
        Scenario(
            "firewall-drop",
            "A firewall silently drops HTTPS to Azure Batch",
            "A firewall without the BatchNodeManagement rule drops TCP 443 to "
            + " and ".join(f"*.{h}" for h in BATCH_FRONT_ENDS)
            + " without an answer, so connections time out; everything else is open. Expect "
            "egress-blocked.",
            faults=tuple(Fault("drop", "tcp", 443, h) for h in BATCH_FRONT_ENDS),
            expected_exit=2,
            expected_findings=("egress-blocked",),
        ),
        Scenario(
            "appliance-drop",
            "A forced tunnel's appliance drops HTTPS to Azure Batch",
            "The compute subnet's routes send everything through a network virtual appliance (forced "
            "tunnelling), whose firewall has no rule for Azure Batch: TCP 443 to "
            + " and ".join(f"*.{h}" for h in BATCH_FRONT_ENDS)
            + " passes the appliance's hop and dies behind it. Expect egress-blocked past the appliance, with "
            "its firewall rules and the next-hop-Internet route as the two fixes.",
            faults=tuple(Fault("drop", "tcp", 443, h, at="appliance") for h in BATCH_FRONT_ENDS),
            appliance=True,
            expected_exit=2,
            expected_findings=("egress-blocked",),
        ),
        Scenario(
            "slow-path",
            "Every public service answers, 400 ms late",
            "The path to the internet is slow but works, as behind a forced tunnel to a far or congested "
            f"appliance: every packet from the public services ({addresses.PUBLIC_NET}) reaches the node 400 ms "
            "late, while the private endpoints, DNS and IMDS answer at once. TCP connects take 400 ms against the "
            "300 ms threshold, TLS and HTTP stay under theirs. Expect one latency-degraded warning for the "
            "public path (exit 1), nothing failing.",
            slow_from=(addresses.PUBLIC_NET,),
            slow_ms=400.0,
            expected_exit=1,
            expected_findings=("latency-degraded",),
        ),
        Scenario(
            "forced-tunnel-public-ip",
            "A forced tunnel without the routes a public-IP compute needs",
            "As appliance-drop, for a compute instance with a public IP (--public-ip --forced-tunnel): the "
            "appliance drops Azure Batch, and without routes with next hop Internet for AzureMachineLearning "
            "and BatchNodeManagement the replies to Azure ML's inbound management traffic (TCP 44224) leave "
            "through the appliance too. Expect egress-blocked past the appliance, naming those routes.",
            context=Context(public_ip=True),
            faults=tuple(Fault("drop", "tcp", 443, h, at="appliance") for h in BATCH_FRONT_ENDS),
            appliance=True,
            options=("--forced-tunnel",),
            expected_exit=2,
            expected_findings=("egress-blocked",),
        ),
        Scenario(
            "forced-tunnel-routed",
            "A forced tunnel with the required routes: Azure Batch goes around the appliance",
            "As forced-tunnel-public-ip, with the fix in place: the route table sends the Batch front ends to "
            "next hop Internet, so they leave the node by a path of their own and the appliance that drops "
            "them never sees them. Expect no finding.",
            context=Context(public_ip=True),
            faults=tuple(Fault("drop", "tcp", 443, h, at="appliance") for h in BATCH_FRONT_ENDS),
            appliance=True,
            internet_routes=BATCH_FRONT_ENDS,
            options=("--forced-tunnel",),
        ),
        Scenario(
            "managed-vnet",
            "A managed virtual network that allows only approved outbound, without a rule for studio",
            "The workspace's managed virtual network allows only approved outbound (--managed-network "
            "allow_only_approved_outbound): Azure ML's required rules are in place, but no user-defined "
            "outbound rule lets the compute reach ml.azure.com, whose TCP 443 the network's firewall drops. "
            "Expect egress-blocked whose remedy is the outbound rule to add (az ml workspace outbound-rule "
            "set --type fqdn --destination ml.azure.com) and whose commands are the workspace's, never an NSG "
            "rule: Azure ML owns that network's NSG and routes.",
            faults=(Fault("drop", "tcp", 443, "ml.azure.com"),),
            options=("--managed-network", "allow_only_approved_outbound"),
            expected_exit=2,
            expected_findings=("egress-blocked",),
        ),
        Scenario(
            "imds-blocked",
            "Instance metadata is unreachable and `check` is run with no options",
            f"A host firewall rule drops traffic to IMDS ({addresses.IMDS}:80), and the agent runs "
            "as a setup script would, with no context options: it finds the compute from CI_* "
            "variables and the storage account from the workspace share mount, but not the "
            "region, so region-specific checks are skipped. Expect imds-unavailable (a warning).",
            faults=(Fault("drop", "tcp", 80, addresses.IMDS),),
            context_options=False,
            expected_exit=1,
            expected_findings=("imds-unavailable",),
        ),
        _proxied(
            "proxy-ok",
            "Healthy behind a forward proxy: the internet only through it, private endpoints direct",
            f"HTTPS_PROXY and HTTP_PROXY point at an open forward proxy at {_PROXY} and direct "
            "outbound TCP 443 to the internet is dropped, as in a network whose only way out is "
            "the proxy. NO_PROXY lists the private endpoint names, so the workspace, notebooks, "
            "storage and compute instance names are reached directly and everything else through "
            "the proxy. Expect a clean report.",
        ),
        Scenario(
            "storage-firewall-denied",
            "The storage account's own firewall denies the subnet (403 AuthorizationFailure)",
            "The network path to the workspace storage works, but the storage account allows only "
            "selected networks and the compute subnet is not one of them: every HTTPS request gets 403 "
            "with x-ms-error-code AuthorizationFailure, as Azure Storage answers. "
            "Expect resource-firewall-denied.",
            resource_firewall=(f"{_STORAGE}.blob.core.windows.net", f"{_STORAGE}.file.core.windows.net",
                               f"{_STORAGE}.queue.core.windows.net", f"{_STORAGE}.table.core.windows.net"),
            expected_exit=2,
            expected_findings=("resource-firewall-denied",),
        ),
        Scenario(
            "workspace-public-access-disabled",
            "The workspace has public network access disabled and this node reaches its public name",
            "The node is in a VNet without the workspace's private endpoint (a compute with a public IP, "
            "the workspace names resolve to the public front end) while the workspace accepts only its "
            "private endpoint: the workspace API names answer 403 with Azure ML's UserError 'Access to "
            "workspace was denied based on workspace private link configuration'. Expect "
            "resource-firewall-denied naming the workspace and the private endpoint path. (Told that the "
            "workspace has a private endpoint, the names resolving public is the finding first: "
            "pe-resolves-public.)",
            context=_PUBLIC,
            resource_firewall=(f"{_PRIVATE.workspace_id}.workspace.{_PRIVATE.region}.api.azureml.ms",
                               f"{_PRIVATE.workspace_id}.workspace.{_PRIVATE.region}.cert.api.azureml.ms"),
            expected_exit=2,
            expected_findings=("resource-firewall-denied",),
        ),
        Scenario(
            "proxy-ssl-ports",
            "A stock squid behind the proxy: CONNECT only to port 443, so the instance's 8787 and 18881 fail",
            f"The node sends everything but the workspace's own API names through {_PROXY} (NO_PROXY lists "
            "the workspace, notebooks and storage names, not the compute instance's), and the proxy, like a "
            "stock squid, refuses CONNECT outside its SSL_ports (443) with 403; direct TCP 8787 and 18881 "
            "are closed, so the proxy is the only way. Expect proxy-denied naming 8787 and 18881 and the "
            "SSL_ports setting, not a direct egress rule.",
            proxy="open", no_proxy=NO_PROXY_LOCAL + tuple(
                name for name in NO_PROXY_PRIVATE[len(NO_PROXY_LOCAL):] if ".instances." not in name),
            proxy_connect_ports=(443,),
            faults=(Fault("drop", "tcp", 8787, addresses.PE_WORKSPACE),
                    Fault("drop", "tcp", 18881, addresses.PE_WORKSPACE)),
            expected_exit=2,
            expected_findings=("proxy-denied",),
        ),
        Scenario(
            "proxy-only",
            "Healthy where every direct connection to the internet is dropped: all of it through the proxy",
            f"As proxy-ok, but the network drops direct TCP to the internet on every port, plain "
            f"HTTP on 80 included: HTTPS goes through HTTPS_PROXY and plain HTTP (Entra ID on port "
            f"80) through HTTP_PROXY, both {_PROXY}, as the node's clients send them. Private "
            "endpoints, DNS, IMDS and UDP stay direct. Expect a clean report: the dropped direct "
            "paths are not needed.",
            proxy="open", no_proxy=NO_PROXY_PRIVATE, faults=(Fault("drop", "tcp", None, addresses.PUBLIC_NET),),
        ),
        _proxied(
            "proxy-auth-required",
            "The proxy demands authentication (407) and the node sends no credentials",
            "As proxy-ok, but the proxy answers every request without the right Basic credentials "
            "with 407 Proxy Authentication Required (Proxy-Authenticate: Basic realm=\"contoso\"), "
            "and HTTPS_PROXY carries none: nothing outside the private endpoints is reachable. "
            "Expect proxy-auth-required.",
            proxy="auth",
            expected_exit=2,
            expected_findings=("proxy-auth-required",),
        ),
        _proxied(
            "proxy-auth-ok",
            "Healthy behind an authenticating proxy whose credentials the node has",
            "As proxy-auth-required, but HTTPS_PROXY and HTTP_PROXY carry the right user and "
            "password (http://user:password@host:port), so the proxy lets everything through. "
            "Expect a clean report, with the password redacted wherever the proxy is shown.",
            proxy="auth",
            proxy_credentials=True,
        ),
        _proxied(
            "proxy-denied",
            "The proxy's policy refuses *.api.azureml.ms (403)",
            "As proxy-ok, but the proxy's URL filter does not allow Azure Machine Learning: it "
            "answers CONNECT to any name under api.azureml.ms (the regional API "
            f"{_PRIVATE.region}.api.azureml.ms) with 403 Forbidden. The workspace's private "
            "endpoint names bypass the proxy and work. Expect proxy-denied.",
            proxy_deny=("*.api.azureml.ms",),
            expected_exit=2,
            expected_findings=("proxy-denied",),
        ),
        _proxied(
            "proxy-inspection-untrusted",
            "The proxy inspects TLS (squid ssl-bump) with a CA the node does not trust",
            "As proxy-ok, but the proxy bumps every CONNECT to port 443: it presents certificates "
            "from 'Contoso Inspection CA' (O=Contoso Firewall) that mimic the servers', and the node "
            "does not trust that CA. Expect tls-intercepted-untrusted.",
            proxy_inspects=True,
            expected_exit=2,
            expected_findings=("tls-intercepted-untrusted",),
        ),
        _proxied(
            "proxy-inspection-trusted",
            "The proxy inspects TLS (squid ssl-bump) with a CA the node trusts",
            "As proxy-inspection-untrusted, but the inspection CA is in the node's trust store: the "
            "proxied HTTPS works, with certificates that are not Microsoft's. Expect tls-intercepted "
            "(a warning).",
            proxy_inspects=True,
            inspection_ca_trusted=True,
            expected_exit=1,
            expected_findings=("tls-intercepted",),
        ),
        _proxied(
            "proxy-inspection-unverified",
            "The inspecting proxy cannot verify the services' certificates (its trust store lacks their root)",
            "As proxy-inspection-trusted, but squid's own trust store (tls_outgoing_options cafile) lacks "
            "the root the services' certificates chain to: inside the bumped TLS squid answers every "
            "request itself with 503 ERR_SECURE_CONNECT_FAIL. Before, each HTTPS check took that for the "
            "service's answer (only tls-intercepted, a warning) and the WebSocket check blamed the "
            "upgrade. Expect proxy-denied naming squid's error and its trust store or a splice as the fix.",
            proxy_inspects=True,
            inspection_ca_trusted=True,
            proxy_trusts_services=False,
            expected_exit=2,
            expected_findings=("proxy-denied",),
        ),
        _proxied(
            "proxy-unreachable",
            "HTTPS_PROXY names a proxy that is down (connection refused)",
            f"As proxy-ok, but nothing listens at the proxy's address {_PROXY}, so every "
            "connection to it is refused and, with direct egress dropped, nothing outside the "
            "private endpoints is reachable. Expect proxy-unreachable.",
            proxy="unreachable",
            expected_exit=2,
            expected_findings=("proxy-unreachable",),
        ),
        _proxied(
            "proxy-missing-no-proxy",
            "NO_PROXY omits the private endpoint names, and the proxy cannot reach them",
            "An open proxy as in proxy-ok, but NO_PROXY lists only localhost, IMDS and Azure DNS: "
            "the workspace, notebooks, storage and compute instance names go to the proxy, which "
            f"has no route to the private endpoint subnet {addresses.PE_SUBNET} and answers "
            "CONNECT with 502 Bad Gateway. The same names work when reached directly. Expect "
            "proxy-bypass-required.",
            no_proxy=NO_PROXY_LOCAL,
            proxy_reaches_private=False,
            expected_exit=2,
            expected_findings=("proxy-bypass-required",),
        ),
        Scenario(
            "identity-key-vault-firewall",
            "The key vault's firewall denies this node, which only an authenticated request sees",
            "check --use-identity with the workspace key vault and registry named: the vault's network rules "
            "do not allow the compute subnet. Anonymous requests get 401 either way (Key Vault checks its "
            "firewall after authentication); the managed identity's request gets 403 with the inner code "
            "ForbiddenByFirewall, while ARM and the registry let the identity in. Expect resource-firewall-denied "
            "naming the vault's network rules, not a role.",
            resource_firewall=("contoso-kv.vault.azure.net",),
            options=IDENTITY_OPTIONS,
            expected_exit=2,
            expected_findings=("resource-firewall-denied",),
        ),
        Scenario(
            "identity-key-vault-rbac",
            "The key vault lets the node in but refuses its managed identity (no role)",
            "As identity-key-vault-firewall, but the vault's network rules allow the node and its RBAC has no "
            "role for the node's identity: 403 Forbidden with the inner code ForbiddenByRbac. Expect "
            "identity-access-denied (a warning) naming the Key Vault Secrets User role, not a network rule.",
            identity_denied=("contoso-kv.vault.azure.net",),
            options=IDENTITY_OPTIONS,
            expected_exit=1,
            expected_findings=("identity-access-denied",),
        ),
        _proxied(
            "identity-through-proxy",
            "NO_PROXY lacks IMDS: managed identity calls would go to the proxy",
            "As proxy-ok, but NO_PROXY (both cases, as the setup script wrote it) lists loopback, Azure DNS and "
            f"the private endpoints, not IMDS ({addresses.IMDS}): Azure ML's credential would send its http:// "
            "token requests to HTTP_PROXY. Everything else works, and the agent's own IMDS and MSI_ENDPOINT "
            "checks go direct. Expect identity-via-proxy (a warning) naming the NO_PROXY line to set: the "
            f"current value with {addresses.IMDS} appended.",
            no_proxy=tuple(name for name in NO_PROXY_PRIVATE if name != addresses.IMDS),
            expected_exit=1,
            expected_findings=("identity-via-proxy",),
        ),
        Scenario(
            "mtu-blackhole",
            "A path-MTU black hole: TCP connects, TLS handshakes stall",
            "Packets over 1200 bytes from TCP 443 toward the node are dropped on the way and the "
            "ICMP fragmentation-needed messages that would report it are filtered. TCP connects "
            "and small exchanges work, but every TLS handshake stalls when the server sends its "
            "certificate chain (an RSA leaf and the issuing CA, well over 1200 bytes). Expect "
            "tls-handshake-stalled.",
            path_mtu=1200,
            expected_exit=2,
            expected_findings=("tls-handshake-stalled",),
        ),
        Scenario(
            "container-mtu",
            "The node fits its path's MTU, its Docker bridge does not",
            "As in mtu-blackhole, packets over 1200 bytes toward the node vanish, but the node's own uplink "
            "has MTU 1200 (its admin set it), so its TCP advertises a fitting MSS and the host run is healthy. "
            "A container behind the node's Docker bridge has Docker's default MTU 1500: its handshakes stall "
            "when servers send their certificate chains. Expect nothing from the host; `check --netns` into the "
            "container (the lab's container namespace) gives vantage-mtu-above-host.",
            path_mtu=1200,
            node_mtu=1200,
            container_mtu=1500,
        ),
        Scenario(
            "custom-dns-no-forwarder",
            "A custom DNS server that does not forward the private zones to Azure DNS",
            f"The node's resolver is a customer DNS server at {addresses.CUSTOM_DNS} without "
            f"conditional forwarders to {addresses.AZURE_DNS} for the workspace's zones: it "
            "resolves the workspace, notebooks, storage and compute instance names as the "
            "internet does, to public front ends instead of the private endpoints. Expect "
            "custom-dns-not-forwarding.",
            resolver="custom",
            custom_dns_forwards=False,
            expected_exit=2,
            expected_findings=("custom-dns-not-forwarding",),
        ),
        Scenario(
            "hosts-file-stale",
            "A stale /etc/hosts line pins the storage blob name to its old private endpoint address",
            f"The node's /etc/hosts still pins {_STORAGE}.blob.core.windows.net to {_OLD_BLOB_PE}, the "
            "address of a private endpoint since deleted (where nothing answers: TCP is dropped), while "
            f"DNS gives the current endpoint {addresses.PE_BLOB}. getaddrinfo reads the file first, so every "
            "connection to the name goes to the old address. Expect hosts-file-override naming the file "
            "and the line, not egress-blocked.",
            hosts=(f"{_OLD_BLOB_PE} {_STORAGE}.blob.core.windows.net  # storage private endpoint",),
            faults=(Fault("drop", "tcp", None, _OLD_BLOB_PE),),
            expected_exit=2,
            expected_findings=("hosts-file-override",),
        ),
        Scenario(
            "resolvers-disagree",
            "Two resolvers in resolv.conf: Azure DNS has the private zones, the custom server does not",
            f"The node's resolv.conf lists {addresses.AZURE_DNS} and then the custom server "
            f"{addresses.CUSTOM_DNS}, which has no conditional forwarders: Azure DNS answers the private "
            "endpoint names privately, the custom server publicly. The node resolves them privately "
            "while the first server answers, and publicly whenever its resolver moves to the second "
            "(a timeout, `options rotate`). Expect dns-resolvers-disagree naming which server said what "
            "(critical: the node fails at random).",
            more_resolvers=("custom",),
            custom_dns_forwards=False,
            expected_exit=2,
            expected_findings=("dns-resolvers-disagree",),
        ),
        Scenario(
            "storage-pe-custom-dns-no-forward",
            "The storage account has its own private endpoint; the custom DNS server forwards nothing",
            "A public workspace whose storage account has private endpoints of its own (blob and file, "
            "in privatelink.blob/file.core.windows.net), and `check` is told so (--storage-private-endpoint). "
            f"The node's resolver is a customer DNS server at {addresses.CUSTOM_DNS} without conditional "
            f"forwarders to {addresses.AZURE_DNS}: the storage names follow their CNAMEs into the privatelink "
            "zones to the public front end, so the share is reached on the public endpoint, which a storage "
            "account behind its private endpoint refuses. Expect custom-dns-not-forwarding naming the "
            "storage zones (before the storage endpoints were known, this passed).",
            context=dataclasses.replace(_PUBLIC, storage_private_endpoint=True),
            resolver="custom",
            custom_dns_forwards=False,
            options=("--storage-private-endpoint",),
            expected_exit=2,
            expected_findings=("custom-dns-not-forwarding",),
        ),
        Scenario(
            "storage-pe-detected-from-cname",
            "Nobody says the storage account has a private endpoint; its CNAME chain does, and its zone is unlinked",
            "As storage-pe-custom-dns-no-forward, but with Azure DNS and nothing said about the storage "
            "account's endpoints: the privatelink.blob/file.core.windows.net zones are not linked to the "
            "VNet, so the storage names resolve public through their CNAMEs into the privatelink zones. "
            "The chain shows the private endpoint: expect private-endpoint-resolves-public, saying it was "
            "detected from the CNAME chain.",
            context=dataclasses.replace(_PUBLIC, storage_private_endpoint=True),
            private_zones="unlinked",
            expected_exit=2,
            expected_findings=("private-endpoint-resolves-public",),
        ),
        Scenario(
            "dns-dead",
            "The node's only resolver does not answer",
            f"A firewall drops UDP and TCP 53 to {addresses.AZURE_DNS}, the node's only "
            "resolver, so every query times out; addresses themselves stay reachable. Expect "
            "dns-unavailable.",
            faults=(
                Fault("drop", "udp", 53, addresses.AZURE_DNS),
                Fault("drop", "tcp", 53, addresses.AZURE_DNS),
            ),
            expected_exit=2,
            expected_findings=("dns-unavailable",),
        ),
        Scenario(
            "dns-servfail",
            "The resolver answers SERVFAIL for every name",
            "The node's resolver answers every query with SERVFAIL, as a resolver does whose "
            "upstream is unreachable or whose DNSSEC validation fails. Expect dns-servfail.",
            servfail=("*",),
            expected_exit=2,
            expected_findings=("dns-servfail",),
        ),
        Scenario(
            "clock-skew",
            "The node's clock is two days behind Azure's",
            "The simulated Azure servers' clocks run 48 hours ahead of the node's: every HTTP and "
            "HTTPS answer (IMDS and the WebSocket handshake included) carries a Date header two "
            "days ahead, and the servers' certificates, issued an hour before their time, are not "
            "yet valid from the node's point of view. Expect clock-skew.",
            server_clock_offset=2 * 86400,
            expected_exit=2,
            expected_findings=("clock-skew",),
        ),
        Scenario(
            "no-egress",
            "No outbound path: no public IP, no NAT gateway, no firewall route",
            "A compute instance without a public IP in a subnet with neither a NAT gateway nor a "
            "route to a firewall: every connection to the internet (the lab's public range "
            f"{addresses.PUBLIC_NET}, every TCP and UDP port) is silently dropped, while Azure "
            "DNS, IMDS and the private endpoints keep working. Expect no-outbound-connectivity.",
            faults=(
                Fault("drop", "tcp", None, addresses.PUBLIC_NET),
                Fault("drop", "udp", None, addresses.PUBLIC_NET),
            ),
            expected_exit=2,
            expected_findings=("no-outbound-connectivity",),
        ),
        Scenario(
            "private-record-missing",
            "The privatelink zones are linked but hold no records for the workspace",
            "The privatelink zones (api.azureml.ms, notebooks.azure.net, file and blob) are "
            "linked to the VNet but have no A records for this workspace's private endpoints (they "
            "were created without a DNS zone group): the names CNAME into the zones and end in "
            "NXDOMAIN. Expect private-dns-record-missing.",
            private_zones="missing",
            expected_exit=2,
            expected_findings=("private-dns-record-missing",),
        ),
        Scenario(
            "instance-name-wrong-address",
            "The compute instance names resolve to the instance's own address",
            "The customer's DNS records for the compute instance names "
            f"({_PRIVATE.compute_name}.{_PRIVATE.region}.instances.azureml.ms and "
            ".instances.ml.azure.ms) point at the instance's own address "
            f"{addresses.NODE} instead of the workspace private endpoint "
            f"{addresses.PE_WORKSPACE}, so the studio cannot reach its terminal and notebooks. "
            "Expect instance-name-wrong-address.",
            instance_address=addresses.NODE,
            expected_exit=2,
            expected_findings=("instance-name-wrong-address",),
        ),
        Scenario(
            "tls-inspection-trusted",
            "A TLS-inspecting firewall re-signs HTTPS with a CA the node trusts",
            "Every HTTPS connection is intercepted and re-signed by 'Contoso Inspection CA' "
            "(O=Contoso Firewall), which was added to the node's trust store: connections work, "
            "but not with Microsoft's certificates, which breaks certificate pinning and is "
            "unsupported for Azure ML's service traffic. Expect tls-intercepted (a warning).",
            tls_intercept=("*",),
            inspection_ca_trusted=True,
            expected_exit=1,
            expected_findings=("tls-intercepted",),
        ),
        Scenario(
            "azure-firewall-deny",
            "Azure Firewall denies plain HTTP to login.microsoftonline.com (HTTP 470)",
            "An Azure Firewall without an application rule for http://login.microsoftonline.com "
            "answers plain HTTP (port 80) to it with its default deny: 'HTTP/1.1 470 status code "
            "470' and the body 'Action: Deny. Reason: No rule matched. Proceeding with default "
            "action.'. TCP connects; HTTPS is allowed. Expect egress-rejected.",
            firewall_deny_http=("login.microsoftonline.com",),
            expected_exit=2,
            expected_findings=("egress-rejected",),
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
