"""The daemon's pure parts (state changes, backoff) and its systemd interfaces over real AF_UNIX
datagram sockets. The whole loop runs in the lab (tests/lab/test_serve.py)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.model import Finding, Severity
from agent.modes.serve import Announced, Backoff, changes, merged
from agent.modes.systemd import Journal, Notifier, message_id
from probes.reasons import Reason

from .helpers import Outcome, make_plan, simulate


def finding(code: str, severity: Severity = Severity.CRITICAL, targets: tuple[str, ...] = ("a:1/tcp",)) -> Finding:
    return Finding(code, severity, f"{code} summary", "cause", "remedy", targets, ("tcp:a:1",))


def test_changes_are_appear_clear_and_severity() -> None:
    before = merged([finding("smb-blocked"), finding("tls-intercepted", Severity.WARNING)])
    after = merged([finding("tls-intercepted", Severity.CRITICAL), finding("udp-blocked")])
    assert sorted((c.kind, c.finding.code) for c in changes(before, after)) == [
        ("appeared", "udp-blocked"), ("changed", "tls-intercepted"), ("cleared", "smb-blocked")]
    assert changes(after, after) == []


def test_a_second_group_of_one_code_is_not_a_new_problem() -> None:
    one = merged([finding("egress-blocked", targets=("x:443/tcp",))])
    two = merged([finding("egress-blocked", targets=("x:443/tcp",)),
                  finding("egress-blocked", Severity.WARNING, targets=("y:443/tcp",))])
    assert changes(one, two) == []
    assert two["egress-blocked"].targets == ("x:443/tcp", "y:443/tcp")


SMB, TLS = finding("smb-blocked"), finding("tls-intercepted", Severity.WARNING)


@pytest.mark.parametrize(("rounds", "logged"), [
    # appears once, clears after two passing rounds in a row, not after one
    ([[SMB], [], [], []], [["appeared smb-blocked"], [], ["cleared smb-blocked"], []]),
    # a flapping path: it never passed twice in a row, so it never cleared and never appeared again
    ([[SMB], [], [SMB], [], [SMB], []], [["appeared smb-blocked"], [], [], [], [], []]),
    # back after one passing round with another severity: that change, and nothing else
    ([[SMB], [], [replace(SMB, severity=Severity.WARNING)], [], []],
     [["appeared smb-blocked"], [], ["changed smb-blocked"], [], ["cleared smb-blocked"]]),
    # each finding counts its own passing rounds
    ([[SMB, TLS], [TLS], [], [SMB]], [["appeared smb-blocked", "appeared tls-intercepted"], [],
                                      ["cleared smb-blocked"], ["appeared smb-blocked", "cleared tls-intercepted"]]),
    ([[SMB, TLS], [TLS], [], []], [["appeared smb-blocked", "appeared tls-intercepted"], [],
                                   ["cleared smb-blocked"], ["cleared tls-intercepted"]]),
], ids=["clears-after-two", "flapping", "severity-change", "independent", "independent-clear"])
def test_a_finding_clears_after_two_passing_rounds_in_a_row(rounds: list[list[Finding]],
                                                            logged: list[list[str]]) -> None:
    announced = Announced()
    assert [[f"{c.kind} {c.finding.code}" for c in announced.step(merged(found))] for found in rounds] == logged


def test_backoff_reuses_results_of_checks_that_keep_failing() -> None:
    checks = make_plan()
    failing = simulate(checks, {"tcp:mcr.microsoft.com:443": Outcome(Reason.TCP_TIMEOUT)})
    last = {r.check.id: r for r in failing}
    backoff = Backoff()
    skipped_rounds = []
    for round_number in range(1, 16):
        reused = backoff.reuse(round_number, last)
        if "tcp:mcr.microsoft.com:443" in reused:
            skipped_rounds.append(round_number)
        backoff.update(round_number, [r for r in failing if r.check.id not in reused])
    assert skipped_rounds == [3, 5, 6, 8, 9, 10, 11, 13, 14, 15]  # after rounds 2, 4, 7, 12: 1, 2, 4, 8 rounds off
    healthy = simulate(checks, {})
    backoff.update(16, healthy)
    assert backoff.reuse(17, last) == {}


@pytest.fixture
def datagrams(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(1)
        yield path, sock


def test_notify_reaches_the_socket(datagrams: tuple[str, socket.socket]) -> None:
    path, sock = datagrams
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})
    notifier.send(ready="1", status="ok: no problems")
    assert sock.recv(4096) == b"READY=1\nSTATUS=ok: no problems"
    assert notifier.watchdog_interval == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    Notifier({}).send(ready="1")  # not under systemd: nothing happens, nothing raises


def test_journal_native_protocol(datagrams: tuple[str, socket.socket]) -> None:
    path, sock = datagrams
    Journal({"JOURNAL_STREAM": "8:1234"}, socket_path=path).send(
        "problem found: x\ny", 3, MESSAGE_ID=message_id("smb-blocked"), AML_NETCHECK_CODE="smb-blocked")
    entry = sock.recv(65536)
    assert b"PRIORITY=3\n" in entry and b"AML_NETCHECK_CODE=smb-blocked\n" in entry
    assert b"MESSAGE\n" + (len(b"problem found: x\ny")).to_bytes(8, "little") + b"problem found: x\ny\n" in entry
    assert f"MESSAGE_ID={message_id('smb-blocked')}".encode() in entry
    assert message_id("smb-blocked") == message_id("smb-blocked") != message_id("udp-blocked")
    assert len(message_id("smb-blocked")) == 32


def test_journal_falls_back_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    Journal({}).send("problem cleared: [smb-blocked] x", 5, AML_NETCHECK_CODE="smb-blocked")
    assert capsys.readouterr().err == "<5>problem cleared: [smb-blocked] x [aml_netcheck_code=smb-blocked]\n"


def test_notify_never_blocks_on_a_full_queue(datagrams: tuple[str, socket.socket]) -> None:
    path, _ = datagrams  # nobody reads: the queue fills up
    notifier = Notifier({"NOTIFY_SOCKET": path})
    for _ in range(2000):  # far beyond the default queue length of unix datagram sockets
        notifier.send(watchdog="1")
