"""Turns the catalog and a context into the checks to run: a pure function, no I/O.

Each endpoint becomes a chain of layered checks (dns -> tcp -> tls -> http or websocket, or dns ->
tcp -> smb); a name is resolved by one dns check shared by every check that needs it, and a
connection check at a port is shared by every requirement that names that host and port."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from agent.catalog import Catalog, Requirement
from agent.inputs import context as ctx
from agent.inputs import proxy
from agent.model import Check, CheckPath
from agent.platform import AZURE_DNS, DEFAULT_EXPECTED_ISSUERS, PRIVATELINK_LABEL
from probes.reasons import Reason
from probes.specs import (
    DnsSpec,
    HttpSpec,
    Layer,
    LocalSpec,
    Proxy,
    SmbSpec,
    Spec,
    TcpSpec,
    TlsSpec,
    UdpSpec,
    WebSocketSpec,
    is_ip,
)

# The layers above dns that each catalog probe kind climbs, in order.
_CHAINS: dict[str, tuple[Layer, ...]] = {
    "https": (Layer.TCP, Layer.TLS, Layer.HTTP),
    "websocket": (Layer.TCP, Layer.TLS, Layer.WEBSOCKET),
    "http": (Layer.TCP, Layer.HTTP),
    "tcp": (Layer.TCP,),
    "smb": (Layer.TCP, Layer.SMB),  # TCP connect first (an NSG drop is a tcp verdict), then an SMB2 NEGOTIATE
    "udp": (Layer.UDP,),
    "dns": (),
}
_LAYER_ORDER = {layer: i for i, layer in enumerate(Layer)}


@dataclass(frozen=True, slots=True)
class PlanOptions:
    features: frozenset[str] = frozenset()
    expected_issuers: tuple[str, ...] = DEFAULT_EXPECTED_ISSUERS
    blocked: tuple[str, ...] = ()  # "host" or "*.suffix", with ":port" optionally: skipped by policy
    blocked_reason: str = "blocked by policy"
    proxy: Proxy | None = None  # the HTTPS proxy Azure ML's processes use; adds a proxied path
    no_proxy: tuple[str, ...] = ()
    http_proxy: Proxy | None = None  # the proxy of plain http:// requests (HTTP_PROXY)
    vantage: str = ""  # another network namespace the run looks from (a container's); "": the host's


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
        and (r.when is None or context[r.when].value is True)
    ]


def plan(catalog: Catalog, context: ctx.Context, options: PlanOptions = PlanOptions()) -> tuple[Check, ...]:
    values = ctx.template_values(context)
    checks: dict[str, Check] = {}  # in the order first planned
    requirements: dict[str, dict[str, None]] = {}  # check id -> every requirement naming it, in order

    def add(check: Check) -> None:
        requirements.setdefault(check.id, {}).update(dict.fromkeys(check.requirements))
        existing = checks.get(check.id)
        if existing is None:
            checks[check.id] = check
        elif isinstance(existing.spec, DnsSpec) and isinstance(check.spec, DnsSpec):
            # one requirement needing a private answer (or reading the chain for one) is enough
            spec = existing.spec
            merged = replace(spec, expect="private" if check.spec.expect == "private" else spec.expect,
                             private_link_label=spec.private_link_label or check.spec.private_link_label)
            if merged != spec:
                checks[check.id] = replace(existing, spec=merged)

    for requirement in applicable(catalog, context, options.features):
        for check in _local_checks(requirement, options.vantage):
            add(check)
        for template in requirement.hosts:
            missing = _placeholders(template) - values.keys()
            if missing:
                add(_missing_context_check(requirement, template, sorted(missing)))
                continue
            host = template.format(**values)
            literal = is_ip(host)  # an IP literal target is connected to without resolving
            if literal and requirement.probe == "dns":  # a DNS server itself: ask it a question
                add(_resolver_check(host, requirement))
                continue
            if not literal:
                add(replace(_dns_check(host, requirement.id, "any"),
                            spec=_name_spec(catalog, host, requirement, context)))
            for port in requirement.ports:
                below: str | None = None if literal else f"dns:{host}"
                for layer in _CHAINS[requirement.probe]:
                    check = _layer_check(layer, host, port, requirement, below, options)
                    add(check)
                    below = check.id
                via = _proxy_for(requirement, options)
                # requests matches NO_PROXY's name:port only against a port the URL writes
                written = None if port == (80 if requirement.probe == "http" else 443) else port
                if via is not None and not proxy.bypassed(host, written, options.no_proxy):
                    for check in _proxied(host, port, requirement, via, options):
                        add(check)
    policy = _policy(options.blocked, options.blocked_reason)
    planned = (policy(c if len(requirements[c.id]) == len(c.requirements)
                            else replace(c, requirements=tuple(requirements[c.id]))) for c in checks.values())
    return tuple(sorted(planned, key=lambda c: _LAYER_ORDER[c.layer]))


def _policy(entries: Sequence[str], reason: str) -> Callable[[Check], Check]:
    """The policy's blocked entries ("host" or "*.suffix", each with ":port" or not, as the config
    file allows) indexed by name, so a check looks up its host and the suffixes after each of its
    dots rather than matching every entry: planning stays linear in checks and entries. The first
    entry in the config's order that matches is the one a skip names."""
    by_name: dict[str, list[tuple[int, str, int | None]]] = {}  # name or *.suffix -> (position, entry, port)
    for position, entry in enumerate(entries):
        pattern, _, port = entry.partition(":")
        by_name.setdefault(pattern, []).append((position, entry, int(port) if port else None))

    def apply(check: Check) -> Check:
        names, dot = [check.host], check.host.find(".")
        while dot >= 0:
            names.append(f"*{check.host[dot:]}")
            dot = check.host.find(".", dot + 1)
        matching = [(position, entry) for name in names for position, entry, port in by_name.get(name, ())
                    if port is None or port == check.port]
        if not matching:
            return check
        return replace(check, skip=Reason.SKIP_POLICY, skip_detail=f"{reason} ({min(matching)[1]})")

    return apply if by_name else lambda check: check


def _placeholders(template: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", template))  # the catalog's templates: {name}, nothing more


def _missing_context_check(requirement: Requirement, template: str, missing: Sequence[str]) -> Check:
    shown = re.sub(r"\{(\w+)\}", lambda m: f"<{m.group(1).replace('_', '-')}>", template)
    hints = " and ".join(ctx.hint_for(name) for name in missing)
    return Check(
        id=f"dns:{shown}", spec=DnsSpec(host=shown), host=shown, port=None, protocol="udp",
        requirements=(requirement.id,), skip=Reason.SKIP_MISSING_CONTEXT,
        skip_detail=f"unknown {', '.join(missing)}: give {hints}",
    )


def _dns_check(host: str, requirement: str, expect: str) -> Check:
    return Check(id=f"dns:{host}", spec=DnsSpec(host=host, expect=expect), host=host, port=None,
                 protocol="udp", requirements=(requirement,))


def _name_spec(catalog: Catalog, host: str, requirement: Requirement, context: ctx.Context) -> DnsSpec:
    """A name with a private endpoint must resolve privately: the context says so (true), says it
    has none (false: any answer), or does not know, and then the public answer's CNAME chain into a
    privatelink zone tells (the probe reads it). Either way the probe reports what the chain shows,
    for names whose zone has a privatelink zone (a compute instance name is a plain A record)."""
    has_endpoint = context[requirement.dns_private].value if requirement.dns_private else False
    zone = catalog.zone_of(host)
    linked = has_endpoint is not False and zone is not None and bool(zone.privatelink_zone)
    return DnsSpec(host=host, expect="private" if has_endpoint is True else "any",
                   private_link_label=PRIVATELINK_LABEL if linked else "")


def _resolver_check(server: str, requirement: Requirement) -> Check:
    port = requirement.ports[0] if requirement.ports else 53
    return Check(id=f"dns:{server}", spec=DnsSpec(host=requirement.query, resolvers=(server,), system=False),
                 host=server, port=port, protocol=requirement.protocol, requirements=(requirement.id,))


def _layer_check(layer: Layer, host: str, port: int, requirement: Requirement, needs: str | None,
                 options: PlanOptions) -> Check:
    spec: Spec
    if layer is Layer.TLS:
        spec = TlsSpec(host=host, port=port, expected_issuers=options.expected_issuers)
    elif layer is Layer.HTTP:
        spec = HttpSpec(url=_url("http" if requirement.probe == "http" else "https", host, port), host=host)
    elif layer is Layer.WEBSOCKET:
        spec = WebSocketSpec(url=_url("wss", host, port), host=host)
    elif layer is Layer.UDP:
        spec = UdpSpec(host=host, port=port)
    elif layer is Layer.SMB:
        spec = SmbSpec(host=host, port=port)
    else:
        spec = TcpSpec(host=host, port=port)
    return Check(id=f"{layer.value}:{host}:{port}", spec=spec, host=host, port=port,
                 protocol=requirement.protocol, requirements=(requirement.id,), needs=needs)


# Node-local checks that come with a requirement: what the agent can see of it from the inside.
_NODE_CHECKS: dict[str, tuple[LocalSpec, ...]] = {
    "azure-platform-dns": (LocalSpec("firewall-platform", address=AZURE_DNS),),  # no local rule may block it
    "inbound-ssh": (LocalSpec("os"),),  # Azure ML attaches only Ubuntu VMs
    "mcr": (LocalSpec("docker-bridge"),),  # jobs run in Docker: its bridge must not overlap the VNet
}


def _local_checks(requirement: Requirement, vantage: str) -> list[Check]:
    """An inbound requirement: something listens on the port and no local rule drops it (NSGs
    are out of sight from the node); plus the node checks tied to a requirement, told the vantage
    (the Docker bridge that matters is the host's, out of a container's sight)."""
    specs = [replace(spec, vantage=vantage) if spec.check == "docker-bridge" else spec
             for spec in _NODE_CHECKS.get(requirement.id, ())]
    if requirement.probe == "listen":
        specs += [LocalSpec(check, port=port, protocol=requirement.protocol)
                  for port in requirement.ports for check in ("listening", "firewall-inbound")]
    return [Check(id=f"local:{spec.check}" + (f":{spec.port}" if spec.port is not None else ""), spec=spec,
                  host="localhost", port=spec.port, protocol=requirement.protocol, requirements=(requirement.id,))
            for spec in specs]


def _proxy_for(requirement: Requirement, options: PlanOptions) -> Proxy | None:
    """The proxy the node's clients send this requirement's requests through: HTTPS_PROXY for
    https:// and wss://, HTTP_PROXY for plain http://; raw TCP only where the catalog says its
    clients tunnel it (CONNECT, through HTTPS_PROXY: the instance's 8787 and 18881); UDP never."""
    if requirement.proxied is False:
        return None
    if requirement.probe in ("https", "websocket"):
        return options.proxy
    if requirement.probe == "http":
        return options.http_proxy
    if requirement.probe == "tcp" and requirement.proxied:
        return options.proxy
    return None


def _proxied(host: str, port: int, requirement: Requirement, via: Proxy, options: PlanOptions) -> list[Check]:
    """The path Azure ML's own clients take: the proxy's name, a connection to the proxy, and the
    request through it (the proxy resolves the target). Shared by every proxied endpoint."""
    checks = []
    below: str | None = None
    if not is_ip(via.host):
        below = f"dns:{via.host}"
        checks.append(replace(_dns_check(via.host, requirement.id, "any"), path=CheckPath.TO_PROXY))
    to_proxy = Check(id=f"tcp:{via.host}:{via.port}", spec=TcpSpec(host=via.host, port=via.port), host=via.host,
                     port=via.port, protocol="tcp", requirements=(requirement.id,), needs=below,
                     path=CheckPath.TO_PROXY)
    spec: Spec
    if requirement.probe == "websocket":
        spec = WebSocketSpec(url=_url("wss", host, port), host=host, proxy=via)
    elif requirement.probe == "tcp":
        spec = TcpSpec(host=host, port=port, proxy=via)
    else:
        scheme = "http" if requirement.probe == "http" else "https"
        issuers = options.expected_issuers if scheme == "https" else ()  # no tls check of its own on this path
        spec = HttpSpec(url=_url(scheme, host, port), host=host, proxy=via, expected_issuers=issuers)
    through = Check(id=f"{spec.layer.value}:{host}:{port}@proxy", spec=spec, host=host, port=port, protocol="tcp",
                    requirements=(requirement.id,), needs=to_proxy.id, path=CheckPath.PROXY)
    return [*checks, to_proxy, through]


def _url(scheme: str, host: str, port: int) -> str:
    default = 80 if scheme == "http" else 443
    return f"{scheme}://{host}/" if port == default else f"{scheme}://{host}:{port}/"


__all__ = ["PlanOptions", "applicable", "plan"]
