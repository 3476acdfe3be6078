"""runner.diagnose_node with given inputs only (detection off: nothing is read from IMDS) and a fake
engine (helpers.FakeEngine in place of engine.run): what the Report carries, results reused from an
earlier round, a run stopped by a signal, and the deadline the engine is handed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent import catalog, engine
from agent.clock import Deadline
from agent.diagnose import Facts, diagnose
from agent.inputs.given import Inputs
from agent.model import Check, ContextValue, Result
from agent.runner import Limits, diagnose_node
from probes.reasons import Reason, Status

from .helpers import FakeEngine, Outcome, given_inputs, simulate

SMB = "tcp:contosomlsa.file.core.windows.net:445"
MCR_DNS, MCR_TCP, MCR_TLS, MCR_HTTP = ("dns:mcr.microsoft.com", "tcp:mcr.microsoft.com:443",
                                       "tls:mcr.microsoft.com:443", "http:mcr.microsoft.com:443")


@pytest.fixture
def inputs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Inputs:
    return given_inputs(monkeypatch, tmp_path)


def planned(inputs: Inputs) -> tuple[Check, ...]:
    return inputs.plan(inputs.context())[1]


async def test_the_report_carries_diagnosis_catalog_and_context(inputs: Inputs) -> None:
    fake = FakeEngine({SMB: Outcome(Reason.TCP_TIMEOUT)})
    state = engine.RunState()
    seen: list[Result] = []
    plans: list[tuple[str, ...]] = []
    report = await diagnose_node(inputs, Limits(timeout=5), state, on_result=seen.append,
                                 on_plan=lambda planned: plans.append(tuple(c.id for c in planned)),
                                 run_checks=fake)
    checks = planned(inputs)
    assert [call.checks for call in fake.calls] == [tuple(c.id for c in checks)]
    assert plans == [tuple(c.id for c in checks)]
    assert [r.check.id for r in report.results] == [c.id for c in checks]
    assert report.results == fake.returned[0]
    assert seen == list(report.results) and state.results == {r.check.id: r for r in report.results}
    assert report.context == inputs.context()
    assert report.context["region"] == ContextValue("eastus", "option")
    assert report.context["cloud"] == ContextValue("public", "default")
    assert report.catalog == catalog.load() and report.catalog_version == catalog.load().version
    assert "detection" not in report.node and isinstance(report.node["hostname"], str)
    assert report.diagnosis == diagnose(report.results, Facts(report.catalog, report.context, report.node))
    assert [f.code for f in report.findings] == ["smb-blocked"] and report.findings[0].checks == (SMB,)
    assert (report.status, report.exit_code, report.interrupted) == ("critical", 2, None)


async def test_reused_results_are_not_probed_again_and_count_as_given(inputs: Inputs) -> None:
    checks = planned(inputs)
    earlier = {r.check.id: r for r in simulate(checks, {SMB: Outcome(Reason.TCP_TIMEOUT)})}
    reuse = {SMB: earlier[SMB], MCR_DNS: earlier[MCR_DNS]}
    fake = FakeEngine()  # everything probed now passes
    plans: list[tuple[str, ...]] = []
    report = await diagnose_node(inputs, Limits(timeout=5), engine.RunState(), reuse=reuse, run_checks=fake,
                                 on_plan=lambda planned: plans.append(tuple(c.id for c in planned)))
    [call] = fake.calls
    assert call.checks == tuple(c.id for c in checks if c.id not in reuse)
    assert call.known == reuse and MCR_TCP in call.checks  # its dependency is known, not probed
    assert plans == [call.checks]
    by_id = {r.check.id: r for r in report.results}
    assert by_id[SMB] is reuse[SMB] and by_id[MCR_DNS] is reuse[MCR_DNS]
    assert [r.check.id for r in report.results] == [c.id for c in checks]
    assert [(f.code, f.checks) for f in report.findings] == [("smb-blocked", (SMB,))]
    assert report.failing(by_id[SMB]) and report.status == "critical"


async def test_a_signal_gives_a_partial_report_with_the_finished_results(inputs: Inputs) -> None:
    fake = FakeEngine({SMB: Outcome(Reason.TCP_TIMEOUT)}, hang={MCR_TLS})
    state = engine.RunState()
    task = asyncio.create_task(diagnose_node(inputs, Limits(timeout=5), state, run_checks=fake))
    await fake.hanging.wait()
    state.interrupted = "stopped by SIGTERM"  # what check's signal handler does, before it cancels
    task.cancel()
    report = await task
    assert (report.status, report.exit_code, report.interrupted) == ("unknown", 3, "stopped by SIGTERM")
    by_id = {r.check.id: r for r in report.results}
    assert [r.check.id for r in report.results] == [c.id for c in planned(inputs)]
    for check_id in (MCR_TLS, MCR_HTTP):
        assert (by_id[check_id].reason, by_id[check_id].detail) == (Reason.PROBE_CANCELLED,
                                                                    "not finished: stopped by SIGTERM")
    finished = {r.check.id for r in report.results if r.reason is not Reason.PROBE_CANCELLED}
    assert finished == set(by_id) - {MCR_TLS, MCR_HTTP}
    assert all(by_id[i] is state.results[i] for i in finished)
    assert by_id[SMB].reason is Reason.TCP_TIMEOUT and by_id[MCR_TCP].status is Status.PASS
    assert [f.code for f in report.findings] == ["smb-blocked"]  # what finished is still diagnosed


async def test_a_cancel_without_a_reason_is_not_swallowed(inputs: Inputs) -> None:
    fake = FakeEngine(hang={MCR_TLS})
    task = asyncio.create_task(diagnose_node(inputs, Limits(timeout=5), engine.RunState(), run_checks=fake))
    await fake.hanging.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("deadline", [Deadline.after(30), Deadline(), Deadline.from_process_start(600)],
                         ids=["after", "none", "from-process-start"])
async def test_the_run_deadline_is_handed_to_the_engine_unchanged(inputs: Inputs, deadline: Deadline) -> None:
    fake = FakeEngine()
    limits = Limits(timeout=2.5, deadline=deadline, concurrency=7)
    report = await diagnose_node(inputs, limits, engine.RunState(), run_checks=fake)
    [call] = fake.calls
    assert call.deadline is limits.deadline
    assert (call.timeout, call.concurrency) == (2.5, 7)
    assert report.status == "ok" and report.interrupted is None


def connected(rtt_ms: float) -> Outcome:
    return Outcome(evidence={"attempts": [{"address": "198.18.0.10", "outcome": "connected", "elapsed_ms": rtt_ms,
                                           "rtt_ms": rtt_ms}]})


@pytest.mark.parametrize(("again", "status", "figure"), [
    (connected(2.0), Status.PASS, None),  # a busy moment: fast when measured again
    (connected(650.0), Status.WARN, 650.0),  # slow twice: the faster figure stands
    (connected(990.0), Status.WARN, 900.0),
    (Outcome(Reason.TCP_TIMEOUT), Status.WARN, 900.0),  # a second attempt that failed never makes a failure
], ids=["fast-again", "slow-again", "slower-again", "failed-again"])
async def test_a_slow_check_is_measured_again_and_the_faster_figure_stands(
        inputs: Inputs, again: Outcome, status: Status, figure: float | None) -> None:
    fake = FakeEngine({MCR_TCP: connected(900.0)}, {MCR_TCP: again})
    report = await diagnose_node(inputs, Limits(timeout=5), engine.RunState(), run_checks=fake)
    assert [call.checks for call in fake.calls][1] == (MCR_TCP,)  # only the slow check, its layer below known
    assert MCR_DNS in fake.calls[1].known
    result = next(r for r in report.results if r.check.id == MCR_TCP)
    assert result.status is status
    if figure is None:
        assert result.reason is None and report.findings == ()
    else:
        assert result.reason is Reason.LATENCY_SLOW and result.evidence["latency"]["ms"] == figure  # type: ignore[index]
        assert [f.code for f in report.findings] == ["latency-degraded"] and report.exit_code == 1


async def test_nothing_slow_is_measured_once(inputs: Inputs) -> None:
    fake = FakeEngine({MCR_TCP: connected(12.0)})
    report = await diagnose_node(inputs, Limits(timeout=5), engine.RunState(), run_checks=fake)
    assert len(fake.calls) == 1 and report.exit_code == 0
