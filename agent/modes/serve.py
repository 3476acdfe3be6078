"""`aml-netcheck serve`: the systemd health check. Diagnoses the node every interval, tells
systemd it is alive (the watchdog proves the loop runs, never that the network works), logs only
changes of state, keeps the last report and metrics on disk, and optionally answers /healthz and
/metrics on loopback.

It does not cry wolf: a new or worse finding is confirmed by probing the failing checks once more
before it is announced, a finding is cleared only once it has passed on CLEAR_ROUNDS rounds in a
row (so a flapping path is one finding, not an entry every round), and checks that keep failing
are re-probed less often (their last result stands in between), so a long outage neither floods
the journal nor hammers the network."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from aiohttp import web

from agent import engine, runner
from agent.clock import Deadline
from agent.inputs.given import Inputs
from agent.latency import slow
from agent.model import Finding, Report, Result, Severity
from agent.modes.systemd import Journal, Notifier, message_id
from agent.output import prometheus as metrics
from agent.output import status
from agent.output.files import write_atomic
from agent.output.jsonreport import to_json
from probes import _compat
from probes.reasons import Status

CONFIRM_PAUSE = 2.0  # seconds before re-probing what just started failing
CLEAR_ROUNDS = 2  # a finding clears once it has passed on this many rounds in a row
MAX_BACKOFF_ROUNDS = 8  # a check failing for long is re-probed at least every 8 rounds
_PRIORITY = {Severity.CRITICAL: 3, Severity.WARNING: 4, Severity.INFO: 6}
CLEARED_PRIORITY = 5
DAEMON_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # the daemon's own while it runs: stop, stop, reload


class ServeError(RuntimeError):
    """The daemon cannot start (its listen address is taken); one line."""


@dataclass(frozen=True, slots=True)
class Settings:
    interval: float
    state: Path
    textfile: Path | None = None
    listen: tuple[str, int] | None = None
    round_deadline: float | None = None  # seconds one round may take: the config's deadline, else the interval


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # appeared | cleared | changed
    finding: Finding


def merged(findings: Sequence[Finding]) -> dict[str, Finding]:
    """One finding per code (several groups of one code are one state): the worst severity and
    every target, so a second blocked service tag is not a new problem appearing."""
    by_code: dict[str, Finding] = {}
    for finding in findings:
        seen = by_code.get(finding.code)
        if seen is None:
            by_code[finding.code] = finding
        else:
            by_code[finding.code] = Finding(
                code=seen.code, severity=max(seen.severity, finding.severity), summary=seen.summary,
                cause=seen.cause, remedy=seen.remedy, targets=tuple(dict.fromkeys(seen.targets + finding.targets)),
                checks=tuple(dict.fromkeys(seen.checks + finding.checks)), docs=seen.docs, path=seen.path)
    return by_code


def changes(before: Mapping[str, Finding], after: Mapping[str, Finding]) -> list[Change]:
    """What is worth a journal entry: a finding that appears, clears, or changes severity."""
    found = [Change("appeared", f) for code, f in after.items() if code not in before]
    found += [Change("changed", f) for code, f in after.items()
              if code in before and before[code].severity != f.severity]
    found += [Change("cleared", f) for code, f in before.items() if code not in after]
    return found


@dataclass(slots=True)
class Announced:
    """What the journal has been told: the findings standing, and for each the rounds in a row it has
    been absent. A finding that is back before CLEAR_ROUNDS such rounds never cleared: a path that
    flaps logs when it first fails and when it has stayed healthy, not every round (the other half
    of confirming a finding before it is announced)."""

    findings: dict[str, Finding] = field(default_factory=dict)
    absent: dict[str, int] = field(default_factory=dict)

    def step(self, current: Mapping[str, Finding]) -> list[Change]:
        """This round's findings (merged) in; the changes to log out."""
        found = [c for c in changes(self.findings, current) if c.kind != "cleared"]
        for code in current:
            self.absent.pop(code, None)
        for code in [code for code in self.findings if code not in current]:
            self.absent[code] = self.absent.get(code, 0) + 1
            if self.absent[code] >= CLEAR_ROUNDS:
                found.append(Change("cleared", self.findings.pop(code)))
                del self.absent[code]
        self.findings.update(current)
        return found


@dataclass(slots=True)
class Backoff:
    """Consecutive failures per check; a check failing n rounds in a row is skipped for up to
    2**(n-2) rounds (at most MAX_BACKOFF_ROUNDS), reusing its last result meanwhile."""

    failures: dict[str, int] = field(default_factory=dict)
    resume: dict[str, int] = field(default_factory=dict)

    def reuse(self, round_number: int, last: Mapping[str, Result]) -> dict[str, Result]:
        return {cid: last[cid] for cid, at in self.resume.items() if at > round_number and cid in last}

    def update(self, round_number: int, results: Sequence[Result]) -> None:
        for result in results:
            cid = result.check.id
            if result.status is not Status.FAIL:
                self.failures.pop(cid, None)
                self.resume.pop(cid, None)
            elif self.resume.get(cid, 0) <= round_number:  # it was probed this round and failed
                count = self.failures[cid] = self.failures.get(cid, 0) + 1
                if count >= 2:
                    self.resume[cid] = round_number + 1 + min(2 ** (count - 2), MAX_BACKOFF_ROUNDS)


class Daemon:
    def __init__(self, load: Callable[[], Inputs], limits: runner.Limits, settings: Settings,
                 notifier: Notifier, journal: Journal) -> None:
        self._load = load
        self._inputs = load()
        self._limits = limits
        self._settings = settings
        self._notifier = notifier
        self._journal = journal
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._reload = False
        self.report: Report | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in DAEMON_SIGNALS:
            loop.add_signal_handler(sig, self._ask_reload if sig is signal.SIGHUP else self._stop_now)
        watchdog = asyncio.create_task(self._watchdog())
        site: web.AppRunner | None = None
        announced = Announced()
        backoff = Backoff()
        last: dict[str, Result] = {}
        round_number = 0
        try:
            if self._settings.listen:
                site = await self._http()
            while not self._stop.is_set():
                round_number += 1
                if self._reload:
                    self._reload_config()
                report = await self._diagnose(backoff.reuse(round_number, last))
                if report is None:
                    break
                current = merged(report.findings)
                if any(c.kind != "cleared" and c.finding.severity >= Severity.WARNING
                       for c in changes(announced.findings, current)):
                    report = await self._confirm(report) or report
                    current = merged(report.findings)
                self.report = report
                self._persist(report)
                for change in announced.step(current):
                    self._announce(change)
                last = {r.check.id: r for r in report.results}
                backoff.update(round_number, report.results)
                self._notifier.send(**({"ready": "1"} if round_number == 1 else {}), status=status.summary(report))
                await self._sleep(self._settings.interval)
        finally:
            self._notifier.send(stopping="1")
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
            if site is not None:
                await site.cleanup()
            # The daemon is stopping and the process ends with it: a stop (or a reload) that comes now,
            # systemd's repeated SIGTERM or a second Ctrl-C, is the same stop. Blocked, not handed back:
            # the default action would end the process by the signal, and the start-up handler with 3.
            # The process exits with them blocked (agent/__main__.py).
            signal.pthread_sigmask(signal.SIG_BLOCK, DAEMON_SIGNALS)
            for sig in DAEMON_SIGNALS:
                loop.remove_signal_handler(sig)
        return 0

    async def _diagnose(self, reuse: Mapping[str, Result]) -> Report | None:
        """One round, or None when a stop request cut it short (nothing half-done is kept)."""
        state = engine.RunState()
        limits = replace(self._limits, deadline=Deadline.after(self._settings.round_deadline))
        task = asyncio.create_task(runner.diagnose_node(self._inputs, limits, state, reuse=reuse))
        stop = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task in done:
            return task.result()
        state.interrupted = "stopped"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None

    async def _confirm(self, report: Report) -> Report | None:
        """Probe the failing (and the slow) checks once more before announcing: one lost packet is not an
        outage, one slow answer no degraded path."""
        await self._sleep(CONFIRM_PAUSE)
        passing = {r.check.id: r for r in report.results if r.status is not Status.FAIL and not slow(r)}
        return None if self._stop.is_set() else await self._diagnose(passing)

    def _persist(self, report: Report) -> None:
        try:
            write_atomic(self._settings.state, to_json(report))
            if self._settings.textfile is not None:
                write_atomic(self._settings.textfile, metrics.render_prometheus(report))
        except OSError as exc:
            self._journal.send(f"aml-netcheck: cannot write the report: {exc}", 3)

    def _announce(self, change: Change) -> None:
        finding = change.finding
        if change.kind == "cleared":
            text, priority = f"problem cleared: [{finding.code}] {finding.summary}", CLEARED_PRIORITY
        else:
            verb = "found" if change.kind == "appeared" else f"now {finding.severity.label}"
            text = f"problem {verb}: [{finding.code}] {finding.summary}. Fix: {finding.remedy}"
            priority = _PRIORITY[finding.severity]
        self._journal.send(text, priority, MESSAGE_ID=message_id(finding.code), AML_NETCHECK_CODE=finding.code,
                           AML_NETCHECK_STATE=change.kind, AML_NETCHECK_SEVERITY=finding.severity.label,
                           AML_NETCHECK_TARGETS=" ".join(finding.targets))

    def _reload_config(self) -> None:
        self._reload = False
        try:
            self._inputs = self._load()
        except Exception as exc:  # a bad new config keeps the old one running, and says why
            self._journal.send(f"aml-netcheck: config reload failed, keeping the previous config: {exc}", 3)
            return
        self._journal.send("aml-netcheck: config reloaded", 5)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with _compat.timeout(seconds):
                await self._wake.wait()

    def _stop_now(self) -> None:
        self._stop.set()
        self._wake.set()

    def _ask_reload(self) -> None:
        self._reload = True
        self._wake.set()

    async def _watchdog(self) -> None:
        """Pings from the event loop itself: a wedged loop stops pinging, a broken network does not."""
        interval = self._notifier.watchdog_interval
        if interval is None:
            return
        while True:
            self._notifier.send(watchdog="1")
            await asyncio.sleep(interval)

    async def _http(self) -> web.AppRunner:

        async def healthz(request: web.Request) -> web.Response:
            code, body = status.healthz(self.report, verbose="verbose" in request.query)
            return web.Response(status=code, text=body)

        async def metrics_page(request: web.Request) -> web.Response:
            if self.report is None:
                return web.Response(status=503, text="# no report yet\n")
            return web.Response(text=metrics.render_prometheus(self.report),
                                content_type="text/plain", charset="utf-8")

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/metrics", metrics_page)
        runner_ = web.AppRunner(app, access_log=None)
        await runner_.setup()
        assert self._settings.listen is not None
        host, port = self._settings.listen
        try:
            await web.TCPSite(runner_, host, port).start()
        except OSError as exc:
            await runner_.cleanup()
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ServeError(f"cannot listen on {host}:{port}: {why}") from None
        return runner_
