"""NO_PROXY matched as Azure ML's Python clients (requests) match it, as a table."""

from __future__ import annotations

import pytest

from agent.inputs import proxy

NO_PROXY = ("localhost", ".privatelink.api.azureml.ms", "*.notebooks.azure.net", "api.azureml.ms",
            "10.0.0.0/16", "169.254.169.254", "example.org:8443")


@pytest.mark.parametrize("host, port, expected", [
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
    assert found == proxy.ProxySettings("http://u:secret@proxy:3128", ("a.b", ".c.d"), "environment")
    assert found.shown == "http://u:***@proxy:3128"
    from_file = proxy.settings({}, {"HTTPS_PROXY": "http://other:8080", "NO_PROXY": "x"})
    assert from_file.source == "/etc/environment" and from_file.no_proxy == ("x",)
    assert proxy.settings({}, {}).url is None
