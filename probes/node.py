"""Facts about this node, read locally (psutil, /proc, /etc) without sending a packet: they explain
failures the probes see (no default route, a dead resolver in resolv.conf, a proxy in the way).
Everything here is best effort: a missing file or a denied read gives an empty value, never an
exception, because the report must still be written (only the dns probe's `resolvers(strict=True)`
raises, for the node's own limits)."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

from probes._trace import Fact
from probes.reasons import LOCAL_RESOURCE_ERRNOS
from probes.specs import Proxy

RESOLV_CONF = Path("/etc/resolv.conf")
RESOLVED_UPSTREAMS = Path("/run/systemd/resolve/resolv.conf")  # systemd-resolved's real servers
RESOLVED_STUB = "127.0.0.53"
ETC_ENVIRONMENT = Path("/etc/environment")  # what systemd units see; they skip login shells
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def resolvers(resolv_conf: Path | None = None, upstreams: Path | None = None, *,
              strict: bool = False) -> tuple[str, ...]:
    """The nameservers applications use; behind the systemd-resolved stub alone, also the stub's
    upstreams, since the stub turns every upstream failure into SERVFAIL. Paths default to the
    module constants, read at call time. `strict` (the dns probe) raises the node's own limits
    (EMFILE) instead of reading no resolver: "none configured" would be a false verdict."""
    servers, _ = _read_resolv(resolv_conf or RESOLV_CONF, strict)
    if servers == [RESOLVED_STUB]:
        servers += _read_resolv(upstreams or RESOLVED_UPSTREAMS, strict)[0]
    return tuple(dict.fromkeys(servers))


def search_domains(resolv_conf: Path | None = None) -> tuple[str, ...]:
    return tuple(_read_resolv(resolv_conf or RESOLV_CONF)[1])


def redact(url: str) -> str:
    """Hide the credentials in a proxy variable (***@host), keeping what identifies the proxy: the
    same redaction as a parsed proxy's (Proxy.redact), whether or not this value parses."""
    return Proxy.redact(url)


def proxy_settings(environ: Mapping[str, str] | None = None,
                   etc_environment: Path | None = None) -> dict[str, Fact]:
    """Proxy variables from this process's environment and from /etc/environment, redacted.
    Both matter: a login shell and a systemd unit can disagree, and so can Azure ML's jobs."""
    env = os.environ if environ is None else environ
    from_file = _read_environment(etc_environment or ETC_ENVIRONMENT)
    return {
        "environment": {k: redact(env[k]) for k in PROXY_VARIABLES if k in env},
        "etc_environment": {k: redact(from_file[k]) for k in PROXY_VARIABLES if k in from_file},
    }


def collect(resolv_conf: Path | None = None, upstreams: Path | None = None,
            proc: Path = Path("/proc")) -> dict[str, Fact]:
    """The node section of the report."""
    return {
        "hostname": socket.gethostname(),
        **network_view(resolv_conf, upstreams, proc),
        "search_domains": list(search_domains(resolv_conf)),
        "proxy": proxy_settings(),
        "listening": _listening(),
    }


def network_view(resolv_conf: Path | None = None, upstreams: Path | None = None,
                 proc: Path = Path("/proc")) -> dict[str, Fact]:
    """What one network namespace looks like: its interfaces (MTU included), default routes and
    resolvers. Read on the host before a run enters another vantage, it is what that vantage is
    compared with."""
    return {
        "interfaces": _interfaces(),
        "default_routes": (_ipv4_default_routes(proc / "net/route")
                           + _ipv6_default_routes(proc / "net/ipv6_route")),
        "resolvers": list(resolvers(resolv_conf, upstreams)),
    }


def uplink_mtu(view: Mapping[str, Fact]) -> tuple[str, int] | None:
    """The interface of a view's first IPv4 default route and its MTU, if both are known."""
    routes = view.get("default_routes")
    interfaces = view.get("interfaces")
    if not isinstance(routes, list) or not isinstance(interfaces, list):
        return None
    uplink = next((r.get("interface") for r in routes if isinstance(r, dict) and r.get("family") == "ipv4"), None)
    mtu = next((i.get("mtu") for i in interfaces if isinstance(i, dict) and i.get("name") == uplink), None)
    return (str(uplink), mtu) if isinstance(mtu, int) and not isinstance(mtu, bool) else None


def _read_resolv(path: Path, strict: bool = False) -> tuple[list[str], list[str]]:
    servers: list[str] = []
    search: list[str] = []
    for words in (line.split() for line in _lines(path, strict)):
        if len(words) >= 2 and words[0] == "nameserver":
            servers.append(words[1])
        elif words and words[0] in ("search", "domain"):
            search = words[1:]  # the last search/domain line wins, as in glibc
    return servers, search


def environment_file(path: Path | None = None) -> dict[str, str]:
    """/etc/environment as KEY=value pairs, unredacted (systemd units and cron do not inherit a
    login shell's variables, but PAM sessions read this file)."""
    return _read_environment(path or ETC_ENVIRONMENT)


def _read_environment(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in _lines(path):
        name, sep, value = line.removeprefix("export ").partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip().strip("\"'")
    return values


def _lines(path: Path, strict: bool = False) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError as exc:
        if strict and exc.errno in LOCAL_RESOURCE_ERRNOS:
            raise
        return []


def _interfaces() -> list[Fact]:
    import psutil  # type: ignore[import-untyped,unused-ignore]  # here: `plan` and `rules` read no interfaces
    try:
        addrs = psutil.net_if_addrs()
        stats = psutil.net_if_stats()
    except OSError:
        return []
    interfaces: list[Fact] = []
    for name, entries in sorted(addrs.items()):
        stat = stats.get(name)
        addresses: list[Fact] = [_cidr(e.address, e.netmask) for e in entries
                                 if e.family in (socket.AF_INET, socket.AF_INET6)]
        interfaces.append({"name": name, "up": bool(stat and stat.isup), "mtu": stat.mtu if stat else None,
                           "addresses": addresses})
    return interfaces


def _cidr(address: str, netmask: str | None) -> str:
    """psutil gives masks as addresses (255.255.255.0, ffff:ffff::); count their bits."""
    address = address.partition("%")[0]
    try:
        return f"{address}/{int(ipaddress.ip_address(netmask or '')).bit_count()}"
    except ValueError:
        return address


def _ipv4_default_routes(path: Path) -> list[Fact]:
    """/proc/net/route: Destination and Gateway are little-endian hex."""
    routes: list[Fact] = []
    for fields in (line.split() for line in _lines(path)[1:]):
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            with suppress(ValueError, OverflowError):
                gateway = socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
                routes.append({"family": "ipv4", "interface": fields[0], "gateway": gateway,
                               "metric": int(fields[6])})
    return routes


def _ipv6_default_routes(path: Path) -> list[Fact]:
    """/proc/net/ipv6_route: dest, dest prefix, src, src prefix, next hop, metric, ..., device."""
    routes: list[Fact] = []
    for fields in (line.split() for line in _lines(path)):
        if len(fields) >= 10 and fields[0] == "0" * 32 and fields[1] == "00" and fields[9] != "lo":
            with suppress(ValueError):
                gateway = str(ipaddress.IPv6Address(bytes.fromhex(fields[4])))
                routes.append({"family": "ipv6", "interface": fields[9], "gateway": gateway,
                               "metric": int(fields[5], 16)})
    return routes


def _listening() -> dict[str, Fact]:
    """Local listeners, e.g. a proxy on localhost or a DNS forwarder; pids need no privilege."""
    import psutil  # type: ignore[import-untyped,unused-ignore]
    try:
        connections = psutil.net_connections("inet")
    except (psutil.AccessDenied, OSError):
        return {"tcp": [], "udp": []}
    tcp = {_endpoint(c.laddr.ip, c.laddr.port) for c in connections
           if c.type == socket.SOCK_STREAM and c.status == psutil.CONN_LISTEN}
    udp = {_endpoint(c.laddr.ip, c.laddr.port) for c in connections
           if c.type == socket.SOCK_DGRAM and not c.raddr}
    return {"tcp": [*sorted(tcp)], "udp": [*sorted(udp)]}


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
