"""What the diagnosis rules may read besides the results: the catalog, the context and the node
facts, with the few derived values every rule shares (resolvers, rules, docs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from agent import netrules
from agent.catalog import Catalog
from agent.inputs import context as ctx
from agent.inputs import proxy
from agent.inputs.context import Context
from agent.model import Result, primary_address
from agent.platform import AZURE_DNS, IMDS_ADDRESS
from probes import node
from probes._trace import Fact

MAX_DOCS = 4

DOCS = {
    "training-vnet": "https://learn.microsoft.com/azure/machine-learning/how-to-secure-training-vnet",
    "firewall": "https://learn.microsoft.com/azure/machine-learning/how-to-access-azureml-behind-firewall",
    "custom-dns": "https://learn.microsoft.com/azure/machine-learning/how-to-custom-dns",
    "pe-troubleshoot": "https://learn.microsoft.com/azure/machine-learning/how-to-troubleshoot-secure-connection-workspace",
    "private-link": "https://learn.microsoft.com/azure/machine-learning/how-to-configure-private-link",
    "jupyter": "https://learn.microsoft.com/azure/machine-learning/how-to-run-jupyter-notebooks#troubleshooting",
    "azure-dns": "https://learn.microsoft.com/azure/virtual-network/what-is-ip-address-168-63-129-16",
    "imds": "https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service",
    "azure-files-smb": "https://learn.microsoft.com/azure/storage/files/files-smb-protocol",
    "connection-monitor": "https://learn.microsoft.com/azure/network-watcher/connection-monitor-overview",
    "managed-network": "https://learn.microsoft.com/azure/machine-learning/how-to-managed-network",
    "dns-private-resolver": "https://learn.microsoft.com/azure/dns/dns-private-resolver-overview",
    "managed-identity": "https://learn.microsoft.com/azure/active-directory/managed-identities-azure-resources/how-to-use-vm-token",
}
LOOPBACK = "127.0.0.1"  # where Azure ML serves a compute instance's identity endpoint (MSI_ENDPOINT)


@dataclass(frozen=True, slots=True)
class Facts:
    catalog: Catalog
    context: Context
    node: Mapping[str, Fact]

    @property
    def resolvers(self) -> tuple[str, ...]:
        value = self.node.get("resolvers")
        return tuple(str(v) for v in value) if isinstance(value, list) else ()

    @property
    def custom_dns(self) -> tuple[str, ...]:
        """Resolvers in use that are not Azure DNS (the systemd stub is looked through)."""
        return tuple(r for r in self.resolvers if r != AZURE_DNS and not r.startswith("127."))

    @property
    def ipv4_only(self) -> bool:
        """The node has default routes and none of them is IPv6 (unknown routes: not IPv4-only)."""
        routes = self.node.get("default_routes")
        return isinstance(routes, list) and bool(routes) and not any(
            isinstance(r, dict) and r.get("family") == "ipv6" for r in routes)

    @property
    def node_address(self) -> str | None:
        """The node's own address: IMDS's private IP, else the default route's interface's."""
        private = self.imds.get("private_ip")
        return private if isinstance(private, str) else primary_address(self.node)

    @property
    def imds(self) -> Mapping[str, Fact]:
        """What detection read from IMDS (empty when it did not run or failed)."""
        detection = self.node.get("detection")
        imds = detection.get("imds") if isinstance(detection, dict) else None
        return imds if isinstance(imds, dict) else {}

    @property
    def proxy(self) -> proxy.ProxySettings:
        """The proxy Azure ML's clients use, from the node's proxy variables by the derivation the plan
        used (agent/inputs/proxy.py: `settings`); none when they do not parse (the run refused them)."""
        seen = self.node.get("proxy")
        sources = [seen.get(name) if isinstance(seen, dict) else None for name in ("environment", "etc_environment")]
        environ, etc = ({k: v for k, v in found.items() if isinstance(v, str)} if isinstance(found, dict) else {}
                        for found in sources)
        try:
            return proxy.settings(environ, etc)
        except proxy.ProxyError:
            return proxy.ProxySettings(None, (), "none")

    @property
    def identity_endpoints(self) -> tuple[tuple[str, int | None], ...]:
        """Where the node's managed identity calls go, as (host, the port their http:// URL writes):
        IMDS, and on a compute instance its local endpoint (the context's, else Azure ML's loopback)."""
        endpoints: list[tuple[str, int | None]] = [(IMDS_ADDRESS, None)]
        given = self.context.get("identity_endpoint")
        if given is not None and isinstance(given.value, str):
            parts = urlsplit(given.value)
            endpoints.append((parts.hostname or LOOPBACK, parts.port))
        elif self.context["compute"].value == "instance":
            endpoints.append((LOOPBACK, None))
        return tuple(dict.fromkeys(endpoints))

    def tag(self, result: Result) -> str:
        """The service tags of the check's requirements (a grouping key: one NSG rule, one finding)."""
        tags = {self.catalog.by_id(r).service_tag for r in result.check.requirements}
        region = str(self.context["region"].value or "<region>")
        return ", ".join(sorted(t.replace("{region}", region) for t in tags if t))

    @property
    def vantage_host(self) -> Mapping[str, Fact] | None:
        """The host's network view where the run looked from another namespace (a container's)."""
        vantage = self.node.get("vantage")
        host = vantage.get("host") if isinstance(vantage, dict) else None
        return host if isinstance(host, dict) else None

    @property
    def vantage_mtu_excess(self) -> tuple[str, int, str, int] | None:
        """(interface, MTU, host interface, host MTU) where the vantage's uplink takes larger packets
        than the host's: its TCP advertises an MSS the host's path cannot carry, so large answers
        (a server's certificate chain) are lost in the vantage alone."""
        host = self.vantage_host
        if host is None:
            return None
        seen, on_host = node.uplink_mtu(self.node), node.uplink_mtu(host)
        if seen is None or on_host is None or seen[1] <= on_host[1]:
            return None
        return (*seen, *on_host)

    @property
    def managed_network(self) -> str | None:
        """The workspace's managed network isolation mode; None in a customer VNet."""
        return ctx.managed_network(self.context)

    def rules(self, results: Sequence[Result]) -> netrules.RuleSet:
        """The rules that open the failing flows, from the one derivation `rules` prints."""
        return netrules.for_flows(self.catalog, self.context,
                                  ((rid, r.check.port) for r in results for rid in r.check.requirements))

    def rule_fqdns(self, results: Sequence[Result]) -> str:
        names = netrules.fqdns(self.rules(results))
        return ", ".join(names) or ", ".join(dict.fromkeys(r.check.host for r in results))

    def docs(self, results: Sequence[Result], extra: Sequence[str]) -> tuple[str, ...]:
        """The finding's own articles first, then each requirement's main one: at most MAX_DOCS."""
        links = [DOCS[e] for e in extra]
        for result in results:
            for rid in result.check.requirements:
                links.extend(self.catalog.by_id(rid).docs[:1])
        return tuple(dict.fromkeys(links))[:MAX_DOCS]

    def situational_only(self, results: Sequence[Result]) -> bool:
        return bool(results) and all(self.catalog.by_id(rid).situational
                                     for r in results for rid in r.check.requirements)
