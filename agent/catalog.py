"""The requirement catalog: loads agent/data/requirements.toml into frozen values once.

The catalog is data so that `plan`, `check` and `rules` read the same rows; this module only
validates the rows' shape and answers which rows apply to a context."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

PROBE_KINDS = ("https", "websocket", "tcp", "udp", "dns")
REQUIRED_FOR = ("create", "use", "create+use", "situational")


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
    dns_private: bool = False
    pe_address: str | None = None
    feature: str | None = None

    @property
    def situational(self) -> bool:
        return self.required_for == "situational"


@dataclass(frozen=True, slots=True)
class Zone:
    suffix: str
    privatelink_zone: str  # "" where no private zone exists (records go in the public zone)
    forward_zone: str


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

    def by_id(self, requirement_id: str) -> Requirement:
        for requirement in self.requirements:
            if requirement.id == requirement_id:
                return requirement
        raise KeyError(requirement_id)


class CatalogError(ValueError):
    """The shipped catalog is malformed: a bug in the package, caught by the tests."""


@cache
def load() -> Catalog:
    text = resources.files("agent").joinpath("data/requirements.toml").read_text("utf-8")
    return parse(tomllib.loads(text))


def parse(data: dict[str, Any]) -> Catalog:
    rows = data.get("requirement", [])
    requirements = tuple(_requirement(row) for row in rows)
    ids = [r.id for r in requirements]
    if len(ids) != len(set(ids)):
        raise CatalogError(f"duplicate requirement ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    zones = tuple(Zone(suffix=z["suffix"], privatelink_zone=z["privatelink_zone"],
                       forward_zone=z["forward_zone"]) for z in data.get("zone", []))
    return Catalog(version=str(data["version"]), requirements=requirements, zones=zones)


def _requirement(row: dict[str, Any]) -> Requirement:
    try:
        requirement = Requirement(
            id=row["id"], refs=tuple(row.get("refs", ())), purpose=row["purpose"],
            hosts=tuple(row["hosts"]), rule_fqdn=row["rule_fqdn"],
            service_tag=row.get("service_tag", ""), protocol=row["protocol"],
            ports=tuple(int(p) for p in row["ports"]), probe=row["probe"],
            required_for=row["required_for"], compute=tuple(row["compute"]),
            docs=tuple(row.get("docs", ())), public_ip=row.get("public_ip"),
            private_endpoint=row.get("private_endpoint"), dns_private=row.get("dns_private", False),
            pe_address=row.get("pe_address"), feature=row.get("feature"),
        )
    except KeyError as exc:
        raise CatalogError(f"requirement {row.get('id', '?')}: missing field {exc}") from exc
    if requirement.probe not in PROBE_KINDS or requirement.required_for not in REQUIRED_FOR:
        raise CatalogError(f"requirement {requirement.id}: bad probe or required_for")
    if requirement.protocol not in ("tcp", "udp"):
        raise CatalogError(f"requirement {requirement.id}: protocol must be tcp or udp")
    return requirement
