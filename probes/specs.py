"""What each probe is asked to do: one frozen Spec per layer, and the proxy a Spec may go
through. The planner builds every Spec (so a bad one fails at planning time, where unit tests see
it); the engine runs it. This module imports no protocol library, so `plan` and `rules` start
without h11, websockets or dnspython.

The engine owns every clock: `within(window)` is how a probe's protocol windows (a DNS query, a
UDP retransmit) follow the time the engine gives the check, so a short check window never holds a
probe in one long protocol wait."""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import ClassVar
from urllib.parse import unquote, urlsplit


class Layer(StrEnum):
    """The network layer a check probes: one probe kind per layer, named once here."""

    DNS = "dns"
    TCP = "tcp"
    UDP = "udp"
    TLS = "tls"
    HTTP = "http"
    WEBSOCKET = "websocket"
    SMB = "smb"
    LOCAL = "local"


def is_ip(text: str) -> bool:
    """An IP literal (a scoped IPv6 address included): here, not in probes._net, so that the
    planner and `rules` can ask without loading asyncio and ssl."""
    try:
        ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return False
    return True


class SpecError(ValueError):
    """A Spec that no probe could run: a planner bug (or a bad user endpoint), never a network fact."""


PROXY_SCHEMES = {"http": 80, "https": 443}  # the default port is the scheme's, as requests/urllib3 use it


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP(S) proxy URL parsed once, for the planner (which checks the path to it) and for the
    http and websocket probes (which go through it), so all three dial the same host and port.
    A URL without a scheme is http://, as Python's clients read HTTPS_PROXY=host:port."""

    scheme: str
    host: str
    port: int
    userinfo: str | None = None  # as written (percent-encoded); never shown: see `redact`

    # A host name as resolvers take it (underscores too, as in some internal zones); IPv4 matches.
    # Patterns are compiled on first use (re caches them): `plan` and `rules` mostly need none.
    _HOST: ClassVar[str] = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?"

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """No part of the URL but its scheme is ever put in an error: in a malformed URL a password
        can be anywhere. The port is ASCII digits within 1-65535 on every Python version, as the
        config file's ports are (agent/inputs/values.py: `is_port`)."""
        text = url.strip()
        if not text.isprintable() or any(c.isspace() for c in text):  # urlsplit would drop a tab or newline
            raise SpecError("the proxy URL holds a space or a control character")
        try:
            parts = urlsplit(text if "://" in text else f"http://{text}")
            host = parts.hostname
        except ValueError:  # an unclosed or invalid [IPv6] host
            raise SpecError("the proxy URL is malformed") from None
        scheme = parts.scheme.lower()
        if scheme not in PROXY_SCHEMES:
            raise SpecError(f"unsupported proxy scheme {scheme!r} (http:// or https://)")
        if "@" in parts.path + parts.query + parts.fragment:  # the credentials hold a / ? or #
            raise SpecError("the proxy URL has an @ after its host: percent-encode / ? # in the credentials")
        hostinfo = parts.netloc.rpartition("@")[2]
        bracketed = hostinfo.startswith("[")
        junk, _, port = (hostinfo.rpartition("]")[2] if bracketed else hostinfo).partition(":")
        valid_port = len(port) <= 5 and port.isascii() and port.isdigit() and 0 < int(port) < 65536
        if (bracketed and junk) or (port and not valid_port):
            raise SpecError("the proxy URL has an invalid port (1-65535)")
        if not host:
            raise SpecError("the proxy URL has no host")
        if not re.fullmatch(cls._HOST, host) and not cls._is_address(host):
            raise SpecError("the proxy host is neither a DNS name nor an IP address")
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else None
        return cls(scheme, host, int(port) if port else PROXY_SCHEMES[scheme], userinfo)

    @staticmethod
    def _is_address(host: str) -> bool:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True

    @property
    def user(self) -> str | None:
        return None if self.userinfo is None else unquote(self.userinfo.partition(":")[0])

    @property
    def password(self) -> str | None:
        return None if self.userinfo is None else unquote(self.userinfo.partition(":")[2])

    def _url(self, userinfo: str | None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{userinfo + '@' if userinfo is not None else ''}{host}:{self.port}"

    @property
    def url(self) -> str:
        """The URL with the credentials, for the client that speaks to the proxy."""
        return self._url(self.userinfo)

    @property
    def shown(self) -> str:
        """The URL with credentials redacted: what reports and logs may carry."""
        return self.redact(self.url)

    # An optional scheme, then everything up to the last @: a password may hold an unencoded @ or /.
    _USERINFO: ClassVar[str] = r"^([A-Za-z][A-Za-z0-9+.-]*://)?.*@"

    @classmethod
    def redact(cls, text: str) -> str:
        """`text` (a proxy URL, parsed or not) with its whole userinfo as ***: the user too, since a
        token is often the user part alone (http://TOKEN@proxy). The one redaction: `shown` and the
        node facts (probes.node.redact) both use it."""
        return re.sub(cls._USERINFO, r"\1***@", text, count=1, flags=re.DOTALL)


def _port(port: int) -> None:
    if not 0 < port < 65536:
        raise SpecError(f"port {port} is outside 1-65535")


def _seconds(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise SpecError(f"{name} must be a finite number of seconds above 0, not {value!r}")


def _url(url: str, schemes: tuple[str, ...]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise SpecError(f"{url!r} is not a {' or '.join(schemes)} URL")


@dataclass(frozen=True, slots=True)
class DnsSpec:
    layer: ClassVar[Layer] = Layer.DNS
    host: str
    resolvers: tuple[str, ...] = ()  # "ip", "ip:port" or "[v6]:port"; empty: the node's own
    expect: str = "any"  # any | private | public
    expect_addresses: tuple[str, ...] = ()  # when given, every answer must be one of these
    query_timeout: float = 2.0  # per direct query: a protocol window, set by `within`
    system: bool = True  # False: direct answers alone decide
    hosts_file: str = "/etc/hosts"  # what the system path reads before DNS (nsswitch `files`)
    # a DNS label (privatelink): a CNAME chain through a name carrying it shows that the name has a
    # private endpoint, so a public answer fails as if `expect` were private; "": never inferred
    private_link_label: str = ""

    def __post_init__(self) -> None:
        if self.expect not in ("any", "private", "public"):
            raise SpecError(f"dns expect must be any, private or public, not {self.expect!r}")
        _seconds("query_timeout", self.query_timeout)

    def within(self, window: float) -> DnsSpec:
        """A third of the window per query: the first round (a truncated answer retried over TCP
        takes two windows) or the first round and the re-ask that shows a flapping server (one
        window each), with a third to spare, so a slow resolver never eats the whole check."""
        return replace(self, query_timeout=max(min(self.query_timeout, window / 3), 0.01))


@dataclass(frozen=True, slots=True)
class TcpSpec:
    layer: ClassVar[Layer] = Layer.TCP
    host: str
    port: int
    proxy: Proxy | None = None  # a CONNECT tunnel through it to host:port (the proxy resolves host)
    # a connect still unanswered this long has its path traced (probes._hops), unless its route's
    # early-verdict bound passed first: a protocol window, set by `within`
    localise_after: float = 2.5

    def __post_init__(self) -> None:
        _port(self.port)
        _seconds("localise_after", self.localise_after)

    def within(self, window: float) -> TcpSpec:
        """Half the window: the trace's answers come back within a round trip, long before the end."""
        return replace(self, localise_after=max(window / 2, 0.01))


@dataclass(frozen=True, slots=True)
class UdpSpec:
    layer: ClassVar[Layer] = Layer.UDP
    host: str
    port: int
    payload: bytes = b""  # a protocol-valid request where one exists: many services ignore garbage
    attempts: int = 3  # datagrams sent; ICMP is rate limited and UDP is lossy, so retransmit
    interval: float = 0.5  # listening window after each datagram: a protocol window, set by `within`

    def __post_init__(self) -> None:
        _port(self.port)
        _seconds("interval", self.interval)
        if self.attempts < 1:
            raise SpecError("udp attempts must be at least 1")

    def within(self, window: float) -> UdpSpec:
        """Every datagram and its listening window fit in the check's window, with one slot to spare."""
        return replace(self, interval=max(min(self.interval, window / (self.attempts + 1)), 0.01))


@dataclass(frozen=True, slots=True)
class TlsSpec:
    layer: ClassVar[Layer] = Layer.TLS
    host: str
    port: int
    cafile: str | None = None  # None: the system store (honours SSL_CERT_FILE)
    expected_issuers: tuple[str, ...] = ()  # issuer O= values that are not inspection; empty: any

    def __post_init__(self) -> None:
        _port(self.port)

    def within(self, window: float) -> TlsSpec:
        return self


@dataclass(frozen=True, slots=True)
class HttpSpec:
    layer: ClassVar[Layer] = Layer.HTTP
    url: str
    host: str  # the name in the URL: SNI and Host stay this name whatever address is used
    proxy: Proxy | None = None  # explicit: the planner decides, the environment is not consulted
    cafile: str | None = None
    method: str = "GET"
    expected_issuers: tuple[str, ...] = ()  # https through a proxy: issuer O= values that are not inspection

    def __post_init__(self) -> None:
        _url(self.url, ("http", "https"))

    def within(self, window: float) -> HttpSpec:
        return self


@dataclass(frozen=True, slots=True)
class WebSocketSpec:
    layer: ClassVar[Layer] = Layer.WEBSOCKET
    url: str  # ws:// or wss://
    host: str  # the name in the URL: SNI and Host stay this name
    proxy: Proxy | None = None  # explicit, never from the environment
    cafile: str | None = None

    def __post_init__(self) -> None:
        _url(self.url, ("ws", "wss"))

    def within(self, window: float) -> WebSocketSpec:
        return self


SMB_DIALECTS = ("2.0.2", "2.1", "3.0", "3.0.2", "3.1.1")  # what Windows and Linux's cifs offer, oldest first


@dataclass(frozen=True, slots=True)
class SmbSpec:
    """An SMB2 NEGOTIATE (what a mount sends first): `dialects` are offered, a negotiated dialect
    below `secure_dialect` is a warning (Azure Files needs SMB 3.x for encryption and for mounts
    from outside the storage account's region)."""

    layer: ClassVar[Layer] = Layer.SMB
    host: str
    port: int = 445
    dialects: tuple[str, ...] = SMB_DIALECTS
    secure_dialect: str = "3.0"

    def __post_init__(self) -> None:
        _port(self.port)
        unknown = [d for d in (*self.dialects, self.secure_dialect) if d not in SMB_DIALECTS]
        if unknown or not self.dialects or len(set(self.dialects)) != len(self.dialects):
            raise SpecError(f"smb dialects and secure_dialect must be among {', '.join(SMB_DIALECTS)} (dialects "
                            f"distinct, at least one), not {self.dialects!r} and {self.secure_dialect!r}")

    def within(self, window: float) -> SmbSpec:
        return self


LOCAL_CHECKS = ("listening", "firewall-inbound", "firewall-platform", "os", "docker-bridge")


@dataclass(frozen=True, slots=True)
class LocalSpec:
    layer: ClassVar[Layer] = Layer.LOCAL
    check: str  # one of LOCAL_CHECKS
    port: int | None = None
    protocol: str = "tcp"
    address: str | None = None  # firewall-platform: the platform address no local rule may block
    subnets: tuple[str, ...] = ()  # docker-bridge; empty: the node's own interface networks
    vantage: str = ""  # docker-bridge: the other namespace the run looks from; "": the host's

    def __post_init__(self) -> None:
        if self.check not in LOCAL_CHECKS:
            raise SpecError(f"unknown local check {self.check!r}")
        if self.port is not None:
            _port(self.port)
        if self.check == "firewall-platform" and not self.address:
            raise SpecError("the firewall-platform check needs the platform address")

    def within(self, window: float) -> LocalSpec:
        return self


Spec = DnsSpec | TcpSpec | UdpSpec | TlsSpec | HttpSpec | WebSocketSpec | SmbSpec | LocalSpec
