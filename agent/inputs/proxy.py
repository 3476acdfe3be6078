"""Which proxy Azure ML's own processes would use for a name, and NO_PROXY matched exactly.

Azure ML's clients are Python's requests, and a name called bypassed here must be one requests
does not send to the proxy, so NO_PROXY is matched as `requests.utils.should_bypass_proxies` and the
urllib `proxy_bypass_environment` it falls back to match it (requests 2.x, CPython 3.8 to 3.13), quirks
included (tests/unit/test_no_proxy_differential.py holds the two side by side):
- `*` bypasses everything only as the whole value; as one entry among others it matches nothing;
- entries are separated by commas only: requests deletes every space inside the value (`a.com b.com`
  is the one entry `a.comb.com`) and urllib strips whitespace around each entry, so both readings count;
- leading dots are ignored; a name matches itself and its subdomains; `*.name` matches nothing (no
  wildcards); a trailing dot is kept, so `a.com.` and `a.com` are different names;
- an IPv4 host (whatever inet_aton accepts) matches an IPv4 CIDR block (/1 to /32), the same text, and,
  through urllib, entries by suffix as names do; an IPv6 host only the same text, never a block;
- `name:port` matches only a URL that writes that port, only written in lower case, never for an IPv4
  host; every other entry matches case-insensitively."""

from __future__ import annotations

import re
import socket
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
    no_proxy_text: str = ""  # NO_PROXY as written, for a remedy that extends it (the entries are `no_proxy`)


def settings(environ: Mapping[str, str], etc_environment: Mapping[str, str]) -> ProxySettings:
    """The process environment first (lower case wins, as in requests), then /etc/environment:
    the first that sets a proxy variable gives them all (with its NO_PROXY)."""
    for source, values in (("environment", environ), ("/etc/environment", etc_environment)):
        https = _parsed(values, "https_proxy", source)
        http = _parsed(values, "http_proxy", source)
        if https or http:
            raw = values.get("no_proxy") or values.get("NO_PROXY") or ""
            return ProxySettings(https, no_proxy_entries(raw), source, http, raw)
    return ProxySettings(None, (), "none")


def _parsed(values: Mapping[str, str], name: str, source: str) -> Proxy | None:
    url = values.get(name) or values.get(name.upper())
    if not url:
        return None
    try:
        return Proxy.parse(url)
    except SpecError as exc:
        raise ProxyError(f"{name.upper()} (from {source}): {exc}") from None


def no_proxy_entries(raw: str) -> tuple[str, ...]:
    """NO_PROXY as `bypassed` reads it: `("*",)` for the whole value `*` only; otherwise the comma-separated
    entries, trimmed, in the case written (requests compares `name:port` entries case-sensitively). An
    entry with a space inside is kept as written, since requests and urllib read it differently; entries
    that no reading can match (empty, or a `*` that is not the whole value) are dropped."""
    if raw == "*":
        return ("*",)
    entries: list[str] = []
    for piece in raw.split(","):
        joined, stripped = piece.replace(" ", ""), piece.strip()
        if {joined, stripped} <= {"", "*"}:
            continue
        entries.append(stripped if joined == stripped else piece)
    return tuple(dict.fromkeys(entries))


def bypassed(host: str, port: int | None, no_proxy: tuple[str, ...]) -> bool:
    """True when requests reaches `host` directly under these entries (from `no_proxy_entries`).

    `host` is a name or an IP literal (IPv6 without brackets); `port` is the port the URL writes, None
    when it writes none (`https://name/` has none: an entry `name:443` does not match it)."""
    if no_proxy == ("*",):
        return True
    hostname = host.lower()  # what urlparse(url).hostname gives
    with_port = f"{hostname}:{port}" if port else hostname
    ipv4 = _inet_aton(hostname) is not None
    return any(_requests_match(hostname, with_port, ipv4, entry.replace(" ", ""))
               or _urllib_match(hostname, entry.strip()) for entry in no_proxy)


def _requests_match(hostname: str, with_port: str, ipv4: bool, entry: str) -> bool:
    """requests' own loop: IPv4 hosts by CIDR block or the same text, other hosts by name and suffix, with
    and without the URL's port; the entry is not lowered."""
    if not entry:
        return False
    if ipv4:
        return _in_block(hostname, entry) if _is_block(entry) else hostname == entry
    entry = entry.lstrip(".")
    return entry in (hostname, with_port) or hostname.endswith("." + entry) or with_port.endswith("." + entry)


_PORT = re.compile("(.*):([0-9]*)", re.DOTALL)  # urllib.parse._splitport's pattern


def _urllib_match(hostname: str, entry: str) -> bool:
    """urllib's proxy_bypass_environment(hostname): by name and suffix, lowered, against the hostname and
    against what its port-splitting leaves of it (`fd00::5` splits to `fd00:`, port 5)."""
    if not entry:
        return False
    split = _PORT.fullmatch(hostname)
    hostonly = split.group(1) if split and split.group(2) else hostname
    entry = entry.lstrip(".").lower()
    return entry in (hostonly, hostname) or hostonly.endswith("." + entry) or hostname.endswith("." + entry)


def _inet_aton(text: str) -> int | None:
    """The address as requests reads it (socket.inet_aton: `10.1` and `0x7f.1` are addresses too)."""
    try:
        return int.from_bytes(socket.inet_aton(text), "big")
    except (OSError, ValueError):
        return None


def _is_block(entry: str) -> bool:
    """requests' is_valid_cidr: one `/`, a mask int() reads in 1..32, an address inet_aton reads."""
    if entry.count("/") != 1:
        return False
    address, _, mask = entry.partition("/")
    try:
        bits = int(mask)
    except ValueError:
        return False
    return 1 <= bits <= 32 and _inet_aton(address) is not None


def _in_block(host: str, block: str) -> bool:
    address, _, bits = block.partition("/")
    mask = (0xFFFFFFFF << (32 - int(bits))) & 0xFFFFFFFF
    return (_inet_aton(host) or 0) & mask == (_inet_aton(address) or 0) & mask
