"""Diagnosis: results in, one Diagnosis out (diagnosis.py), from finding declarations
(findings.py), classification rules (classify.py), the facts they read (facts.py) and the verdict
and exit code profiles (verdict.py).

`diagnose` and `Facts` load on first use (PEP 562): the CLI imports the exit code profiles at
start-up, and `plan`, `rules` and `--version` never need the rules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.diagnose.diagnosis import diagnose
    from agent.diagnose.facts import Facts

__all__ = ["Facts", "diagnose"]


def __getattr__(name: str) -> Any:
    if name == "diagnose":
        from agent.diagnose.diagnosis import diagnose
        return diagnose
    if name == "Facts":
        from agent.diagnose.facts import Facts
        return Facts
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
