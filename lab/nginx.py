"""A real nginx as the compute instance's front end: nginx.conf for the scenarios that have one.

nginx listens on the workspace private endpoint's address (where the compute instance names
resolve), terminates TLS with lab CA certificates for every name served there and proxies to the
lab's Python HTTP/WebSocket backend on loopback. It shares port 443 with the lab's HTTPS server
through SO_REUSEPORT: the kernel gives connections to the endpoint's address to nginx (the more
specific bind) and every other address to the lab's server, which therefore starts after nginx
accepts (before, that port would answer for nginx).

"nginx" forwards the WebSocket upgrade as nginx's documentation says to; "nginx-no-upgrade" is
the reverse proxy of many real networks that does not: Upgrade and Connection are hop-by-hop, so
without proxy_set_header they never reach the backend, which answers a plain request instead of
101 Switching Protocols.
"""

from __future__ import annotations

from pathlib import Path

from lab import addresses
from lab.names import private_names
from lab.scenarios import Scenario

BINARY = "/usr/sbin/nginx"
PACKAGE = "nginx"
USER = "www-data"
BACKEND_PORT = 8081
"""The lab's HTTPS application, served in plain HTTP on loopback behind nginx."""
_UPGRADE = (
    "proxy_http_version 1.1;",
    "proxy_set_header Upgrade $http_upgrade;",
    'proxy_set_header Connection "upgrade";',
)


def front_names(scenario: Scenario) -> list[str]:
    """The names nginx serves: every name at the workspace private endpoint."""
    return sorted(n for n, p in private_names(scenario.context).items() if p.address == addresses.PE_WORKSPACE)


def nginx_conf(scenario: Scenario, directory: Path, certificates: dict[str, Path], default: Path) -> str:
    """nginx.conf: one TLS server per name (certificates: name -> PEM with chain and key), and
    `default` for any other SNI name."""
    upgrade = _UPGRADE if scenario.websocket_front == "nginx" else ()
    location = [
        f"proxy_pass http://127.0.0.1:{BACKEND_PORT};",
        "proxy_set_header Host $host;",
        *upgrade,
        "proxy_buffering off;",
        "proxy_read_timeout 300s;",
    ]

    def server(name: str, pem: Path, *, default_server: bool = False) -> list[str]:
        listen = f"{addresses.PE_WORKSPACE}:443 ssl" + (" default_server reuseport" if default_server else "")
        return [
            "  server {",
            f"    listen {listen};",
            f"    server_name {name};",
            f"    ssl_certificate {pem};",
            f"    ssl_certificate_key {pem};",
            "    location / {",
            *(f"      {line}" for line in location),
            "    }",
            "  }",
        ]

    d = directory
    lines = [
        "daemon off;",
        "worker_processes 1;",
        f"user {USER};",
        f"pid {d / 'nginx.pid'};",
        f"error_log {d / 'error.log'} warn;",
        "events { worker_connections 256; }",
        "http {",
        f"  access_log {d / 'access.log'};",
        *(f"  {kind}_temp_path {d / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        "  server_tokens off;",
        "  server_names_hash_bucket_size 256;",  # the workspace names are long
        *server("_", default, default_server=True),
        *(line for name, pem in sorted(certificates.items()) for line in server(name, pem)),
        "}",
    ]
    return "".join(f"{line}\n" for line in lines)


def prepare(scenario: Scenario, directory: Path, certificates: dict[str, bytes], default: bytes) -> list[str]:
    """Write nginx's directory (config and certificates) and return the command that runs it."""
    directory.mkdir(mode=0o700)
    files = {}
    for i, (name, pem) in enumerate(sorted(certificates.items())):
        files[name] = directory / f"cert-{i}.pem"
        files[name].write_bytes(pem)
    (directory / "default.pem").write_bytes(default)
    conf = directory / "nginx.conf"
    conf.write_text(nginx_conf(scenario, directory, files, directory / "default.pem"))
    return [BINARY, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")]
