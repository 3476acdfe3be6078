"""One diagnosis: results, context and node facts in, one Diagnosis out. Pure: no I/O, no clock.

Root-cause rules claim the results they explain first (classify.ROOT_CAUSE_RULES); every other
failing result is mapped to a finding code and a group key; results that share a code and a key
are one problem (one NSG rule, one DNS zone, one intercepting CA) and become one finding listing
every target it explains. Checks skipped because the layer below failed are never findings of
their own, and checks the proxy makes unnecessary are judged so here, once, for every output.
Findings are ranked: critical first, then the one that explains the most checks."""

from __future__ import annotations

from collections.abc import Sequence

from agent import latency
from agent.diagnose import classify
from agent.diagnose.facts import Facts
from agent.diagnose.findings import Code, identity_proxied, imds_unreadable, make
from agent.diagnose.verdict import exit_code, verdict
from agent.model import Diagnosis, Finding, Result


def diagnose(results: Sequence[Result], facts: Facts, *, signalled: bool = False) -> Diagnosis:
    slow = [r for r in results if latency.slow(r)]
    results = [latency.as_passed(r) for r in results]  # every other rule sees a slow check as the pass it is
    index = classify.Index(results)
    unneeded = classify.unneeded(results)
    considered = [r for r in results if r.check.id not in unneeded]
    problems: list[classify.Problem] = []
    for rule in classify.ROOT_CAUSE_RULES:  # a root cause claims the results it explains, first rule first
        claimed = rule(considered, index)
        problems += claimed
        taken = {p.result.check.id for p in claimed}
        considered = [r for r in considered if r.check.id not in taken]
    problems += [p for r in considered for p in classify.problems(r, index, facts)]
    groups: dict[tuple[Code, tuple[str, ...]], list[Result]] = {}
    problems = classify.with_cascades(problems)  # a slow check is nobody's cascade: it worked
    problems += [classify.latency_problem(r) for r in slow if r.check.id not in unneeded]
    for problem in problems:
        groups.setdefault((problem.code, problem.key), []).append(problem.result)
    if imds_unreadable(facts):  # detection's reading joins the IMDS check's own failures, if any
        groups.setdefault((Code.IMDS_UNAVAILABLE, ()), [])
    if facts.vantage_mtu_excess:  # a fact of the vantage: a warning until a stalled handshake shows it
        groups.setdefault((Code.VANTAGE_MTU_ABOVE_HOST, ()), [])
    if identity_proxied(facts):  # a node finding: the proxy settings, whatever the checks saw
        groups.setdefault((Code.IDENTITY_VIA_PROXY, ()), [])
    findings: list[Finding] = [make(code, group, facts) for (code, _), group in groups.items()]
    ranked = tuple(sorted(findings, key=lambda f: (-f.severity, -len(f.checks), f.code)))
    health = verdict(ranked, results, signalled=signalled)
    return Diagnosis(findings=ranked, unneeded=unneeded, health=health, exit_code=exit_code(health))
