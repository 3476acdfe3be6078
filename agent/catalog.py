"""The requirement catalog: loads agent/data/requirements.toml into frozen values once.

The catalog is data so that `plan`, `check` and `rules` read the same rows; this module only
validates the rows' shape and answers which rows apply to a context. The process reads the
same rows compiled to JSON (agent/data/requirements.json), which parses in 1 ms where tomllib
takes 20 ms; tests/unit/test_catalog_coverage.py keeps the two equal (and rewrites the JSON
with UPDATE_SNAPSHOTS=1)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import Any

PROBE_KINDS = ("https", "websocket", "http", "tcp", "udp", "dns", "smb", "listen", "rule")
REQUIRED_FOR = ("create", "use", "create+use", "situational")
CLOUDS = ("public", "usgov", "china")
DIRECTIONS = ("outbound", "inbound")
_CLOUD_FIELDS = ("hosts", "rule_fqdn", "service_tag", "query", "identity_resource")
SMB_SHARE = "storage-file-smb"  # the workspace file share over SMB: its failures are smb-blocked
IMDS = "imds"  # instance metadata and managed identity: its failures are imds-unavailable
MSI = "msi-endpoint"  # a compute instance's local identity endpoint: its failures are identity-endpoint-unavailable


@dataclass(frozen=True, slots=True)
class Requirement:
    id: str
    refs: tuple[str, ...]
    purpose: str
    hosts: tuple[str, ...]
    rule_fqdn: str
    service_tag: str
    protocol: str
    ports: tuple[int, ...]
    probe: str
    required_for: str
    compute: tuple[str, ...]
    docs: tuple[str, ...]
    public_ip: bool | None = None
    private_endpoint: bool | None = None
    peered: bool | None = None
    dns_private: str | None = None  # the boolean context key saying the name has a private endpoint
    pe_address: str | None = None
    feature: str | None = None
    direction: str = "outbound"
    source_tag: str = ""  # inbound: who connects (an NSG source service tag)
    rule_protocol: str = ""  # what the NSG rule names when it differs from the probe ("*" for Any)
    clouds: tuple[str, ...] = CLOUDS
    notes: str = ""  # where the documentation disagrees, and what we check because of it
    query: str = ""  # probe dns with an IP literal host: the name asked of that DNS server
    proxied: bool | None = None  # through HTTPS_PROXY/HTTP_PROXY? None: as its probe kind (HTTP(S) yes, TCP no)
    when: str | None = None  # a boolean context key that must be true (a resource's optional feature)
    emit_rules: bool = True  # False: no NSG or firewall rule opens it (answered by the platform)
    url: str = ""  # probe http at this URL template instead of `hosts` and `ports` (a context value: an endpoint)
    target: str = ""  # probe http: the request target (path and query), after the URL's path for a `url` row
    headers: tuple[str, ...] = ()  # probe http: request headers the service requires, "Name: value"
    # check --use-identity: one authenticated request with a managed identity token for this audience
    identity_resource: str = ""  # "" : none
    identity_target: str = ""  # its path and query
    identity_exchange: bool = False  # a container registry's /oauth2/exchange (POST) instead of a bearer header

    @property
    def situational(self) -> bool:
        return self.required_for == "situational"


@dataclass(frozen=True, slots=True)
class Zone:
    suffix: str
    privatelink_zone: str  # "" where no private zone exists (records go in the public zone)
    forward_zone: str
    cloud: str = "public"
    workspace: bool = False  # a zone a private-endpoint workspace needs linked / forwarded

    @property
    def forwarded(self) -> tuple[str, ...]:
        """The public zones a custom DNS server forwards for it: its own, and the one holding its
        privatelink zone when that lies outside it (a vault's name CNAMEs into
        privatelink.vaultcore.azure.net, which a server that chases CNAMEs must resolve there too)."""
        holder = self.privatelink_zone.partition(".")[2]
        outside = self.privatelink_zone and not self.privatelink_zone.endswith("." + self.forward_zone)
        return (self.forward_zone, holder) if outside else (self.forward_zone,)


@dataclass(frozen=True, slots=True)
class Catalog:
    version: str
    requirements: tuple[Requirement, ...]
    zones: tuple[Zone, ...] = ()

    def zone_of(self, host: str) -> Zone | None:
        """The zone a name belongs to, matching privatelink names (x.privatelink.<suffix>) too."""
        for zone in self.zones:
            if host == zone.suffix or host.endswith("." + zone.suffix) \
                    or (zone.privatelink_zone and host.endswith("." + zone.privatelink_zone)):
                return zone
        return None

    requirements_by_id: Mapping[str, Requirement] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # built once per catalog: diagnosis looks requirements up for every result
        object.__setattr__(self, "requirements_by_id", MappingProxyType({r.id: r for r in self.requirements}))

    def by_id(self, requirement_id: str) -> Requirement:
        return self.requirements_by_id[requirement_id]


class CatalogError(ValueError):
    """The shipped catalog is malformed: a bug in the package, caught by the tests."""


COMPILED = os.path.join(os.path.dirname(__file__), "data", "requirements.json")  # requirements.toml's rows


@cache
def load(cloud: str = "public") -> Catalog:
    """The catalog as seen from one cloud: its host names, rule FQDNs, tags and zones."""
    with open(COMPILED, encoding="utf-8") as compiled:
        return parse(json.load(compiled), cloud)


def parse(data: dict[str, Any], cloud: str = "public") -> Catalog:
    """Validate every row as `cloud` sees it, and keep the rows that apply to it with that
    cloud's variant of hosts, rule_fqdn and service_tag (a row's `usgov` / `china` table). The
    tests parse every cloud, so a bad variant fails there whichever cloud a node is in."""
    if cloud not in CLOUDS:
        raise CatalogError(f"unknown cloud {cloud!r}")
    rows = data.get("requirement", [])
    requirements = tuple(r for r in (_requirement(row, cloud) for row in rows) if cloud in r.clouds)
    ids = [row.get("id") for row in rows]
    if len(ids) != len(set(ids)):
        raise CatalogError(f"duplicate requirement ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    zones = tuple(_zone(z) for z in data.get("zone", []))
    return Catalog(version=str(data["version"]), requirements=requirements,
                   zones=tuple(z for z in zones if z.cloud == cloud))


def _requirement(row: dict[str, Any], cloud: str) -> Requirement:
    name = row.get("id", "?")
    values = dict(row)
    variant = values.pop("usgov", None), values.pop("china", None)
    override = dict(zip(("usgov", "china"), variant, strict=True)).get(cloud) or {}
    unknown = set(override) - set(_CLOUD_FIELDS)
    if unknown:
        raise CatalogError(f"requirement {name}: {cloud} may only override {_CLOUD_FIELDS}, not {sorted(unknown)}")
    values.update(override)
    try:
        requirement = Requirement(
            id=values["id"], refs=tuple(values.get("refs", ())), purpose=values["purpose"],
            hosts=tuple(values.get("hosts", ())), rule_fqdn=values.get("rule_fqdn", ""),
            service_tag=values.get("service_tag", ""), protocol=values["protocol"],
            ports=tuple(int(p) for p in values["ports"]), probe=values["probe"],
            required_for=values["required_for"], compute=tuple(values["compute"]),
            docs=tuple(values.get("docs", ())), public_ip=values.get("public_ip"),
            private_endpoint=values.get("private_endpoint"), peered=values.get("peered"),
            dns_private=values.get("dns_private"),
            pe_address=values.get("pe_address"), feature=values.get("feature"),
            direction=values.get("direction", "outbound"), source_tag=values.get("source_tag", ""),
            rule_protocol=values.get("rule_protocol", ""), clouds=tuple(values.get("clouds", CLOUDS)),
            notes=values.get("notes", ""), query=values.get("query", ""),
            proxied=values.get("proxied"), emit_rules=values.get("emit_rules", True),
            when=values.get("when"), url=values.get("url", ""), target=values.get("target", ""),
            headers=tuple(values.get("headers", ())), identity_resource=values.get("identity_resource", ""),
            identity_target=values.get("identity_target", ""), identity_exchange=values.get("identity_exchange", False),
        )
    except KeyError as exc:
        raise CatalogError(f"requirement {name}: missing field {exc}") from exc
    known = set(Requirement.__dataclass_fields__) | {"usgov", "china"}
    if set(row) - known:
        raise CatalogError(f"requirement {name}: unknown fields {sorted(set(row) - known)}")
    if requirement.probe not in PROBE_KINDS or requirement.required_for not in REQUIRED_FOR:
        raise CatalogError(f"requirement {name}: bad probe or required_for")
    if requirement.protocol not in ("tcp", "udp") or requirement.direction not in DIRECTIONS:
        raise CatalogError(f"requirement {name}: protocol must be tcp or udp, direction outbound or inbound")
    if not set(requirement.clouds) <= set(CLOUDS):
        raise CatalogError(f"requirement {name}: clouds must be among {CLOUDS}")
    if requirement.dns_private is not None and not isinstance(requirement.dns_private, str):
        raise CatalogError(f"requirement {name}: dns_private names a context key (private_endpoint, ...)")
    if requirement.probe not in ("listen", "rule") and not (requirement.hosts or requirement.url):
        raise CatalogError(f"requirement {name}: a probed requirement needs hosts (or a url)")
    if requirement.url and (requirement.hosts or requirement.probe != "http"):
        raise CatalogError(f"requirement {name}: a url row probes http and names no hosts")
    if ((requirement.target or requirement.headers) and requirement.probe != "http") \
            or any(": " not in header for header in requirement.headers):
        raise CatalogError(f"requirement {name}: target and headers (\"Name: value\") are for probe http")
    if requirement.identity_resource and (requirement.probe != "https"
                                          or not requirement.identity_target.startswith("/")):
        raise CatalogError(f"requirement {name}: an identity_resource needs probe https and an identity_target path")
    return requirement


def _zone(row: dict[str, Any]) -> Zone:
    try:
        return Zone(suffix=row["suffix"], privatelink_zone=row.get("privatelink_zone", ""),
                    forward_zone=row["forward_zone"], cloud=row.get("cloud", "public"),
                    workspace=row.get("workspace", False))
    except KeyError as exc:
        raise CatalogError(f"zone {row.get('suffix', '?')}: missing field {exc}") from exc
