"""Runs checks: the engine owns time (the run deadline, each check's timeout, the concurrency
bound) and turns every outcome of a probe into a Result. Probes own protocol detail.

Every check starts at once; a check that needs another (tcp needs dns, tls needs tcp) waits for
that result and either connects to the addresses it passed or is skipped. One failing check never
cancels another. Stopping (a signal, the run deadline) cancels what is still running and still
returns a result for every check.

The concurrency bound is the one requested, cut to what the descriptor limit (RLIMIT_NOFILE) leaves:
a socket the node cannot open is `local.resource-limit`, inconclusive, so a bound past the limit would
turn a run at `ulimit -n 64` into hundreds of checks that tell nothing (`concurrency_bound`). The
resolver threads (getaddrinfo) are bounded by the same figure and counted in the same budget."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
import queue
import resource
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.clock import Deadline
from agent.model import Check, Result
from probes import PROBES, _compat
from probes._hops import MAX_HOPS, TRACE_DESCRIPTORS, TRACES_AT_ONCE
from probes._net import Shared, shared
from probes._stream import handover
from probes._timing import EarlyTimeout
from probes._trace import Fact, ProbeError, Trace
from probes.reasons import Reason, Status, classify, timeout_reason
from probes.specs import is_ip

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0  # seconds per check: several TCP SYN retransmits, a slow TLS handshake
DEFAULT_CONCURRENCY = 128  # checks probing at once, unless the descriptor limit allows fewer
# The most descriptors one check holds at once: a dns check asks up to 3 resolvers A and AAAA together (6)
# beside getaddrinfo's own (1 or 2); a tcp check connects to every address of a name together (Azure's
# front ends have up to about 8).
DESCRIPTORS_PER_CHECK = 8
# What a getaddrinfo holds (its socket to the stub, /etc/hosts while read), counted once more per check
# slot: a resolver thread can outlive its check (a hung stub keeps it for its own retries), and a slot's
# next check then runs beside it. There are as many resolver threads as slots (_ResolverPool).
DESCRIPTORS_PER_RESOLVE = 2
# A connection a check leaves for the check above it (tcp -> tls -> http), parked between the two: at most
# one per check slot (Shared.park_limit), counted once more per slot.
DESCRIPTORS_PER_PARKED = 1
# Descriptors kept for the process beside its checks: IMDS, the report file, logging and the journal, the
# daemon's sockets.
RESERVED_DESCRIPTORS = 16
# The paths traced at once for silent connects (probes._hops) get their descriptors only where the limit
# leaves this many times as many for the check slots: a tight limit (ulimit -n 64) keeps its slots, untraced.
TRACE_ROOM = 4
NO_DEADLINE = Deadline()


@dataclass(slots=True)
class RunState:
    """Results as they arrive, so an interrupted run still reports what finished."""

    results: dict[str, Result] = field(default_factory=dict)
    interrupted: str | None = None


class _ResolverPool(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor, where getaddrinfo runs (the dns probe's system path, a proxy's
    name for CONNECT tunnels and proxied requests): at most `limit` threads, each started on demand and
    ended as soon as no call waits, so an idle run holds none. Daemon threads: a hung resolver can
    hold one for many seconds after its check timed out, and must not hold the process past its
    deadline at exit. A call beyond the limit waits for a thread; with one thread per check slot
    that happens only behind calls that outlived their checks."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)  # the base class's own queue and threads stay unused
        self.limit = 1
        self._calls: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[[], Any]]] = \
            queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._calls.put((future, lambda: fn(*args, **kwargs)))
        with self._lock:
            if self._started < self.limit:
                self._started += 1
                threading.Thread(target=self._work, name="aml-netcheck-resolve", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            with self._lock:  # checked under the lock submit counts threads with: no call is left waiting
                try:
                    future, call = self._calls.get_nowait()
                except queue.Empty:
                    self._started -= 1
                    return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the awaiting task, never lost
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to join: the threads are daemons and finish or die with the process."""


# One pool for the process, so threads still held by an earlier run (serve's rounds) count against the
# limit of the next.
_RESOLVERS = _ResolverPool()


async def run(checks: Sequence[Check], *, timeout: float = DEFAULT_TIMEOUT,
              deadline: Deadline = NO_DEADLINE, concurrency: int = DEFAULT_CONCURRENCY,
              state: RunState | None = None,
              on_result: Callable[[Result], None] | None = None,
              known: Mapping[str, Result] | None = None) -> tuple[Result, ...]:
    """Run every check; return one result per check, in the order given.

    `deadline` is the run's absolute end; checks still running then end as `probe.cancelled`.
    Each check's window is its timeout cut to what is left of the run. Cancelling the caller's
    task ends the run the same way. `known` holds earlier results of checks not run again, which
    the checks here may depend on."""
    loop = asyncio.get_running_loop()
    state = state if state is not None else RunState()
    by_id = {result.check.id: result.check for result in (known or {}).values()}
    by_id.update((check.id, check) for check in checks)
    futures: dict[str, asyncio.Future[Result]] = {c.id: loop.create_future() for c in checks}
    for check_id, result in (known or {}).items():
        if check_id not in futures:
            futures[check_id] = loop.create_future()
            futures[check_id].set_result(result)
    bound, traces = descriptor_budget(concurrency)
    if bound < concurrency:
        log.debug("concurrency %d instead of %d: the descriptor limit allows no more", bound, concurrency)
    limit = asyncio.Semaphore(bound)
    _RESOLVERS.limit = bound  # a resolver thread per check slot
    loop.set_default_executor(_RESOLVERS)

    async def one(check: Check, scope: Shared) -> None:
        result: Result | None = None
        try:
            result = await _run_one(check, by_id, futures, limit, timeout, deadline)
            if result.reason is Reason.PROBE_CANCELLED:
                state.interrupted = state.interrupted or deadline.reached
            state.results[check.id] = result
            if on_result is not None:
                on_result(result)
        finally:  # whatever happened, no dependent waits on this check forever
            scope.finished(check.id)  # a connection left for this check and not taken closes now
            if not futures[check.id].done():
                futures[check.id].set_result(result or _result(check, Reason.PROBE_CANCELLED, None,
                                                               "not finished", 0.0))

    async with shared() as scope:  # one TLS context per trust configuration, and the connections handed up
        scope.park_limit = bound
        scope.trace_limit = traces
        _expect_handovers(scope, checks)
        tasks = [asyncio.create_task(one(check, scope), name=check.id) for check in checks]
        try:
            left = deadline.remaining()
            _, pending = await asyncio.wait(tasks, timeout=None if left is None else max(left, 0.0)) \
                if tasks else (set(), set())
            if pending:
                state.interrupted = state.interrupted or deadline.reached
        except asyncio.CancelledError:
            state.interrupted = state.interrupted or "interrupted"
            raise
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return finish(checks, state)


def _expect_handovers(scope: Shared, checks: Sequence[Check]) -> None:
    """Tell the run's parking place which check will carry its layer on the connection of the check it
    needs (probes._stream), so that only those connections are ever parked: a tcp-only requirement
    parks none."""
    running = {check.id: check for check in checks if check.skip is None}
    for check in running.values():
        below = running.get(check.needs) if check.needs is not None else None
        key = handover(below.spec, check.spec) if below is not None else None
        if below is not None and key is not None:
            scope.expect(key, below.id, check.id)


def concurrency_bound(requested: int, limit: int | None = None, in_use: int | None = None) -> int:
    """The checks that may probe at once (descriptor_budget)."""
    return descriptor_budget(requested, limit, in_use)[0]


def descriptor_budget(requested: int, limit: int | None = None, in_use: int | None = None) -> tuple[int, int]:
    """(check slots, paths traced at once). Slots: `requested`, cut to what the descriptor limit leaves
    after the descriptors open now, RESERVED_DESCRIPTORS and the traces', at DESCRIPTORS_PER_CHECK,
    DESCRIPTORS_PER_RESOLVE and DESCRIPTORS_PER_PARKED each; never below one. Traces: TRACES_AT_ONCE
    where the limit leaves TRACE_ROOM times their descriptors, else none.
    `limit` defaults to RLIMIT_NOFILE's soft value (what `ulimit -n` sets), `in_use` to the open count."""
    if limit is None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return max(1, requested), TRACES_AT_ONCE
        limit = soft
    used = _open_descriptors(limit) if in_use is None else in_use
    spare = limit - used - RESERVED_DESCRIPTORS
    traces = TRACES_AT_ONCE if spare >= TRACE_ROOM * TRACE_DESCRIPTORS else 0
    per_slot = DESCRIPTORS_PER_CHECK + DESCRIPTORS_PER_RESOLVE + DESCRIPTORS_PER_PARKED
    return max(1, min(requested, (spare - traces * MAX_HOPS) // per_slot)), traces


def _open_descriptors(limit: int) -> int:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listing them
    except OSError as exc:  # at the limit already: none to spare; no /proc: the reserve stands for them
        return limit if exc.errno in (errno.EMFILE, errno.ENFILE) else 0


def finish(checks: Sequence[Check], state: RunState) -> tuple[Result, ...]:
    """One result per check: the ones that finished, `probe.cancelled` for the rest."""
    detail = f"not finished: {state.interrupted}" if state.interrupted else "not finished"
    return tuple(state.results.get(c.id) or _result(c, Reason.PROBE_CANCELLED, None, detail, 0.0)
                 for c in checks)


async def _run_one(check: Check, by_id: Mapping[str, Check], futures: Mapping[str, asyncio.Future[Result]],
                   limit: asyncio.Semaphore, timeout: float, deadline: Deadline) -> Result:
    if check.skip is not None:
        return _result(check, check.skip, None, check.skip_detail, 0.0)
    addresses: tuple[str, ...] = (check.host,) if is_ip(check.host) else ()
    if check.needs is not None:
        below = await asyncio.shield(futures[check.needs])
        if below.status not in (Status.PASS, Status.WARN) or not below.addresses:
            return _result(check, Reason.SKIP_DEPENDENCY, None,
                           f"not tried: {by_id[check.needs].id} did not pass", 0.0)
        addresses = below.addresses
    async with limit:
        return await attempt(check, addresses, timeout, deadline)


async def attempt(check: Check, addresses: tuple[str, ...], timeout: float,
                  deadline: Deadline = NO_DEADLINE) -> Result:
    """Run one probe for its window and classify whatever happens. Never raises, except
    CancelledError, which must propagate.

    The window is the check's timeout cut to what is left of the run. Only the timeout is a
    verdict (`tcp.timeout`: no answer in the time a check is given); a window the run deadline
    cut short ends `probe.cancelled`, so a deadline never turns a slow answer into a failure. The
    probe's protocol windows follow the timeout. A probe may reach the timeout's verdict early
    (EarlyTimeout: its peer silent well past the run's RTT estimate, probes/_timing.py), inside
    the window; it is then read exactly as the timeout, with the probe's detail."""
    window = deadline.window(timeout)
    cut = window < timeout
    trace = Trace()
    if addresses:
        trace.note(tried=list(addresses))  # kept even when the deadline cuts every attempt short
    try:
        _, probe = PROBES[check.layer]
        spec = check.spec.within(timeout)
        async with _compat.timeout(window):
            await probe(spec, addresses, trace)
    except TimeoutError as exc:
        ok = _passed_addresses(trace)
        early = isinstance(exc, EarlyTimeout)  # the probe's own, from the run's RTT estimate, inside the window
        if cut and not early:
            return _result(check, Reason.PROBE_CANCELLED, trace.current, f"not finished: {deadline.reached}",
                           trace.elapsed(), trace, ok)
        phase = trace.current
        reason = timeout_reason(check.layer, phase)
        detail = str(exc) if early else f"no answer within {timeout:g}s" + (f" during {phase}" if phase else "")
        if not ok and "local_limit" in trace.facts:  # some addresses were never tried: no verdict on the set
            return _result(check, Reason.LOCAL_RESOURCE_LIMIT, phase,
                           f"{detail}; not tried (the node's own limit): {trace.facts['local_limit']}",
                           trace.elapsed(), trace)
        if ok and reason.status is Status.FAIL:
            return _result(check, reason, phase, detail + f"; {len(ok)} address(es) passed", trace.elapsed(),
                           trace, ok, status=Status.WARN)
        return _result(check, reason, phase, detail, trace.elapsed(), trace, ok)
    except ProbeError as exc:
        return _result(check, exc.reason, trace.current, exc.detail, trace.elapsed(), trace,
                       _passed_addresses(trace))
    except Exception as exc:  # the engine boundary: every other outcome becomes a classified result
        reason = classify(exc)
        if reason is Reason.PROBE_INTERNAL:
            log.exception("check %s: unexpected error", check.id)
        return _result(check, reason, trace.current, _describe(exc), trace.elapsed(), trace)
    return _result(check, None, None, "", trace.elapsed(), trace, _passed_addresses(trace))


def _passed_addresses(trace: Trace) -> tuple[str, ...]:
    passed = trace.facts.get("addresses_ok")
    return tuple(str(a) for a in passed) if isinstance(passed, list) else ()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _result(check: Check, reason: Reason | None, phase: str | None, detail: str, elapsed: float,
            trace: Trace | None = None, addresses: tuple[str, ...] = (),
            status: Status | None = None) -> Result:
    evidence: dict[str, Fact] = dict(trace.facts) if trace else {}
    return Result(
        check=check,
        status=status or (reason.status if reason else Status.PASS),
        reason=reason, phase=phase, detail=detail, elapsed=elapsed,
        phases=trace.phases if trace else (), evidence=evidence, addresses=addresses,
    )
