"""Writes the journald message catalog of aml-netcheck's MESSAGE_IDs (systemd's catalog format,
https://systemd.io/CATALOG/): one entry per finding code, so `journalctl -x` explains each entry
the daemon logs. Generated from the code's own declarations (agent/diagnose/findings.py, the
MESSAGE_ID of agent/modes/systemd.py) by make_deb.sh, so a new finding code gets its entry at the
next build. The package installs it as /usr/lib/systemd/catalog/aml-netcheck.catalog, where
systemd's dpkg trigger runs `journalctl --update-catalog`.

    python3 packaging/make_catalog.py OUTPUT      (with the agent importable: PYTHONPATH)
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.diagnose.facts import DOCS
from agent.diagnose.findings import DECLARATIONS
from agent.model import Severity
from agent.modes.systemd import message_id

SUPPORT = "https://learn.microsoft.com/azure/machine-learning/how-to-access-azureml-behind-firewall"


def _severity(declared: Severity) -> str:
    if declared is Severity.CRITICAL:  # findings.make lowers it when only situational requirements fail
        return "critical; a warning when only situational requirements fail"
    return declared.label


def catalog() -> str:
    entries = []
    for code, declared in DECLARATIONS.items():
        docs = "".join(f"Documentation: {DOCS[key]}\n" for key in declared.docs)
        entries.append(
            f"-- {message_id(code.value)}\n"
            f"Subject: aml-netcheck finding {code.value}: {declared.title}\n"
            "Defined-By: aml-netcheck\n"
            f"Support: {SUPPORT}\n"
            f"{docs}\n"
            f"Finding {code.value} ({_severity(declared.severity)}): {declared.title}.\n\n"
            "This entry is a change of state: @AML_NETCHECK_STATE@ (appeared, cleared, or a new severity), "
            "now @AML_NETCHECK_SEVERITY@, for: @AML_NETCHECK_TARGETS@\n\n"
            "The message above says why and which NSG rule, firewall rule, DNS record or setting fixes it. "
            "The whole report, with the evidence of every check, is /var/lib/aml-netcheck/report.json; "
            "`aml-netcheck rules` lists every rule this node needs.\n")
    return "\n".join(entries)


def main() -> None:
    Path(sys.argv[1]).write_text(catalog(), encoding="utf-8")


if __name__ == "__main__":
    main()
