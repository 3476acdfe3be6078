"""NO_PROXY matched as Azure ML's Python clients (requests) match it, as a table."""

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
    ("ml-x.eastus.notebooks.azure.net", 443, True),
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
])
def test_bypass_table(host: str, port: int, expected: bool) -> None:
    assert proxy.bypassed(host, port, NO_PROXY) is expected


def test_star_bypasses_everything() -> None:
    assert proxy.bypassed("anything.example", 443, ("*",))


def test_settings_prefer_the_process_environment() -> None:
    found = proxy.settings({"https_proxy": "http://u:secret@proxy:3128", "NO_PROXY": "a.b, .c.d"},
                           {"HTTPS_PROXY": "http://other:8080"})
    assert found == proxy.ProxySettings(Proxy("http", "proxy", 3128, "u:secret"), ("a.b", ".c.d"), "environment")
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
