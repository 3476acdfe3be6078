"""node facts: parsing of files written in tmp_path, redaction, and the shape of collect()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probes import node

pytest_plugins = ["probe_peers"]


@pytest.mark.parametrize(("resolv", "upstream", "expected"), [
    ("nameserver 168.63.129.16\n", None, ("168.63.129.16",)),
    ("# managed\nnameserver 10.0.0.4\nnameserver 10.0.0.5\noptions edns0\n", None, ("10.0.0.4", "10.0.0.5")),
    ("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch reddog.microsoft.com\n",
     "nameserver 168.63.129.16\nnameserver fd00::53\n", ("127.0.0.53", "168.63.129.16", "fd00::53")),
    ("nameserver 127.0.0.53\n", None, ("127.0.0.53",)),  # stub without its upstream file
    (None, None, ()),
], ids=["azure-dns", "custom-dns", "resolved-stub", "stub-only", "missing"])
def test_resolvers(resolv: str | None, upstream: str | None, expected: tuple[str, ...], tmp_path: Path) -> None:
    if resolv is not None:
        (tmp_path / "resolv.conf").write_text(resolv)
    if upstream is not None:
        (tmp_path / "upstream.conf").write_text(upstream)
    assert node.resolvers(tmp_path / "resolv.conf", tmp_path / "upstream.conf") == expected


def test_search_domains(tmp_path: Path) -> None:
    (tmp_path / "resolv.conf").write_text("domain old.internal\nsearch a.internal b.internal\n")
    assert node.search_domains(tmp_path / "resolv.conf") == ("a.internal", "b.internal")


@pytest.mark.parametrize(("url", "redacted"), [
    ("http://alice:s3cret@proxy.corp:3128", "http://***@proxy.corp:3128"),
    ("alice:p@ss@10.0.0.9:8080", "***@10.0.0.9:8080"),
    ("http://proxy.corp:3128", "http://proxy.corp:3128"),
    ("http://token@proxy.corp:3128", "http://***@proxy.corp:3128"),
    ("https://u:p@proxy.corp/path@x", "https://***@x"),
])
def test_redact(url: str, redacted: str) -> None:
    assert node.redact(url) == redacted


def test_proxy_settings(tmp_path: Path) -> None:
    (tmp_path / "environment").write_text(
        'PATH="/usr/bin"\nhttps_proxy="http://svc:pw@10.0.0.9:3128"\nexport NO_PROXY=.azureml.ms\n')
    environ = {"HTTPS_PROXY": "http://alice:s3cret@proxy.corp:3128", "no_proxy": "localhost", "HOME": "/root"}
    assert node.proxy_settings(environ, tmp_path / "environment") == {
        "environment": {"HTTPS_PROXY": "http://***@proxy.corp:3128", "no_proxy": "localhost"},
        "etc_environment": {"https_proxy": "http://***@10.0.0.9:3128", "NO_PROXY": ".azureml.ms"},
    }


def test_collect(tmp_path: Path) -> None:
    (tmp_path / "resolv.conf").write_text("nameserver 168.63.129.16\nsearch x.internal.cloudapp.net\n")
    (tmp_path / "net").mkdir()
    (tmp_path / "net/route").write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        "eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n")
    (tmp_path / "net/ipv6_route").write_text(
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n"
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n")
    facts = node.collect(tmp_path / "resolv.conf", tmp_path / "none.conf", proc=tmp_path)
    json.dumps(facts)  # JSON-able as it stands
    assert set(facts) == {"hostname", "interfaces", "default_routes", "resolvers", "search_domains",
                          "proxy", "listening"}
    assert facts["resolvers"] == ["168.63.129.16"]
    assert facts["search_domains"] == ["x.internal.cloudapp.net"]
    assert facts["default_routes"] == [
        {"family": "ipv4", "interface": "eth0", "gateway": "10.0.0.1", "metric": 100},
        {"family": "ipv6", "interface": "eth0", "gateway": "fe80::1", "metric": 1024},
    ]
    lo = next(i for i in facts["interfaces"] if i["name"] == "lo")  # type: ignore[union-attr,index]
    assert lo["up"] is True and "127.0.0.1/8" in lo["addresses"]  # type: ignore[index,operator]
    assert isinstance(facts["listening"]["tcp"], list)  # type: ignore[index]


def test_collect_on_this_node_never_raises() -> None:
    assert isinstance(node.collect()["hostname"], str)
