"""The verdict of a diagnosis and the exit code profiles: nagios (the default), npd
(node-problem-detector) and simple (0/1 for scripts that only test $?)."""

from __future__ import annotations

from collections.abc import Sequence

from agent.model import Finding, Health, Result, Severity
from probes._compat import StrEnum
from probes.reasons import Reason

EXIT_CODES = {Health.OK: 0, Health.WARNING: 1, Health.CRITICAL: 2, Health.UNKNOWN: 3}
# Checks that ended without an answer about the network: the run cannot call the node healthy.
UNDECIDED = frozenset({Reason.PROBE_INTERNAL, Reason.PROBE_CANCELLED, Reason.LOCAL_RESOURCE_LIMIT})


class Profile(StrEnum):
    NAGIOS = "nagios"
    NPD = "npd"
    SIMPLE = "simple"


def verdict(findings: Sequence[Finding], results: Sequence[Result], *, signalled: bool = False) -> Health:
    """A run stopped by a signal is unknown whatever it found; otherwise a critical finding beats
    checks left unfinished at the deadline (unknown), which beat warnings."""
    if signalled:
        return Health.UNKNOWN
    worst = max((f.severity for f in findings), default=Severity.INFO)
    if worst is Severity.CRITICAL:
        return Health.CRITICAL
    if any(r.reason in UNDECIDED for r in results):
        return Health.UNKNOWN
    if worst is Severity.WARNING:
        return Health.WARNING
    return Health.OK


def exit_code(health: Health, profile: Profile = Profile.NAGIOS) -> int:
    code = EXIT_CODES[health]
    if profile is Profile.SIMPLE:
        return 0 if code in (0, 1) else 1
    if profile is Profile.NPD:
        return {0: 0, 1: 1, 2: 1}.get(code, 2)
    return code
