"""Every finding code is declared once (severity, title, docs, builder), documented in the
README's findings table with the declared meaning, and proven end to end by a lab scenario or
waived here with the reason and the test that covers it instead."""

from __future__ import annotations

import re
from pathlib import Path

from agent.diagnose.facts import DOCS
from agent.diagnose.findings import DECLARATIONS, Code
from lab import SCENARIOS

README = Path(__file__).resolve().parents[2] / "README.md"

# Codes no lab scenario injects, each with where it is proven instead.
WAIVERS = {
    Code.DOCKER_BRIDGE_OVERLAP: "node-local: tests/probes/test_local.py reads real interfaces; "
                                "tests/unit/test_diagnose.py::test_local_findings",
    Code.INBOUND_PORT_CLOSED: "node-local: real listeners in tests/probes/test_local.py",
    Code.LOCAL_FIREWALL_BLOCKS: "node-local: real nftables rulesets in private namespaces, tests/probes/test_local.py",
    Code.UNSUPPORTED_OS: "node-local: os-release files in tests/probes/test_local.py; "
                         "tests/unit/test_diagnose.py::test_unsupported_os_on_an_attached_vm",
    Code.TLS_CERTIFICATE_INVALID: "real TLS peers with trustme certificates (name mismatch, expired, plaintext) "
                                  "in tests/probes/test_tls.py; the table in tests/unit/test_diagnose.py",
    Code.ENDPOINT_UNREACHABLE: "the catch-all for failures no other code explains: tests/unit/test_diagnose.py",
    Code.VANTAGE_MTU_ABOVE_HOST: "a vantage finding: the lab's container-mtu scenario is healthy on the host and "
                                 "raises it through --netns, tests/lab/test_vantage.py::"
                                 "test_a_container_mtu_above_the_host_s_is_found_from_the_container_alone",
    Code.DNS_NO_IPV4_ADDRESS: "the lab's DNS servers answer A-record views only (no AAAA-only names yet): "
                              "tests/unit/test_diagnose.py::test_a_name_with_only_ipv6_addresses_on_an_ipv4_node_is_a_dns_finding",
}


def readme_rows() -> dict[str, str]:
    """code -> meaning, from the README's findings table."""
    section = README.read_text("utf-8").split("\n## Findings\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.fullmatch(r"\| `([a-z0-9-]+)` \| (.+) \|", line.strip())
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_every_code_is_declared_once_with_known_docs() -> None:
    assert set(DECLARATIONS) == set(Code)
    for code, declared in DECLARATIONS.items():
        assert declared.title and declared.docs, code
        assert set(declared.docs) <= DOCS.keys(), code


def test_the_readme_documents_every_code_with_its_declared_meaning() -> None:
    rows = readme_rows()
    assert set(rows) == {c.value for c in Code}
    for code, declared in DECLARATIONS.items():
        assert rows[code.value] == declared.title, code


def test_every_code_has_a_lab_scenario_or_a_written_waiver() -> None:
    proven = {code for s in SCENARIOS.values() for code in s.expected_findings}
    assert proven <= {c.value for c in Code}  # a scenario expecting an undeclared code is a typo
    missing = {c for c in Code if c.value not in proven}
    assert missing == set(WAIVERS), "add a scenario, or a waiver saying where the code is proven"
    assert all(WAIVERS.values())
