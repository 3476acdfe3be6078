"""What the lab's resolvers answer: a pure function of the scenario and the query name.

Both the DNS servers and `Lab.address_of` use this, so the faults the lab installs for a host
always hit the address the node resolves for it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from lab import addresses
from lab.names import PrivateName, private_names
from lab.scenarios import BATCH_FRONT_ENDS, PrivateZones, Scenario, matches

Rcode = Literal["NOERROR", "NXDOMAIN", "SERVFAIL"]


@dataclass(frozen=True, slots=True)
class Record:
    name: str
    rtype: Literal["A", "CNAME"]
    value: str


@dataclass(frozen=True, slots=True)
class Answer:
    rcode: Rcode
    records: tuple[Record, ...] = ()


def _front_end(name: str) -> str:
    """The name whose address a public name gets: names under a shared front end share it."""
    for front_end in BATCH_FRONT_ENDS:
        if name.endswith("." + front_end):
            return front_end
    return name


class Zones:
    """The answers of one resolver in one scenario."""

    def __init__(self, scenario: Scenario, *, forwarded: bool = True) -> None:
        """forwarded=False: a resolver that does not forward the workspace's zones to Azure DNS
        sees them as the internet does: privatelink names unlinked, instance names public."""
        self._scenario = scenario
        self._forwarded = forwarded
        self._mode: PrivateZones = scenario.private_zones if forwarded else "unlinked"
        self._private = private_names(scenario.context)
        self._links = {p.link: p.address for p in self._private.values() if p.link}

    def answer(self, qname: str) -> Answer:
        """The A-record view of qname: its CNAME chain, then its address (or the error)."""
        name = qname.lower().rstrip(".")
        if matches(name, self._scenario.servfail):
            return Answer("SERVFAIL")
        if matches(name, self._scenario.nxdomain):
            return Answer("NXDOMAIN")
        private = self._private.get(name)
        if private is None:
            if name in self._links:
                return self._privatelink(name, self._links[name], ())
            return Answer(
                "NOERROR", (Record(name, "A", addresses.public_address(_front_end(name))),)
            )
        if private.link is None:  # a record the customer adds to an instances zone of their own
            address = (
                (self._scenario.instance_address or private.address)
                if self._forwarded
                else addresses.public_address(name)
            )
            return Answer("NOERROR", (Record(name, "A", address),))
        return self._privatelink(
            private.link, private.address, (Record(name, "CNAME", private.link),)
        )

    def _privatelink(self, link: str, address: str, chain: tuple[Record, ...]) -> Answer:
        if self._mode == "missing":
            return Answer("NXDOMAIN", chain)
        if self._mode == "unlinked":
            address = addresses.public_address(link)
        return Answer("NOERROR", (*chain, Record(link, "A", address)))

    def address_of(self, host: str) -> str:
        """The address host resolves to (an IP literal is itself); LookupError if none."""
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
        answer = self.answer(host)
        for record in answer.records:
            if record.rtype == "A":
                return record.value
        raise LookupError(f"{host} does not resolve in this scenario ({answer.rcode})")


_SERVERS = {"azure": addresses.AZURE_DNS, "custom": addresses.CUSTOM_DNS}


def node_resolver(scenario: Scenario) -> str:
    """The first DNS server in the node's resolv.conf: the one its resolver asks, unless it fails."""
    return _SERVERS[scenario.resolver]


def node_resolvers(scenario: Scenario) -> tuple[str, ...]:
    """Every DNS server in the node's resolv.conf, in order."""
    return tuple(dict.fromkeys(_SERVERS[r] for r in (scenario.resolver, *scenario.more_resolvers)))


def zones_of(scenario: Scenario, server: str) -> Zones:
    """The answers of the DNS server at `server` (Azure DNS or the custom one). A custom server
    that does not forward the private zones resolves them as the internet does: publicly."""
    if server == addresses.CUSTOM_DNS and not scenario.custom_dns_forwards:
        return Zones(scenario, forwarded=False)
    return Zones(scenario)


__all__ = [
    "Answer", "PrivateName", "Record", "Zones", "node_resolver", "node_resolvers", "private_names", "zones_of"
]
