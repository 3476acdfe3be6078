"""Proxy credentials never reach a report, a plan or a log: the whole userinfo is redacted, the user
too, since a token is often the user part alone (http://TOKEN@proxy). One function does it for the
parsed proxy (`Proxy.shown`) and for the raw variables in the node facts (`node.redact`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli import main
from probes import node
from probes.specs import Proxy

SECRET = "s3cr3tT0ken"


@pytest.mark.parametrize(("url", "shown"), [
    (f"http://{SECRET}@proxy.contoso.net:3128", "http://***@proxy.contoso.net:3128"),
    (f"{SECRET}@proxy.contoso.net:3128", "http://***@proxy.contoso.net:3128"),
    (f"http://alice:{SECRET}@proxy.contoso.net:3128", "http://***@proxy.contoso.net:3128"),
    (f"https://{SECRET}:@proxy.contoso.net", "https://***@proxy.contoso.net:443"),
    (f"http://a%40b:{SECRET}%2F@[fd00::8]:3128", "http://***@[fd00::8]:3128"),
    (f"http://al@ice:{SECRET}@proxy.contoso.net:3128", "http://***@proxy.contoso.net:3128"),
    ("http://@proxy.contoso.net:3128", "http://***@proxy.contoso.net:3128"),
    ("http://proxy.contoso.net:3128", "http://proxy.contoso.net:3128"),
])
def test_the_whole_userinfo_is_redacted_wherever_a_proxy_is_shown(url: str, shown: str) -> None:
    proxy = Proxy.parse(url)
    assert proxy.shown == shown
    assert node.redact(proxy.url) == shown  # one function for both
    assert SECRET not in node.redact(url) and SECRET not in proxy.shown
    assert Proxy.parse(proxy.url) == proxy  # the credentials themselves are kept for the client


@pytest.mark.parametrize(("raw", "redacted"), [
    (f"http://{SECRET}@proxy.corp:3128", "http://***@proxy.corp:3128"),
    (f"{SECRET}@10.0.0.9:8080", "***@10.0.0.9:8080"),
    (f"http://alice:{SECRET}@proxy.corp:3128", "http://***@proxy.corp:3128"),
    (f"http://alice:p@ss/{SECRET}@proxy.corp:3128", "http://***@proxy.corp:3128"),  # unencoded @ and /
    (f"socks5://{SECRET}@proxy.corp:1080", "socks5://***@proxy.corp:1080"),  # no proxy we use, still a fact
    ("http://proxy.corp:3128", "http://proxy.corp:3128"),
    ("localhost,.azureml.ms", "localhost,.azureml.ms"),
])
def test_the_node_facts_redact_any_proxy_variable(raw: str, redacted: str, tmp_path: Path) -> None:
    """The node facts carry the variables as written, parsed or not (HTTP_PROXY, a socks URL)."""
    assert node.redact(raw) == redacted
    (tmp_path / "environment").write_text(f'HTTP_PROXY="{raw}"\n')
    facts = node.proxy_settings({"https_proxy": raw}, tmp_path / "environment")
    assert facts == {"environment": {"https_proxy": redacted}, "etc_environment": {"HTTP_PROXY": redacted}}


def test_plan_json_carries_no_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    for name in node.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "environment").write_text("")
    monkeypatch.setattr(node, "ETC_ENVIRONMENT", tmp_path / "environment")
    monkeypatch.setenv("HTTPS_PROXY", f"http://{SECRET}@proxy.contoso.net:3128")
    assert main(["plan", "--no-detect", "--region", "eastus", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out and SECRET.lower() not in out.lower()
    proxies = {c["params"].get("proxy") for c in json.loads(out)["checks"]} - {None}
    assert proxies == {"http://***@proxy.contoso.net:3128"}
