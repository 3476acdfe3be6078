"""Latency thresholds: a check that worked, but slower than its layer's threshold, is `warn` with
reason `latency.slow`, as Network Watcher's Connection Monitor marks a test Warning when its round
trip passes a threshold (750 ms for TCP by default) and never fails it for that alone.

Each layer is judged on the figure that is the path's and the peer's, not the node's own load: the
TCP handshake's round trip as the kernel measured it (tcp_info), the TLS server's first flight and
the HTTP answer's first byte timed to when the kernel received them (a busy event loop reads them
later), and a resolver's fastest answer. Pure: results and thresholds in, results out; the runner
applies it before diagnosis, which groups the slow checks into `latency-degraded`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

from agent.inputs.values import LATENCY_MS, ValueProblem, shown
from agent.model import Result
from probes._trace import Fact
from probes.reasons import Reason, Status
from probes.specs import Layer


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Milliseconds per layer (the README's "Latency thresholds" says why these figures)."""

    dns: float = 1000.0  # a resolver's fastest answer: a recursion for an uncached name takes hundreds of ms
    tcp: float = 300.0  # the handshake's round trip: about the longest terrestrial one (antipodal)
    tls: float = 1000.0  # ClientHello to the server's first flight: a round trip and its key exchange
    http: float = 2000.0  # the request to the answer's first byte: a round trip and the service's work

    def of(self, layer: Layer) -> float | None:
        return getattr(self, layer.value, None) if layer.value in KEYS else None

    def shown(self) -> str:
        return ",".join(f"{key}={getattr(self, key):g}" for key in KEYS)


DEFAULT = Thresholds()
KEYS = tuple(f.name for f in fields(Thresholds))
# What each layer's threshold reads, as the evidence names it (`latency.measure`).
MEASURES = {Layer.DNS: "dns-answer", Layer.TCP: "connect-rtt", Layer.TLS: "server-hello", Layer.HTTP: "first-byte"}


def thresholds(given: Mapping[str, object], base: Thresholds = DEFAULT, where: str = "") -> Thresholds:
    """`base` with the layers `given` names (`dns`, `tcp`, `tls`, `http`), each checked against
    LATENCY_MS: ValueProblem naming the key for an unknown layer or a bad number."""
    changed: dict[str, float] = {}
    for key, value in given.items():
        if key not in KEYS:
            raise ValueProblem(f"{where}unknown layer {shown(key)} (known: {', '.join(KEYS)})")
        try:
            changed[key] = float(LATENCY_MS.check(value))
        except ValueProblem as exc:
            raise ValueProblem(f"{where}{key}: {exc}") from None
    return replace(base, **changed)


def parse(text: str) -> dict[str, float]:
    """The command line's form, `tcp=300,tls=1000`, checked as `thresholds` checks it: ValueProblem
    for anything else. Returns the layers given, to lay over the config file's."""
    given: dict[str, object] = {}
    for part in text.split(","):
        key, equals, value = (s.strip() for s in part.partition("="))
        try:
            number = float(value) if equals and value else None
        except ValueError:
            number = None
        if number is None:
            raise ValueProblem(f"expected LAYER=MILLISECONDS[,...] (layers: {', '.join(KEYS)}), not {shown(part)}")
        if key in given:
            raise ValueProblem(f"{key}: given twice")
        given[key] = number
    chosen = thresholds(given)
    return {key: getattr(chosen, key) for key in given}


def measured(result: Result) -> float | None:
    """The milliseconds the check's layer is judged on, None where it measured none."""
    layer, evidence = result.check.layer, result.evidence
    if layer is Layer.TCP:
        times = [_number(a.get("rtt_ms")) or _number(a.get("elapsed_ms")) for a in _dicts(evidence.get("attempts"))
                 if a.get("outcome") == "connected"]
        return min((t for t in times if t is not None), default=None)
    if layer is Layer.TLS:
        return _number(evidence.get("server_hello_ms"))
    if layer is Layer.HTTP:
        return _number(evidence.get("first_byte_ms"))
    if layer is Layer.DNS:
        answers = [_number(s.get("rtt_ms")) for s in _dicts(evidence.get("servers")) if s.get("rcode") == "NOERROR"]
        return min((t for t in answers if t is not None), default=None)
    return None


def judge(result: Result, limits: Thresholds) -> Result:
    """A passed check slower than its layer's threshold becomes `warn` (`latency.slow`) with evidence
    `latency` (measure, ms, threshold_ms); every other result is returned as it is."""
    threshold = limits.of(result.check.layer)
    took = measured(result) if result.status is Status.PASS and threshold is not None else None
    if took is None or threshold is None or took <= threshold:
        return result
    measure = MEASURES[result.check.layer]
    return replace(result, status=Status.WARN, reason=Reason.LATENCY_SLOW,
                   detail=f"worked, slowly: {measure} {took:g} ms, over the {threshold:g} ms threshold",
                   evidence={**result.evidence, "latency": {"measure": measure, "ms": took, "threshold_ms": threshold}})


def judged(results: Sequence[Result], limits: Thresholds) -> tuple[Result, ...]:
    return tuple(judge(r, limits) for r in results)


def slow(result: Result) -> bool:
    return result.reason is Reason.LATENCY_SLOW


def as_passed(result: Result) -> Result:
    """The check as every rule but latency's sees it: the pass it is (its addresses, its evidence)."""
    return replace(result, status=Status.PASS, reason=None, detail="") if slow(result) else result


def _number(value: Fact) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _dicts(value: Fact) -> list[dict[str, Fact]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
