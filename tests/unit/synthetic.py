"""The synthetic report set the output and contract tests render: a healthy node, a proxy-only
node (every direct path failing, the proxy working), one report per finding code that synthetic
outcomes can produce (the single-cause CASES of test_diagnose first), and a few shapes that stress
the renderers (two findings of one code, a warned check, a run stopped by a signal)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent import catalog, planner
from agent.diagnose import Facts, diagnose
from agent.model import CheckPath, Report
from probes._trace import Fact
from probes.reasons import Reason, Status
from probes.specs import Layer, Proxy

from .helpers import Outcome, make_context, make_plan, simulate
from .test_diagnose import AT_FIRST_HOP, BATCH, CASES, CERT, CI, PAST_APPLIANCE, PE_ADDRESSES, WS, path

STARTED_AT = "2026-11-23T12:00:00.123Z"
NODE: dict[str, Fact] = {
    "hostname": "ci-alice", "resolvers": ["168.63.129.16"], "default_routes": [{"interface": "eth0"}],
    "interfaces": [{"name": "eth0", "addresses": ["10.0.0.4/24"]}]}
CUSTOM_DNS_NODE: dict[str, Fact] = {**NODE, "resolvers": ["10.0.2.4"]}
IMDS_FAILED_NODE: dict[str, Fact] = {**NODE, "detection": {"imds": {"error": "TimeoutError"}}}
_ETH0 = {"default_routes": [{"family": "ipv4", "interface": "eth0"}]}
CONTAINER_NODE: dict[str, Fact] = {  # a run from a container whose MTU is above its host's uplink
    **NODE, **_ETH0, "interfaces": [{"name": "eth0", "mtu": 1500, "addresses": ["172.17.0.2/16"]}],
    "vantage": {"kind": "container", "name": "job-1", "host": {
        **_ETH0, "interfaces": [{"name": "eth0", "mtu": 1400, "addresses": ["10.0.0.4/24"]}],
        "resolvers": ["168.63.129.16"]}}}
PROXY = planner.PlanOptions(proxy=Proxy.parse("http://proxy.contoso.net:3128"))
PROXY_TCP = "tcp:proxy.contoso.net:3128"
SMB = "tcp:contosomlsa.file.core.windows.net:445"


@dataclass(frozen=True)
class Scenario:
    name: str
    outcomes: Mapping[str, Outcome]
    codes: frozenset[str]  # the finding codes diagnosis must give
    options: planner.PlanOptions | None = None
    node: Mapping[str, Fact] = field(default_factory=lambda: NODE)
    context: Mapping[str, object] = field(default_factory=dict)
    features: tuple[str, ...] = ()
    interrupted: str | None = None  # a run stopped by a signal: the verdict is unknown


def build(scenario: Scenario) -> Report:
    """The report of `scenario` as the runner would return it (without running anything)."""
    checks = make_plan(features=scenario.features, options=scenario.options, **scenario.context)
    results = simulate(checks, scenario.outcomes, PE_ADDRESSES)
    values = make_context(**scenario.context)
    signalled = bool(scenario.interrupted and scenario.interrupted.startswith("stopped by"))
    diagnosis = diagnose(results, Facts(catalog.load(), values, dict(scenario.node)), signalled=signalled)
    return Report(STARTED_AT, 1234, values, dict(scenario.node), results, diagnosis, catalog.load(),
                  interrupted=scenario.interrupted)


def proxy_only_outcomes() -> dict[str, Outcome]:
    """Behind a working proxy, on a network that drops direct egress: every direct connection to
    an endpoint reached through the proxy times out and the public names only the proxy needs do
    not resolve on the node (the private-endpoint names still do); every proxied check passes."""
    checks = make_plan(options=PROXY)
    proxied = {(c.host, c.port) for c in checks if c.path is CheckPath.PROXY}
    direct_ports = {c.host for c in checks if c.path is CheckPath.DIRECT and c.port is not None
                    and (c.host, c.port) not in proxied}
    outcomes: dict[str, Outcome] = {}
    for check in checks:
        if check.path is not CheckPath.DIRECT:
            continue
        if check.layer is Layer.TCP and (check.host, check.port) in proxied:
            outcomes[check.id] = Outcome(Reason.TCP_TIMEOUT, detail="no answer within 5s")
        elif check.layer is Layer.DNS and check.host in {h for h, _ in proxied} - direct_ports - set(PE_ADDRESSES):
            outcomes[check.id] = Outcome(Reason.DNS_NXDOMAIN, detail="NXDOMAIN")
    return outcomes


def _public_tcp() -> list[str]:
    """The direct TCP checks of public endpoints (as test_diagnose's no-outbound case picks them)."""
    private = (".workspace.", "notebooks", ".instances.azureml.ms", ".instances.ml.azure.ms")
    return [c.id for c in make_plan() if c.layer is Layer.TCP and c.needs and not any(p in c.id for p in private)]


def _local(check: str, detail: str) -> dict[str, Outcome]:
    return {check: Outcome(Reason.LOCAL_CHECK_FAILED, detail=detail)}


EXTRA: tuple[Scenario, ...] = (
    Scenario("storage firewall denies the subnet",
             {"http:contosomlsa.blob.core.windows.net:443": Outcome(
                 Reason.HTTP_RESOURCE_DENIED, detail="HTTP 403 AuthorizationFailure: This request is not authorized")},
             frozenset({"resource-firewall-denied"})),
    Scenario("name with only ipv6 addresses on an ipv4 node",
             {"dns:graph.windows.net": Outcome(addresses=("2603:1030::7",)),
              "tcp:graph.windows.net:443": Outcome(Reason.TCP_NET_UNREACHABLE)},
             frozenset({"dns-no-ipv4-address"}),
             node={**NODE, "default_routes": [{"family": "ipv4", "interface": "eth0"}]}),
    Scenario("custom dns not forwarding", {f"dns:{WS}": Outcome(Reason.DNS_PUBLIC_ANSWER)},
             frozenset({"custom-dns-not-forwarding"}), node=CUSTOM_DNS_NODE),
    Scenario("instance name wrong address", {f"dns:{CI}": Outcome(addresses=("10.0.0.4",)),
                                             f"tcp:{CI}:443": Outcome(Reason.TCP_REFUSED)},
             frozenset({"instance-name-wrong-address"})),
    Scenario("proxy unreachable", {PROXY_TCP: Outcome(Reason.TCP_REFUSED),
                                   "tcp:management.azure.com:443": Outcome(Reason.TCP_TIMEOUT)},
             frozenset({"proxy-unreachable"}), options=PROXY),
    Scenario("proxy bypass required", {f"http:{WS}:443@proxy": Outcome(Reason.PROXY_UPSTREAM_FAILED)},
             frozenset({"proxy-bypass-required"}), options=PROXY),
    Scenario("proxy denied", {"http:mcr.microsoft.com:443@proxy": Outcome(Reason.PROXY_DENIED, detail="HTTP 403"),
                              "tcp:mcr.microsoft.com:443": Outcome(Reason.TCP_TIMEOUT)},
             frozenset({"proxy-denied"}), options=PROXY),
    Scenario("clock skew", {"http:management.azure.com:443": Outcome(status=Status.PASS,
                                                                     evidence={"clock_skew_s": 7200.0}),
                            "tls:mcr.microsoft.com:443": Outcome(Reason.TLS_NOT_YET_VALID)},
             frozenset({"clock-skew"})),
    Scenario("certificate expired", {"tls:mcr.microsoft.com:443": Outcome(Reason.TLS_EXPIRED)},
             frozenset({"tls-certificate-invalid"})),
    Scenario("no outbound", {**{cid: Outcome(Reason.TCP_TIMEOUT) for cid in _public_tcp()},
                             "udp:eastus.tundra.azureml.ms:5831": Outcome(Reason.UDP_NO_REPLY)},
             frozenset({"no-outbound-connectivity"})),
    Scenario("local firewall", _local("local:firewall-inbound:44224", "rule inet filter input handle 4: drop"),
             frozenset({"local-firewall-blocks"}), context={"public_ip": True}),
    Scenario("nothing listening", _local("local:listening:44224", "nothing listens on 44224"),
             frozenset({"inbound-port-closed"}), context={"public_ip": True}),
    Scenario("docker bridge", _local("local:docker-bridge", "docker0 172.17.0.1/16 overlaps 172.17.0.0/16"),
             frozenset({"docker-bridge-overlap"}), context={"public_ip": True}),
    Scenario("unsupported os", _local("local:os", "ID=debian"), frozenset({"unsupported-os"}),
             context={"compute": "vm"}),
    Scenario("imds unreadable", {}, frozenset({"imds-unavailable"}), node=IMDS_FAILED_NODE),
    Scenario("container mtu", {"tls:management.azure.com:443": Outcome(Reason.TLS_TIMEOUT)},
             frozenset({"vantage-mtu-above-host"}), node=CONTAINER_NODE),
    Scenario("http status", {"http:mcr.microsoft.com:443": Outcome(Reason.HTTP_STATUS, detail="HTTP 500")},
             frozenset({"endpoint-unreachable"})),
    # Traced paths: where the flow died, and who owns that hop (the html report's diagrams)
    Scenario("dropped past an appliance (traced)",
             {check: Outcome(Reason.TCP_TIMEOUT, evidence=PAST_APPLIANCE) for check in BATCH},
             frozenset({"egress-blocked"})),
    Scenario("dropped at the first hop (traced)", {SMB: Outcome(Reason.TCP_TIMEOUT, evidence=AT_FIRST_HOP)},
             frozenset({"smb-blocked"})),
    Scenario("rejected on the way (traced)", {"tcp:mcr.microsoft.com:443": Outcome(
        Reason.TCP_ADMIN_PROHIBITED, evidence=path((1, "time-exceeded", "10.0.0.1"), (2, "unreachable", "10.9.0.1")))},
             frozenset({"egress-rejected"})),
    # Shapes that stress the renderers rather than diagnosis.
    Scenario("two egress-blocked findings", {"tcp:mcr.microsoft.com:443": Outcome(Reason.TCP_TIMEOUT),
                                             "tcp:eastus.batch.azure.com:443": Outcome(Reason.TCP_TIMEOUT)},
             frozenset({"egress-blocked"})),
    Scenario("some addresses timed out (warn)", {"tcp:mcr.microsoft.com:443": Outcome(
        Reason.TCP_TIMEOUT, status=Status.WARN, addresses=("198.18.0.10",),
        detail="no answer within 5s; 1 address(es) passed")}, frozenset({"egress-blocked"})),
    Scenario("proxy 407 with direct egress dropped", {
        "http:management.azure.com:443@proxy": Outcome(Reason.PROXY_AUTH_REQUIRED),
        "tcp:management.azure.com:443": Outcome(Reason.TCP_TIMEOUT)},
        frozenset({"proxy-auth-required"}), options=PROXY),
    Scenario("stopped by SIGTERM", {SMB: Outcome(Reason.TCP_TIMEOUT),
                                    "tcp:mcr.microsoft.com:443": Outcome(Reason.PROBE_CANCELLED,
                                                                         detail="not finished: stopped by SIGTERM")},
             frozenset({"smb-blocked"}), interrupted="stopped by SIGTERM"),
    Scenario("tls inspected, trusted, plus a cancelled check", {
        "tls:management.azure.com:443": Outcome(Reason.TLS_UNEXPECTED_ISSUER, evidence={"cert": CERT}),
        "tcp:mcr.microsoft.com:443": Outcome(Reason.PROBE_CANCELLED, detail="not finished: run deadline reached")},
        frozenset({"tls-intercepted"})),
)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("healthy", {}, frozenset()),
    Scenario("proxy only", proxy_only_outcomes(), frozenset(), options=PROXY),
    *(Scenario(str(case[0]), case[1], frozenset({case[2]})) for case in CASES),  # type: ignore[arg-type]
    *EXTRA,
)
UNCOVERED: frozenset[str] = frozenset()  # finding codes no synthetic outcome produces
