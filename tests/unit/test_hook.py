"""Hook mode (hook.until_healthy, and diagnose_node with Limits(wait=...)) over a fake engine that
answers at once. The defect this guards: `check --wait 4 --deadline 1` ran 3.8 s, because the wait
loop never passed the run deadline on. Proven by what the engine is handed, not by wall time: every
round's deadline is no later than the earlier of the wait's end and the run deadline, less the
hook's MARGIN, and no round starts after that point."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent import engine
from agent.clock import Deadline
from agent.inputs.given import Inputs
from agent.model import Check, Result
from agent.modes import hook
from agent.runner import Limits, diagnose_node
from probes.reasons import Reason, Status

from .helpers import FakeEngine, Outcome, given_inputs, make_plan

SMB = "tcp:contosomlsa.file.core.windows.net:445"
SMB_NEGOTIATE = "smb:contosomlsa.file.core.windows.net:445"  # held back by SMB's failing connect
MCR_TCP, MCR_TLS, MCR_HTTP = "tcp:mcr.microsoft.com:443", "tls:mcr.microsoft.com:443", "http:mcr.microsoft.com:443"
FAILING = {SMB: Outcome(Reason.TCP_TIMEOUT)}
CANCELLED = Outcome(Reason.PROBE_CANCELLED, detail="not finished: run deadline reached")


@pytest.fixture
def inputs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Inputs:
    return given_inputs(monkeypatch, tmp_path)


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rounds 10 ms apart, doubling, so a deadline a few tenths of a second away sees several."""
    monkeypatch.setattr(hook, "FIRST_BACKOFF", 0.01)
    monkeypatch.setattr(hook, "LAST_ROUND", 0.01)


def never_healthy(results: Sequence[Result]) -> bool:
    return False


def no_failures(results: Sequence[Result]) -> bool:
    return not any(r.status in (Status.FAIL, Status.WARN) for r in results)


@pytest.mark.usefixtures("quick_backoff")
@pytest.mark.parametrize(("wait", "deadline"), [
    (4.0, 1.5),  # `check --wait 4 --deadline 1`, scaled down: the run deadline comes first
    (1.5, 4.0),  # the wait ends first
    (1.5, None),  # no run deadline
], ids=["deadline-first", "wait-first", "no-deadline"])
async def test_wait_rounds_never_pass_the_run_deadline(inputs: Inputs, wait: float, deadline: float | None) -> None:
    limits = Limits(timeout=5, deadline=Deadline.after(deadline), wait=Deadline.after(wait))
    end = limits.wait.earlier(limits.deadline)  # type: ignore[union-attr]
    assert end.at is not None
    stop = end.at - hook.MARGIN
    fake = FakeEngine(FAILING)
    rounds: list[int] = []
    report = await diagnose_node(inputs, limits, engine.RunState(), on_round=lambda n, _, __: rounds.append(n),
                                 run_checks=fake)
    assert len(fake.calls) >= 2  # the loop retried: every round, not just the first, is checked below
    for call in fake.calls:
        assert call.deadline.at is not None and call.deadline.at <= stop
        assert call.timeout == 5
    # what failed is retried, and what it held back
    assert [c.checks for c in fake.calls[1:]] == [(SMB, SMB_NEGOTIATE)] * (len(fake.calls) - 1)
    # every retry announced was made, except one whose pause a loaded machine overslept past the end:
    # the loop then stops (never runs past the wait), and the report is the last round's
    made = len(fake.calls) - 1
    assert rounds[:made] == list(range(1, made + 1)) and len(rounds) <= made + 1, (rounds, made)
    if len(rounds) > made:
        assert stop.remaining() is not None and stop.remaining() <= 0  # type: ignore[operator]
    assert [f.code for f in report.findings] == ["smb-blocked"] and report.status == "critical"


async def test_a_round_stops_at_the_earlier_limit_with_the_real_backoff(inputs: Inputs) -> None:
    """With the first retry a second away and the deadline nearer, there is one round only."""
    limits = Limits(timeout=5, deadline=Deadline.after(0.3), wait=Deadline.after(4))
    fake = FakeEngine(FAILING)
    report = await diagnose_node(inputs, limits, engine.RunState(), run_checks=fake)
    [call] = fake.calls
    assert call.deadline.at == limits.deadline.at - hook.MARGIN  # type: ignore[operator]
    assert report.status == "critical"


async def test_no_retry_is_announced_that_could_not_start_in_time() -> None:
    """The hook said "retrying in 0s" (on_round, which check prints), slept out the rest of the
    wait and returned without a retry: a retry that cannot start before the end is not announced."""
    fake = FakeEngine(FAILING)
    rounds: list[int] = []
    results = await hook.until_healthy(make_plan(), end=Deadline.after(0.5), healthy=never_healthy, timeout=5,
                                       concurrency=16, state=engine.RunState(), run_checks=fake,
                                       on_round=lambda n, _, __: rounds.append(n))
    assert len(fake.calls) == 1 and hook.LAST_ROUND >= 0.5 - hook.MARGIN  # too little left for a retry
    assert rounds == []
    assert results == fake.returned[0]


@pytest.mark.usefixtures("quick_backoff")
async def test_a_retry_cut_off_keeps_the_earlier_real_result() -> None:
    checks = make_plan()
    fake = FakeEngine({SMB: Outcome(Reason.TCP_TIMEOUT), MCR_TCP: CANCELLED}, {SMB: CANCELLED, MCR_TCP: CANCELLED})
    state = engine.RunState()
    results = await hook.until_healthy(checks, end=Deadline.after(1.0), healthy=never_healthy, timeout=5,
                                       concurrency=16, state=state, run_checks=fake)
    assert len(fake.calls) >= 2
    first = {r.check.id: r for r in fake.returned[0]}
    by_id = {r.check.id: r for r in results}
    assert by_id[SMB] is first[SMB] and by_id[SMB].reason is Reason.TCP_TIMEOUT  # not the later probe.cancelled
    assert by_id[MCR_TCP].reason is Reason.PROBE_CANCELLED  # cancelled from the start: nothing better known
    # failing, cancelled, held back
    assert set(fake.calls[1].checks) == {SMB, SMB_NEGOTIATE, MCR_TCP, MCR_TLS, MCR_HTTP}
    assert set(fake.calls[1].known) == {c.id for c in checks}  # the retry sees every earlier result
    assert [r.check.id for r in results] == [c.id for c in checks]


@pytest.mark.usefixtures("quick_backoff")
async def test_a_cut_off_retry_does_not_turn_the_verdict_unknown(inputs: Inputs) -> None:
    limits = Limits(timeout=5, deadline=Deadline.after(1.0), wait=Deadline.after(4))
    fake = FakeEngine(FAILING, {SMB: CANCELLED})
    report = await diagnose_node(inputs, limits, engine.RunState(), run_checks=fake)
    assert len(fake.calls) >= 2
    smb = next(r for r in report.results if r.check.id == SMB)
    assert smb.reason is Reason.TCP_TIMEOUT
    assert [f.code for f in report.findings] == ["smb-blocked"] and report.status == "critical"


@pytest.mark.usefixtures("quick_backoff")
async def test_healthy_after_a_round_stops_the_loop() -> None:
    checks = make_plan()
    fake = FakeEngine({MCR_TCP: Outcome(Reason.TCP_TIMEOUT)}, {})  # the firewall change lands after round 1
    rounds: list[tuple[int, float]] = []
    results = await hook.until_healthy(checks, end=Deadline.after(30), healthy=no_failures, timeout=5,
                                       concurrency=16, state=engine.RunState(), run_checks=fake,
                                       on_round=lambda n, _, pause: rounds.append((n, pause)))
    assert len(fake.calls) == 2  # no third round although the wait has half a minute left
    assert rounds == [(1, 0.01)]
    assert set(fake.calls[1].checks) == {MCR_TCP, MCR_TLS, MCR_HTTP}
    assert no_failures(results) and all(r.status is Status.PASS for r in results if r.check.id == MCR_HTTP)


async def test_healthy_at_once_is_one_round(inputs: Inputs) -> None:
    fake = FakeEngine()
    limits = Limits(timeout=5, deadline=Deadline.after(30), wait=Deadline.after(30))
    report = await diagnose_node(inputs, limits, engine.RunState(), run_checks=fake)
    assert len(fake.calls) == 1 and report.status == "ok"


async def test_a_signal_during_the_backoff_keeps_the_first_rounds_results(inputs: Inputs) -> None:
    fake = FakeEngine(FAILING)
    state = engine.RunState()
    waiting = asyncio.Event()
    limits = Limits(timeout=5, deadline=Deadline.after(30), wait=Deadline.after(30))
    task = asyncio.create_task(diagnose_node(inputs, limits, state, on_round=lambda *_: waiting.set(),
                                             run_checks=fake))
    await waiting.wait()  # round 1 is over; the hook sleeps FIRST_BACKOFF before the retry
    state.interrupted = "stopped by SIGTERM"
    task.cancel()
    report = await task
    assert len(fake.calls) == 1
    assert (report.status, report.exit_code, report.interrupted) == ("unknown", 3, "stopped by SIGTERM")
    assert report.results == fake.returned[0]
    assert [f.code for f in report.findings] == ["smb-blocked"]


def test_check_ids_in_this_file_are_planned() -> None:
    """The ids above are real checks of the plan, or the tests would test nothing."""
    planned: set[str] = {c.id for c in make_plan()}
    assert {SMB, SMB_NEGOTIATE, MCR_TCP, MCR_TLS, MCR_HTTP} <= planned
    assert all(isinstance(c, Check) for c in make_plan())


async def test_the_last_retry_is_brought_forward_to_fit_before_the_end() -> None:
    """A backoff longer than what is left does not waste the wait's last seconds: the retry comes
    early enough to run (a port opened late answers in milliseconds), announced with that pause."""
    fake = FakeEngine(FAILING)
    pauses: list[float] = []
    await hook.until_healthy(make_plan(), end=Deadline.after(1.2), healthy=never_healthy, timeout=5,
                             concurrency=16, state=engine.RunState(), run_checks=fake,
                             on_round=lambda _, __, pause: pauses.append(pause))
    assert len(fake.calls) == 2 and len(pauses) == 1
    assert pauses[0] < hook.FIRST_BACKOFF  # brought forward: 1.2 s - MARGIN - LAST_ROUND left for it
