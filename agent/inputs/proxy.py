"""Which proxy Azure ML's own processes would use for a name, and NO_PROXY matched exactly.

Azure ML's clients are Python (requests/urllib3), so NO_PROXY follows requests' rules: entries
separated by commas (or spaces); `*` bypasses everything; an IP address or CIDR block matches
addresses; a name matches itself and every subdomain, with or without a leading `.` or `*.`; an
entry with `:port` matches only that port. Matching is case-insensitive."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from probes.specs import Proxy, SpecError


class ProxyError(ValueError):
    """A proxy variable cannot be used as given; one line naming it and where it was set."""


@dataclass(frozen=True, slots=True)
class ProxySettings:
    proxy: Proxy | None  # HTTPS_PROXY: what https:// and wss:// requests go through
    no_proxy: tuple[str, ...]
    source: str  # environment | /etc/environment | none
    http_proxy: Proxy | None = None  # HTTP_PROXY: what plain http:// requests go through


def settings(environ: Mapping[str, str], etc_environment: Mapping[str, str]) -> ProxySettings:
    """The process environment first (lower case wins, as in requests), then /etc/environment:
    the first that sets a proxy variable gives them all (with its NO_PROXY)."""
    for source, values in (("environment", environ), ("/etc/environment", etc_environment)):
        https = _parsed(values, "https_proxy", source)
        http = _parsed(values, "http_proxy", source)
        if https or http:
            raw = values.get("no_proxy") or values.get("NO_PROXY") or ""
            entries = tuple(e.strip().lower() for e in raw.replace(" ", ",").split(",") if e.strip())
            return ProxySettings(https, entries, source, http)
    return ProxySettings(None, (), "none")


def _parsed(values: Mapping[str, str], name: str, source: str) -> Proxy | None:
    url = values.get(name) or values.get(name.upper())
    if not url:
        return None
    try:
        return Proxy.parse(url)
    except SpecError as exc:
        raise ProxyError(f"{name.upper()} (from {source}): {exc}") from None


def bypassed(host: str, port: int | None, no_proxy: tuple[str, ...]) -> bool:
    """True when `host` (a name or an IP literal) is reached directly under this NO_PROXY."""
    host = host.lower().rstrip(".")
    for entry in no_proxy:
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if _has_port(entry) else (entry, "", "")
        if entry_port and port is not None and str(port) != entry_port:
            continue
        if _address_match(host, name) or _name_match(host, name):
            return True
    return False


def _has_port(entry: str) -> bool:
    head, sep, tail = entry.rpartition(":")
    return bool(sep) and tail.isdigit() and ":" not in head  # an IPv6 address is not host:port


def _address_match(host: str, entry: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
        return address in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False


def _name_match(host: str, entry: str) -> bool:
    suffix = entry.removeprefix("*").removeprefix(".")
    return bool(suffix) and (host == suffix or host.endswith("." + suffix))
