"""NO_PROXY matched as Azure ML's Python clients (requests) match it, as a table (the differential test
against requests itself is test_no_proxy_differential.py)."""

from __future__ import annotations

import pytest

from agent import planner
from agent.inputs import proxy
from probes.specs import HttpSpec, Proxy, WebSocketSpec

from .helpers import make_plan

NO_PROXY = ("localhost", ".privatelink.api.azureml.ms", "*.notebooks.azure.net", "api.azureml.ms",
            "10.0.0.0/16", "169.254.169.254", "example.org:8443")


@pytest.mark.parametrize(("host", "port", "expected"), [
    ("localhost", 443, True),
    ("ws.workspace.eastus.privatelink.api.azureml.ms", 443, True),
    ("privatelink.api.azureml.ms", 443, True),
    # requests has no wildcards: `*.notebooks.azure.net` matches nothing, so the notebooks go through the
    # proxy (this row said True, and the agent planned no proxied check where the SDK got 502 from the proxy).
    ("ml-x.eastus.notebooks.azure.net", 443, False),
    ("notebooks.azure.net", 443, False),
    ("guid.workspace.eastus.api.azureml.ms", 443, True),
    ("api.azureml.ms", 443, True),
    ("xapi.azureml.ms", 443, False),
    ("eastus.batch.azure.com", 443, False),
    ("10.0.1.5", 443, True),
    ("10.1.0.5", 443, False),
    ("169.254.169.254", 80, True),
    ("example.org", 8443, True),
    ("example.org", 443, False),
    ("MANAGEMENT.AZURE.COM", 443, False),
    ("LOCALHOST", 443, True),
    ("localhost.", 443, False),  # a trailing dot is another name to requests
    ("example.org", None, False),  # https://example.org/ writes no port: `example.org:8443` is not it
    ("10.0.1.5", None, True),
])
def test_bypass_table(host: str, port: int | None, expected: bool) -> None:
    assert proxy.bypassed(host, port, NO_PROXY) is expected


def test_star_bypasses_everything() -> None:
    assert proxy.bypassed("anything.example", 443, ("*",))


@pytest.mark.parametrize(("raw", "entries"), [
    ("*", ("*",)),
    ("*, a.com", ("a.com",)),  # `*` among other entries matches nothing (urllib compares the whole value)
    (" *", ()),
    ("a.com b.com", ("a.com b.com",)),  # requests reads `a.comb.com`, urllib `a.com b.com`: kept as written
    (" .A.com ,, b.com:443, ", (".A.com", "b.com:443")),  # the case is kept: requests compares `name:port` as written
    ("\tb.com", ("\tb.com",)),  # requests keeps the tab (and matches nothing), urllib strips it
    ("", ()),
])
def test_no_proxy_entries(raw: str, entries: tuple[str, ...]) -> None:
    assert proxy.no_proxy_entries(raw) == entries


@pytest.mark.parametrize(("host", "port", "no_proxy", "expected"), [
    ("10.0.0.1", None, "0.1", True),  # urllib matches IPv4 hosts by suffix too
    ("10.0.0.1", 443, "10.0.0.1:443", False),  # requests never reads a port for an IPv4 host
    ("fd00::5", None, "fd00::/8", False),  # no IPv6 blocks
    ("fd00::5", None, "FD00::5", True),
    ("example.org", 8443, "Example.org:8443", False),  # `name:port` is compared as written
    ("b.com", None, "a.com b.com", False),
    ("a.comb.com", None, "a.com b.com", True),
    ("a.com", None, "*,a.com", True),
    ("b.com", None, "*,a.com", False),
])
def test_quirks_of_requests(host: str, port: int | None, no_proxy: str, expected: bool) -> None:
    assert proxy.bypassed(host, port, proxy.no_proxy_entries(no_proxy)) is expected


def test_settings_prefer_the_process_environment() -> None:
    found = proxy.settings({"https_proxy": "http://u:secret@proxy:3128", "NO_PROXY": "a.b, .c.d"},
                           {"HTTPS_PROXY": "http://other:8080"})
    assert found == proxy.ProxySettings(Proxy("http", "proxy", 3128, "u:secret"), ("a.b", ".c.d"), "environment",
                                        no_proxy_text="a.b, .c.d")
    assert found.proxy is not None and found.proxy.shown == "http://***@proxy:3128"
    from_file = proxy.settings({}, {"HTTPS_PROXY": "http://other:8080", "NO_PROXY": "x"})
    assert from_file.source == "/etc/environment" and from_file.no_proxy == ("x",)
    assert proxy.settings({}, {}).proxy is None


@pytest.mark.parametrize(("url", "host", "port"), [
    ("http://proxy.contoso.net", "proxy.contoso.net", 80),  # the scheme's port, as requests and aiohttp use it
    ("proxy.contoso.net:3128", "proxy.contoso.net", 3128),  # no scheme: http://
    ("https://proxy.contoso.net", "proxy.contoso.net", 443),
    ("http://[fd00::8]:3128", "fd00::8", 3128),
])
def test_one_parser_gives_every_client_the_same_proxy(url: str, host: str, port: int) -> None:
    """The planner's check of the proxy and the http and websocket probes dial what this returns."""
    parsed = Proxy.parse(url)
    assert (parsed.host, parsed.port) == (host, port)
    assert Proxy.parse(parsed.url) == parsed


def test_the_planned_proxy_path_and_the_probes_agree_on_the_port() -> None:
    """HTTPS_PROXY=http://host: the TCP check of the proxy and the WebSocket tunnel once disagreed
    (80 and 8080), so TCP passed while every WebSocket check said proxy-unreachable."""
    settings = proxy.settings({"HTTPS_PROXY": "http://proxy.contoso.net"}, {})
    checks = make_plan(options=planner.PlanOptions(proxy=settings.proxy))
    to_proxy = [c for c in checks if c.path == "to-proxy" and c.layer == "tcp"]
    through = [c for c in checks if c.path == "proxy"]
    assert [c.id for c in to_proxy] == ["tcp:proxy.contoso.net:80"]
    assert through and {c.spec.proxy for c in through if isinstance(c.spec, (HttpSpec, WebSocketSpec))} \
        == {Proxy("http", "proxy.contoso.net", 80)}
    assert any(isinstance(c.spec, WebSocketSpec) for c in through)


@pytest.mark.parametrize("url", ["socks5://proxy:1080", "http://:3128", "http://proxy:99999"])
def test_an_unusable_proxy_url_is_one_line_naming_where_it_came_from(url: str) -> None:
    with pytest.raises(proxy.ProxyError, match=r"^HTTPS_PROXY \(from environment\): "):
        proxy.settings({"HTTPS_PROXY": url}, {})


def test_plain_http_goes_through_http_proxy_as_the_clients_send_it() -> None:
    """On a proxy-only network plain HTTP (Entra ID on 80) ignored HTTP_PROXY: its direct path
    failed and the run was a false critical egress-blocked."""
    settings = proxy.settings({"HTTPS_PROXY": "http://proxy.contoso.net:3128",
                               "http_proxy": "http://plain.contoso.net:8080"}, {})
    assert settings.http_proxy == Proxy("http", "plain.contoso.net", 8080)
    checks = {c.id: c for c in make_plan(options=planner.PlanOptions(
        proxy=settings.proxy, http_proxy=settings.http_proxy, no_proxy=settings.no_proxy))}
    through = checks["http:login.microsoftonline.com:80@proxy"]
    assert isinstance(through.spec, HttpSpec) and through.spec.url == "http://login.microsoftonline.com/"
    assert through.spec.proxy == settings.http_proxy and through.needs == "tcp:plain.contoso.net:8080"
    assert checks["http:login.microsoftonline.com:443@proxy"].spec.proxy == settings.proxy  # type: ignore[union-attr]
    assert "udp:eastus.tundra.azureml.ms:5831@proxy" not in checks  # raw UDP never goes through a proxy


def test_http_proxy_alone_still_gives_its_settings() -> None:
    settings = proxy.settings({}, {"HTTP_PROXY": "http://plain.contoso.net:8080", "NO_PROXY": "x"})
    assert (settings.proxy, settings.http_proxy, settings.source) == (
        None, Proxy("http", "plain.contoso.net", 8080), "/etc/environment")


def test_a_name_port_entry_matches_only_a_port_the_url_writes() -> None:
    """https://name/ writes no port: requests sends it through the proxy even with NO_PROXY=name:443."""
    checks = {c.id for c in make_plan(options=planner.PlanOptions(
        proxy=Proxy.parse("http://proxy.contoso.net:3128"), no_proxy=("management.azure.com:443",)))}
    assert "http:management.azure.com:443@proxy" in checks
