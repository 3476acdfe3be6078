"""The failure taxonomy: every way a check can end other than passing, as data.

Codes are stable API (JSON reports, metrics labels, journald fields): never rename or reuse one.
Each member carries the status it gives a check and a one-line meaning. `classify` maps an
exception from the OS or the ssl module to a member through the tables below; probes translate
library-specific errors themselves (raise ProbeError(...) from exc)."""

from __future__ import annotations

import errno
import socket

from probes._compat import StrEnum
from probes.specs import Layer


class Status(StrEnum):
    PASS = "pass"
    INCONCLUSIVE = "inconclusive"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


class Reason(StrEnum):
    """One member per observed failure class, grouped by layer."""

    # dns: the system path (getaddrinfo) and direct queries to each configured resolver
    DNS_NXDOMAIN = "dns.nxdomain"  # the name does not exist
    DNS_NODATA = "dns.nodata"  # the name exists but has no A/AAAA record
    DNS_SERVFAIL = "dns.servfail"  # the resolver failed (upstream, forwarder, DNSSEC)
    DNS_REFUSED = "dns.refused"  # the resolver refused to answer this client
    DNS_TIMEOUT = "dns.timeout"  # no resolver answered in time
    DNS_SERVER_UNREACHABLE = "dns.server-unreachable"  # could not talk to any resolver
    DNS_NO_RESOLVER = "dns.no-resolver"  # no resolver is configured on the node
    DNS_PUBLIC_ANSWER = "dns.public-answer"  # resolves to a public address where a private one is required
    DNS_WRONG_ADDRESS = "dns.wrong-address"  # resolves, but not to the address it must have
    # tcp: one connect per resolved address, errno kept
    TCP_REFUSED = "tcp.refused"  # RST or ICMP port-unreachable: something actively rejected
    TCP_TIMEOUT = "tcp.timeout"  # no answer to the SYN: silently dropped
    TCP_HOST_UNREACHABLE = "tcp.host-unreachable"  # ICMP host unreachable (also admin-prohibited on IPv4)
    TCP_NET_UNREACHABLE = "tcp.net-unreachable"  # no route, or ICMP net unreachable
    TCP_ADMIN_PROHIBITED = "tcp.admin-prohibited"  # ICMP communication administratively prohibited
    TCP_RESET = "tcp.reset"  # connected, then reset by the peer or a middlebox
    TCP_CLOSED = "tcp.closed"  # connected, then closed before the exchange finished
    LOCAL_ERROR = "local.error"  # the node itself refused (local netfilter policy, interface down)
    LOCAL_RESOURCE_LIMIT = "local.resource-limit"  # the node ran out of descriptors, buffers, memory or ports
    # udp: connected datagram socket, nmap semantics
    UDP_CLOSED = "udp.closed"  # ICMP port unreachable
    UDP_PROHIBITED = "udp.prohibited"  # ICMP unreachable/prohibited other than port
    UDP_NO_REPLY = "udp.no-reply"  # silence: open|filtered, not a failure by itself
    # tls: handshake with SNI and verification against the node's trust store
    TLS_UNTRUSTED = "tls.untrusted"  # the chain does not lead to a CA this node trusts
    TLS_SELF_SIGNED = "tls.self-signed"  # the server certificate is self-signed
    TLS_NAME_MISMATCH = "tls.name-mismatch"  # the certificate is not for this name
    TLS_EXPIRED = "tls.expired"  # the certificate has expired (or the node clock is ahead)
    TLS_NOT_YET_VALID = "tls.not-yet-valid"  # not valid yet (usually the node clock is behind)
    TLS_PROTOCOL_MISMATCH = "tls.protocol-mismatch"  # the peer does not speak TLS (a plaintext reply)
    TLS_RESET = "tls.reset"  # reset or closed during the handshake
    TLS_TIMEOUT = "tls.timeout"  # the handshake stalled
    TLS_HANDSHAKE = "tls.handshake"  # the handshake failed (version, cipher, alert)
    TLS_UNEXPECTED_ISSUER = "tls.unexpected-issuer"  # trusted, but not issued by an expected CA
    # http
    HTTP_TIMEOUT = "http.timeout"  # request sent, no response in time
    HTTP_STATUS = "http.status"  # an HTTP status the check does not accept
    HTTP_FIREWALL_DENIED = "http.firewall-denied"  # Azure Firewall deny page (HTTP 470)
    HTTP_RESOURCE_DENIED = "http.resource-denied"  # the resource's own network rules deny this client (403 + code)
    HTTP_INVALID_RESPONSE = "http.invalid-response"  # the peer answered, but not with valid HTTP
    HTTP_IDENTITY_DENIED = "http.identity-denied"  # an authenticated request refused for its identity (RBAC, policy)
    HTTP_NO_TOKEN = "http.no-token"  # the managed identity endpoint gave no token: nothing to authenticate with
    PROXY_AUTH_REQUIRED = "proxy.auth-required"  # the proxy answered 407
    PROXY_DENIED = "proxy.denied"  # the proxy refused the CONNECT (403 and friends)
    PROXY_UPSTREAM_FAILED = "proxy.upstream-failed"  # the proxy could not reach the target (502-504)
    PROXY_UNREACHABLE = "proxy.unreachable"  # the proxy itself cannot be reached
    # websocket
    WS_UPGRADE_REFUSED = "websocket.upgrade-refused"  # the upgrade got a non-101 status
    WS_UPGRADE_INVALID = "websocket.upgrade-invalid"  # 101, but the handshake was mangled
    WS_TIMEOUT = "websocket.timeout"  # no answer to the upgrade in time
    WS_CLOSED_EARLY = "websocket.closed-early"  # upgraded, then closed before the first exchange
    # smb: an SMB2 NEGOTIATE on 445, after TCP connected
    SMB_NO_NEGOTIATE_REPLY = "smb.no-negotiate-reply"  # accepted, but no NEGOTIATE reply in time (a silent middlebox)
    SMB_CLOSED = "smb.closed"  # closed or reset right after the NEGOTIATE request, nothing answered
    SMB_NOT_SMB = "smb.not-smb"  # answered, but not with SMB (an HTTP or TLS reply, garbage)
    SMB_SMB1_ONLY = "smb.smb1-only"  # answered with SMB1 (\xffSMB), which Azure Files never speaks
    SMB_INVALID_REPLY = "smb.invalid-reply"  # an SMB2 signature, but a truncated or malformed NEGOTIATE reply
    SMB_ERROR_STATUS = "smb.error-status"  # a well-formed SMB2 reply with an error NT status
    SMB_DIALECT_OLD = "smb.dialect-old"  # negotiated below SMB 3.0: no encryption, no mount from outside the region
    # local checks on the node
    LOCAL_CHECK_FAILED = "local.check-failed"  # a node-local requirement is not met
    LOCAL_TIMEOUT = "local.timeout"  # a node-local check did not finish in time
    LOCAL_INCONCLUSIVE = "local.inconclusive"  # the node could not be inspected, or not fully
    # any layer: it worked, but slower than its latency threshold (agent/latency.py)
    LATENCY_SLOW = "latency.slow"  # passed, slowly: a warning, never a failure
    # the check did not run, or the probe could not run
    SKIP_DEPENDENCY = "skip.dependency"  # the layer below failed, so this one was not tried
    SKIP_MISSING_CONTEXT = "skip.missing-context"  # a context value this check needs is unknown
    SKIP_POLICY = "skip.policy"  # the endpoint is blocked on purpose by configuration
    PROBE_CANCELLED = "probe.cancelled"  # the run was interrupted or hit its deadline first
    PROBE_INTERNAL = "probe.internal"  # a bug in the agent: reported, never diagnosed

    @property
    def status(self) -> Status:
        return _STATUS.get(self, Status.FAIL)

    @property
    def layer(self) -> str:
        return self.value.split(".", 1)[0]


_STATUS: dict[Reason, Status] = {
    Reason.UDP_NO_REPLY: Status.INCONCLUSIVE,
    Reason.LOCAL_INCONCLUSIVE: Status.INCONCLUSIVE,
    Reason.LOCAL_RESOURCE_LIMIT: Status.INCONCLUSIVE,  # says nothing of the network: never a verdict on it
    Reason.TLS_UNEXPECTED_ISSUER: Status.WARN,
    Reason.SMB_DIALECT_OLD: Status.WARN,
    Reason.LATENCY_SLOW: Status.WARN,
    Reason.SKIP_DEPENDENCY: Status.SKIP,
    Reason.SKIP_MISSING_CONTEXT: Status.SKIP,
    Reason.SKIP_POLICY: Status.SKIP,
    Reason.PROBE_CANCELLED: Status.INCONCLUSIVE,
    Reason.PROBE_INTERNAL: Status.INCONCLUSIVE,
    Reason.HTTP_NO_TOKEN: Status.INCONCLUSIVE,  # says nothing of the resource's rules
}

TIMEOUT_BY_LAYER: dict[Layer, Reason] = {
    Layer.DNS: Reason.DNS_TIMEOUT,
    Layer.TCP: Reason.TCP_TIMEOUT,
    Layer.UDP: Reason.UDP_NO_REPLY,
    Layer.TLS: Reason.TLS_TIMEOUT,
    Layer.HTTP: Reason.HTTP_TIMEOUT,
    Layer.WEBSOCKET: Reason.WS_TIMEOUT,
    Layer.SMB: Reason.SMB_NO_NEGOTIATE_REPLY,
    Layer.LOCAL: Reason.LOCAL_TIMEOUT,
}
# A phase whose timeout says something else than its layer's: the smb probe's own connect is TCP's
# (accepted but silent is the negotiate phase's, and only that is smb.no-negotiate-reply).
TIMEOUT_BY_PHASE: dict[tuple[Layer, str], Reason] = {
    (Layer.SMB, "connect"): Reason.TCP_TIMEOUT,
}


def timeout_reason(layer: Layer, phase: str | None) -> Reason:
    """What a check's timeout means, from the phase it struck (the engine's deadline, no probe timer)."""
    return TIMEOUT_BY_PHASE.get((layer, phase or ""), TIMEOUT_BY_LAYER[layer])


# OpenSSL X509 verify codes (ssl.SSLCertVerificationError.verify_code).
VERIFY_CODES: dict[int, Reason] = {
    2: Reason.TLS_UNTRUSTED,  # unable to get issuer certificate
    9: Reason.TLS_NOT_YET_VALID,
    10: Reason.TLS_EXPIRED,
    18: Reason.TLS_SELF_SIGNED,
    19: Reason.TLS_UNTRUSTED,  # self-signed certificate in chain (an untrusted root was sent)
    20: Reason.TLS_UNTRUSTED,  # unable to get local issuer certificate
    21: Reason.TLS_UNTRUSTED,  # unable to verify the first certificate
    62: Reason.TLS_NAME_MISMATCH,
}

# ssl.SSLError.reason values that mean "the peer is not speaking (our) TLS".
PROTOCOL_MISMATCH_REASONS = frozenset({
    "WRONG_VERSION_NUMBER", "UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION",
    "NO_PROTOCOLS_AVAILABLE", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE",
})

# getaddrinfo error codes (socket.gaierror.errno).
# (EAI_SYSTEM never arrives as one: Python raises the OSError of its errno, EMFILE under a descriptor limit.)
GAI_CODES: dict[int, Reason] = {
    socket.EAI_NONAME: Reason.DNS_NXDOMAIN,
    socket.EAI_AGAIN: Reason.DNS_TIMEOUT,  # ambiguous: timeout, SERVFAIL or REFUSED; dns probe refines
    socket.EAI_FAIL: Reason.DNS_SERVFAIL,
    socket.EAI_MEMORY: Reason.LOCAL_RESOURCE_LIMIT,
}
if hasattr(socket, "EAI_NODATA"):
    GAI_CODES[socket.EAI_NODATA] = Reason.DNS_NODATA

# errno of the node running out of something: a socket it could not open, bind or send on says nothing of the
# network, so any probe meeting one is inconclusive (EADDRNOTAVAIL: no free source port; EADDRINUSE: a
# source address and port already taken).
LOCAL_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL,
                                   errno.EADDRINUSE})

# errno after connect()/send() on a TCP socket; the UDP probe maps its own ICMP errors first.
ERRNO_CODES: dict[int, Reason] = {
    errno.ECONNREFUSED: Reason.TCP_REFUSED,
    errno.ETIMEDOUT: Reason.TCP_TIMEOUT,
    errno.EHOSTUNREACH: Reason.TCP_HOST_UNREACHABLE,
    errno.EHOSTDOWN: Reason.TCP_HOST_UNREACHABLE,
    errno.ENETUNREACH: Reason.TCP_NET_UNREACHABLE,
    errno.EACCES: Reason.TCP_ADMIN_PROHIBITED,  # IPv6 admin-prohibited; EPERM below is local netfilter
    errno.ECONNRESET: Reason.TCP_RESET,
    errno.EPIPE: Reason.TCP_RESET,
    errno.ECONNABORTED: Reason.TCP_RESET,
    errno.EPERM: Reason.LOCAL_ERROR,
    errno.ENETDOWN: Reason.LOCAL_ERROR,
    **dict.fromkeys(LOCAL_RESOURCE_ERRNOS, Reason.LOCAL_RESOURCE_LIMIT),
}

# errno from error_received() on a connected UDP socket: the ICMP error the kernel delivered.
UDP_ERRNO_CODES: dict[int, Reason] = {
    errno.ECONNREFUSED: Reason.UDP_CLOSED,  # ICMP port unreachable (3/3)
    errno.EHOSTUNREACH: Reason.UDP_PROHIBITED,  # host unreachable or admin-prohibited (3/1, 3/10, 3/13)
    errno.ENETUNREACH: Reason.UDP_PROHIBITED,  # net unreachable or net prohibited (3/0, 3/9)
    errno.ENOPROTOOPT: Reason.UDP_PROHIBITED,  # protocol unreachable (3/2)
    errno.EACCES: Reason.UDP_PROHIBITED,  # IPv6 administratively prohibited
    errno.EHOSTDOWN: Reason.UDP_PROHIBITED,
}


def classify(exc: BaseException) -> Reason:
    """Map an exception to a Reason, walking the cause chain from the outermost error inwards
    so the real OSError inside a library wrapper is found."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        reason = _classify_one(current)
        if reason is not None:
            return reason
        current = current.__cause__ or current.__context__
    return Reason.PROBE_INTERNAL


def local_limit(exc: BaseException) -> bool:
    """The node's own limit, not the network: a probe that would turn this error into a verdict of its own
    (proxy unreachable, server unreachable, no data) leaves it to `classify` instead."""
    return classify(exc) is Reason.LOCAL_RESOURCE_LIMIT


def _classify_one(exc: BaseException) -> Reason | None:
    import ssl  # here: the planner, `plan` and `rules` read the taxonomy without loading OpenSSL

    if isinstance(exc, ssl.SSLError) and isinstance(exc.__cause__, OSError):
        return None  # a library's wrapper (aiohttp's ClientConnectorCertificateError lacks verify_code)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return VERIFY_CODES.get(getattr(exc, "verify_code", 0), Reason.TLS_UNTRUSTED)
    if isinstance(exc, ssl.SSLError):
        if getattr(exc, "reason", None) in PROTOCOL_MISMATCH_REASONS:
            return Reason.TLS_PROTOCOL_MISMATCH
        return Reason.TLS_HANDSHAKE
    if isinstance(exc, socket.gaierror):
        return GAI_CODES.get(exc.errno or 0, Reason.DNS_TIMEOUT)
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)) and exc.errno is None:
        return Reason.TCP_CLOSED  # asyncio turns an EOF during a handshake into an errno-less reset
    if isinstance(exc, OSError) and exc.errno is not None:
        return ERRNO_CODES.get(exc.errno)
    if isinstance(exc, EOFError):
        return Reason.TCP_CLOSED
    return None
