"""The lab's forward proxy is a real squid: its squid.conf for a scenario, and its password file.

A customer's egress proxy is most often squid, so the agent meets the answers squid really gives:
its 407 challenge, its 403 for a denied domain or for CONNECT outside SSL_ports, its 503 when it
cannot reach the target, its ssl-bump certificates. Each scenario knob maps to squid settings:

- `proxy="open"`: every destination, CONNECT to any port (a proxy whose admin opened 8787/18881);
- `proxy="auth"`: Basic authentication by squid's own basic_ncsa_auth helper (realm "contoso");
- `proxy_deny`: `dstdom_regex` ACLs answered with squid's 403 (ERR_ACCESS_DENIED);
- `proxy_connect_ports`: the stock Debian squid.conf's SSL_ports/Safe_ports rules;
- `proxy_reaches_private=False`: no squid setting; the lab's nftables reject the proxy user's
  connections to the private endpoint subnet (lab.netns), so squid's connect fails as without a
  route and it answers 503, as a hub proxy does;
- `proxy_inspects`: ssl-bump with the lab's inspection CA, mimicking the origin's certificate;
  `proxy_trusts_services=False` leaves the lab's root out of squid's own store, so it cannot
  verify the services and answers 503 ERR_SECURE_CONNECT_FAIL itself.

squid resolves the targets itself through Azure DNS in the az namespace, as a hub proxy does.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import signal
from pathlib import Path

from lab import addresses, daemons
from lab.scenarios import Scenario

BINARY = "/usr/sbin/squid"
PACKAGE = "squid-openssl"  # Debian's squid built with OpenSSL and ssl_crtd: ssl-bump needs both
HELPERS = Path("/usr/lib/squid")
USER = "proxy"
"""squid's cache_effective_user (Debian's): squid refuses to keep running as root."""
CREDENTIALS = ("aml-node", "lab-proxy-secret")
"""The user and password the proxy accepts in "auth" mode (the node's environment has none)."""
REALM = "contoso"
STOP_SIGNAL = signal.SIGKILL
"""squid takes 2 s to exit on SIGTERM even with shutdown_lifetime 0; the lab's squid keeps nothing
worth a clean exit (no cache), its helpers exit when their stdin closes, and the lab removes its
shared memory segments (leftovers)."""
_STOCK_SAFE_PORTS = ("80", "21", "443", "70", "210", "1025-65535", "280", "488", "591", "777")
"""Debian's stock squid.conf Safe_ports (http, ftp, https, gopher, wais, unregistered, ...)."""


Listen = tuple[str, int]
LAB_LISTEN: Listen = (addresses.PROXY, addresses.PROXY_PORT)


def squid_conf(scenario: Scenario, directory: Path, *, listen: Listen, dns: str, root_ca: Path | None,
               inspection_ca: tuple[Path, Path]) -> str:
    """squid.conf for the scenario; every file squid writes is under `directory`."""
    d = directory
    port = f"http_port {listen[0]}:{listen[1]}"
    lines = [
        f"pid_filename {d / 'squid.pid'}",
        f"cache_log {d / 'cache.log'}",
        f"access_log stdio:{d / 'access.log'}",
        "cache_store_log none",
        f"coredump_dir {d}",
        "cache deny all",
        "cache_mem 8 MB",
        f"dns_nameservers {dns}",
        "hosts_file none",
        "shutdown_lifetime 0 seconds",
        f"cache_effective_user {USER}",
        "visible_hostname proxy.contoso.lab",
        "pinger_enable off",
        "netdb_filename none",
        "icp_port 0",
        "htcp_port 0",
        "logfile_rotate 0",
        "connect_timeout 5 seconds",  # a dropped target: 503 within a check's timeout, not squid's minute
        "forward_max_tries 2",
    ]
    if scenario.proxy_inspects:
        cert, key = inspection_ca
        bump = f"ssl-bump tls-cert={cert} tls-key={key} generate-host-certificates=on dynamic_cert_mem_cache_size=4MB"
        lines[:0] = [
            f"{port} {bump}",
            f"sslcrtd_program {HELPERS / 'security_file_certgen'} -s {d / 'ssl_db'} -M 4MB",
            "sslcrtd_children 3 startup=1 idle=1",
            *([f"tls_outgoing_options cafile={root_ca}"] if root_ca else []),
            "acl step1 at_step SslBump1",
            "acl tls_port port 443",
            "ssl_bump splice !tls_port",  # 8787/18881 are tunnelled as they are, not bumped
            "ssl_bump peek step1",
            "ssl_bump bump all",
            "on_unsupported_protocol tunnel all",
            # squid drops Upgrade from the requests it bumps (then WebSockets fail) unless told; it
            # compares the protocol name case-sensitively, and clients send "websocket"
            "http_upgrade_request_protocols websocket allow all",
        ]
    else:
        lines.insert(0, port)
    access = []
    if scenario.proxy_connect_ports:  # the stock squid.conf's rules
        lines += [
            *(f"acl SSL_ports port {p}" for p in scenario.proxy_connect_ports),
            *(f"acl Safe_ports port {p}" for p in _STOCK_SAFE_PORTS),
            "acl CONNECT method CONNECT",
        ]
        access += ["http_access deny !Safe_ports", "http_access deny CONNECT !SSL_ports"]
    if scenario.proxy == "auth":
        lines += [
            f"auth_param basic program {HELPERS / 'basic_ncsa_auth'} {d / 'passwd'}",
            "auth_param basic children 2 startup=1 idle=1",
            f"auth_param basic realm {REALM}",
            "acl authenticated proxy_auth REQUIRED",
        ]
        access.append("http_access deny !authenticated")
    if scenario.proxy_deny:
        lines += [f"acl denied dstdom_regex -i {_regex(p)}" for p in scenario.proxy_deny]
        access.append("http_access deny denied")
    lines += [*access, "http_access allow all"]
    return "".join(f"{line}\n" for line in lines)


def _regex(pattern: str) -> str:
    """A scenario name pattern (exact or shell-style, lab.scenarios.matches) as squid's regex."""
    body = "".join(".*" if c == "*" else "." if c == "?" else f"\\{c}" if not c.isalnum() else c
                   for c in pattern.lower())
    return f"^{body}$"


def prepare(scenario: Scenario, directory: Path, *, listen: Listen = LAB_LISTEN, dns: str = addresses.AZURE_DNS,
            root_ca: Path | None = None, inspection_ca: tuple[Path, Path] | None = None) -> list[str]:
    """Write squid's directory (its config, the password file, the inspection CA squid signs
    with, all owned by squid's user: its helpers read them) and return the command that runs
    squid in the foreground. The directory's parent must let squid's user through."""
    directory.mkdir(mode=0o700)
    cert, key = directory / "inspection-ca.pem", directory / "inspection-ca.key"
    if inspection_ca is not None:
        cert.write_bytes(inspection_ca[0].read_bytes())
        key.write_bytes(inspection_ca[1].read_bytes())
    (directory / "passwd").write_text(htpasswd_line(*CREDENTIALS))
    conf = directory / "squid.conf"
    conf.write_text(squid_conf(scenario, directory, listen=listen, dns=dns, root_ca=root_ca,
                               inspection_ca=(cert, key)))
    user = pwd.getpwnam(USER)
    for path in (directory, *directory.iterdir()):
        os.chown(path, user.pw_uid, user.pw_gid)
    return [BINARY, "-N", "-n", service_name(directory), "-f", str(conf)]


async def start(scenario: Scenario, directory: Path, *, listen: Listen = LAB_LISTEN, dns: str = addresses.AZURE_DNS,
                root_ca: Path | None = None, inspection_ca: tuple[Path, Path] | None = None) -> daemons.Daemon:
    """Prepare `directory` and run squid there until it accepts on `listen` (the lab's and the
    probe tests' one way to start it)."""
    argv = prepare(scenario, directory, listen=listen, dns=dns, root_ca=root_ca, inspection_ca=inspection_ca)
    if scenario.proxy_inspects:
        await daemons.run(certificate_db(directory), user=USER)
    return await daemons.start("squid", argv, *listen, directory / "cache.log", stop_signal=STOP_SIGNAL,
                               leftovers=leftovers(directory))


def service_name(directory: Path) -> str:
    """squid's -n, which names the shared memory segments even a non-SMP squid creates in the
    host's /dev/shm: unique per squid, so that concurrent labs never share them."""
    return "lab" + hashlib.sha256(str(directory).encode()).hexdigest()[:16]


def leftovers(directory: Path) -> str:
    """What squid leaves behind when it is killed (STOP_SIGNAL): its shared memory segments."""
    return f"/dev/shm/{service_name(directory)}-*"


def certificate_db(directory: Path) -> list[str]:
    """The command that creates ssl-bump's certificate database (run as squid's user)."""
    return [str(HELPERS / "security_file_certgen"), "-c", "-s", str(directory / "ssl_db"), "-M", "4MB"]


def htpasswd_line(user: str, password: str) -> str:
    """An htpasswd line with an MD5-crypt (`$1$`) hash, which basic_ncsa_auth checks."""
    return f"{user}:{md5_crypt(password, secrets.token_hex(4))}\n"


_CRYPT64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def md5_crypt(password: str, salt: str) -> str:
    """The FreeBSD MD5-crypt hash (`$1$salt$...`) of glibc's crypt(3); the crypt module is gone
    from Python 3.13."""
    pw, s = password.encode(), salt.encode()[:8]
    alternate = hashlib.md5(pw + s + pw).digest()
    ctx = hashlib.md5(pw + b"$1$" + s)
    for i in range(len(pw), 0, -16):
        ctx.update(alternate[: min(16, i)])
    i = len(pw)
    while i:
        ctx.update(b"\0" if i & 1 else pw[:1])
        i >>= 1
    digest = ctx.digest()
    for round_ in range(1000):
        step = hashlib.md5()
        step.update(pw if round_ & 1 else digest)
        if round_ % 3:
            step.update(s)
        if round_ % 7:
            step.update(pw)
        step.update(digest if round_ & 1 else pw)
        digest = step.digest()
    out = ""
    for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)):
        value = digest[a] << 16 | digest[b] << 8 | digest[c]
        out += "".join(_CRYPT64[(value >> (6 * k)) & 63] for k in range(4))
    value = digest[11]
    out += _CRYPT64[value & 63] + _CRYPT64[value >> 6 & 63]
    return f"$1${s.decode()}${out}"

