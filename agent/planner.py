"""Turns the catalog and a context into the checks to run: a pure function, no I/O.

Each endpoint becomes a chain of layered checks (dns -> tcp -> tls -> http or websocket); a name
is resolved by one dns check shared by every check that needs it, and a connection check at a
port is shared by every requirement that names that host and port."""

from __future__ import annotations

import fnmatch
import re
import string
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from agent.inputs import context as ctx
from agent.inputs import proxy
from agent.catalog import Catalog, Requirement
from agent.model import Check, Layer
from probes._net import is_ip
from probes._trace import Fact
from probes.reasons import Reason

DEFAULT_EXPECTED_ISSUERS = ("Microsoft Corporation", "DigiCert Inc")

# The layers above dns that each catalog probe kind climbs, in order.
_CHAINS: dict[str, tuple[Layer, ...]] = {
    "https": (Layer.TCP, Layer.TLS, Layer.HTTP),
    "websocket": (Layer.TCP, Layer.TLS, Layer.WEBSOCKET),
    "http": (Layer.TCP, Layer.HTTP),
    "tcp": (Layer.TCP,),
    "udp": (Layer.UDP,),
    "dns": (),
}
_LAYER_ORDER = {layer: i for i, layer in enumerate(Layer)}


@dataclass(frozen=True, slots=True)
class PlanOptions:
    features: frozenset[str] = frozenset()
    expected_issuers: tuple[str, ...] = DEFAULT_EXPECTED_ISSUERS
    dns_query_timeout: float = 2.0
    blocked: tuple[str, ...] = ()  # "host", "*.suffix", with ":port" optionally: skipped by policy
    blocked_reason: str = "blocked by policy"
    proxy: str | None = None  # the HTTPS proxy Azure ML's processes use; adds a proxied path
    no_proxy: tuple[str, ...] = ()


def with_endpoints(catalog: Catalog, endpoints: Iterable[tuple[str, int, str, str, bool]]) -> Catalog:
    """The catalog plus the user's own endpoints (host, port, probe, purpose, required), each a
    requirement `custom:<host>:<port>` so plan, check and rules treat them like the rest."""
    extra = tuple(Requirement(
        id=f"custom:{host}:{port}", refs=(), purpose=purpose or f"{host}:{port} (from the config file)",
        hosts=(host,), rule_fqdn=host, service_tag="", protocol="udp" if probe == "udp" else "tcp",
        ports=(port,), probe=probe, required_for="use" if required else "situational",
        compute=ctx.COMPUTE_KINDS, docs=()) for host, port, probe, purpose, required in endpoints)
    return replace(catalog, requirements=catalog.requirements + extra)


def applicable(catalog: Catalog, context: ctx.Context, features: Iterable[str] = ()) -> list[Requirement]:
    """The requirements that apply to this compute, network shape and feature selection."""
    selected = set(features)
    compute = context["compute"].value
    public_ip = context["public_ip"].value
    private_endpoint = context["private_endpoint"].value
    peered = context["peered"].value
    return [
        r for r in catalog.requirements
        if compute in r.compute
        and (r.public_ip is None or r.public_ip == public_ip)
        and (r.private_endpoint is None or r.private_endpoint == private_endpoint)
        and (r.peered is None or r.peered == peered)
        and (r.feature is None or r.feature in selected)
    ]


def plan(catalog: Catalog, context: ctx.Context, options: PlanOptions = PlanOptions()) -> tuple[Check, ...]:
    values = ctx.template_values(context)
    private_endpoint = bool(context["private_endpoint"].value)
    checks: dict[str, Check] = {}
    order: list[str] = []

    def add(check: Check) -> None:
        existing = checks.get(check.id)
        if existing is None:
            checks[check.id] = check
            order.append(check.id)
            return
        merged = existing.requirements + tuple(r for r in check.requirements if r not in existing.requirements)
        params = dict(existing.params)
        if check.params.get("expect") == "private":
            params["expect"] = "private"
        checks[check.id] = replace(existing, requirements=merged, params=params)

    for requirement in applicable(catalog, context, options.features):
        for check in _local_checks(requirement):
            add(check)
        for template in requirement.hosts:
            missing = _placeholders(template) - values.keys()
            if missing:
                add(_missing_context_check(requirement, template, sorted(missing)))
                continue
            host = template.format(**values)
            literal = is_ip(host)  # an IP literal target is connected to without resolving
            if literal and requirement.probe == "dns":  # a DNS server itself: ask it a question
                add(_resolver_check(host, requirement, options))
                continue
            if not literal:
                expect = "private" if requirement.dns_private and private_endpoint else "any"
                add(_dns_check(host, requirement.id, expect, options))
            for port in requirement.ports:
                below: str | None = None if literal else f"dns:{host}"
                for layer in _CHAINS[requirement.probe]:
                    check = _layer_check(layer, host, port, requirement, below, options)
                    add(check)
                    below = check.id
                if options.proxy and requirement.probe in ("https", "websocket") \
                        and not proxy.bypassed(host, port, options.no_proxy):
                    for check in _proxied(host, port, requirement, options.proxy, options):
                        add(check)
    planned = (_apply_policy(checks[i], options) for i in order)
    return tuple(sorted(planned, key=lambda c: _LAYER_ORDER[c.layer]))


def _apply_policy(check: Check, options: PlanOptions) -> Check:
    for entry in options.blocked:
        pattern, _, port = entry.partition(":")
        if fnmatch.fnmatchcase(check.host, pattern) and (not port or check.port == int(port)):
            return replace(check, skip=Reason.SKIP_POLICY, skip_detail=f"{options.blocked_reason} ({entry})")
    return check



def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _missing_context_check(requirement: Requirement, template: str, missing: Sequence[str]) -> Check:
    shown = re.sub(r"\{(\w+)\}", lambda m: f"<{m.group(1).replace('_', '-')}>", template)
    hints = " and ".join(ctx.hint_for(name) for name in missing)
    return Check(
        id=f"dns:{shown}", layer=Layer.DNS, kind="dns", params={"host": shown}, host=shown,
        port=None, protocol="udp", requirements=(requirement.id,),
        skip=Reason.SKIP_MISSING_CONTEXT, skip_detail=f"unknown {', '.join(missing)}: give {hints}",
    )


def _dns_check(host: str, requirement: str, expect: str, options: PlanOptions) -> Check:
    params: dict[str, Fact] = {"host": host, "expect": expect, "query_timeout": options.dns_query_timeout}
    return Check(id=f"dns:{host}", layer=Layer.DNS, kind="dns", params=params, host=host,
                 port=None, protocol="udp", requirements=(requirement,))


def _resolver_check(server: str, requirement: Requirement, options: PlanOptions) -> Check:
    params: dict[str, Fact] = {"host": requirement.query, "resolvers": [server], "system": False,
                               "query_timeout": options.dns_query_timeout}
    return Check(id=f"dns:{server}", layer=Layer.DNS, kind="dns", params=params, host=server,
                 port=requirement.ports[0] if requirement.ports else 53, protocol=requirement.protocol,
                 requirements=(requirement.id,))


def _layer_check(layer: Layer, host: str, port: int, requirement: Requirement, needs: str | None,
                 options: PlanOptions) -> Check:
    params: dict[str, Fact]
    if layer is Layer.TLS:
        params = {"host": host, "port": port, "expected_issuers": list(options.expected_issuers)}
    elif layer is Layer.HTTP:
        params = {"url": _url("http" if requirement.probe == "http" else "https", host, port), "host": host}
    elif layer is Layer.WEBSOCKET:
        params = {"url": _url("wss", host, port), "host": host}
    else:
        params = {"host": host, "port": port}
    return Check(id=f"{layer.value}:{host}:{port}", layer=layer, kind=layer.value, params=params,
                 host=host, port=port, protocol=requirement.protocol,
                 requirements=(requirement.id,), needs=needs)


# Node-local checks that come with a requirement: what the agent can see of it from the inside.
_NODE_CHECKS: dict[str, tuple[dict[str, Fact], ...]] = {
    "azure-platform-dns": ({"check": "firewall-platform"},),  # no local rule may block 168.63.129.16
    "inbound-ssh": ({"check": "os"},),  # Azure ML attaches only Ubuntu VMs
    "mcr": ({"check": "docker-bridge"},),  # jobs run in Docker: its bridge must not overlap the VNet
}


def _local_checks(requirement: Requirement) -> list[Check]:
    """An inbound requirement: something listens on the port and no local rule drops it (NSGs
    are out of sight from the node); plus the node checks tied to a requirement."""
    params: list[dict[str, Fact]] = list(_NODE_CHECKS.get(requirement.id, ()))
    if requirement.probe == "listen":
        params += [{"check": check, "port": port, "protocol": requirement.protocol}
                   for port in requirement.ports for check in ("listening", "firewall-inbound")]
    return [Check(id=f"local:{p['check']}" + (f":{p['port']}" if "port" in p else ""), layer=Layer.LOCAL,
                  kind="local", params=p, host="localhost", port=p.get("port"),  # type: ignore[arg-type]
                  protocol=requirement.protocol, requirements=(requirement.id,)) for p in params]


def _proxied(host: str, port: int, requirement: Requirement, proxy_url: str,
             options: PlanOptions) -> list[Check]:
    """The path Azure ML's own clients take: the proxy's name, a connection to the proxy, and the
    request through it (the proxy resolves the target). Shared by every proxied endpoint."""
    parsed = urllib.parse.urlsplit(proxy_url if "://" in proxy_url else f"http://{proxy_url}")
    proxy_host = parsed.hostname or ""
    proxy_port = parsed.port or (443 if parsed.scheme == "https" else 80)
    checks = []
    below: str | None = None
    if not is_ip(proxy_host):
        below = f"dns:{proxy_host}"
        checks.append(replace(_dns_check(proxy_host, requirement.id, "any", options), path="to-proxy"))
    to_proxy = Check(id=f"tcp:{proxy_host}:{proxy_port}", layer=Layer.TCP, kind="tcp",
                     params={"host": proxy_host, "port": proxy_port}, host=proxy_host, port=proxy_port,
                     protocol="tcp", requirements=(requirement.id,), needs=below, path="to-proxy")
    layer = Layer.WEBSOCKET if requirement.probe == "websocket" else Layer.HTTP
    scheme = "wss" if layer is Layer.WEBSOCKET else "https"
    through = Check(id=f"{layer.value}:{host}:{port}@proxy", layer=layer, kind=layer.value,
                    params={"url": _url(scheme, host, port), "host": host, "proxy": proxy_url},
                    host=host, port=port, protocol="tcp", requirements=(requirement.id,),
                    needs=to_proxy.id, path="proxy")
    return [*checks, to_proxy, through]


def _url(scheme: str, host: str, port: int) -> str:
    default = 80 if scheme == "http" else 443
    return f"{scheme}://{host}/" if port == default else f"{scheme}://{host}:{port}/"


__all__ = ["DEFAULT_EXPECTED_ISSUERS", "PlanOptions", "applicable", "plan"]
