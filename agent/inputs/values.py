"""The values a user gives, declared once for the command line and the config file: the bounds of
every number and the situational features. One declaration, so `--timeout` and `timeout =` can
never accept different things, and neither lets through a value that makes a false verdict (an
infinite timeout hangs on a stalled peer; a NaN one fails every check at once)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from agent import catalog


class ValueProblem(ValueError):
    """A value outside what the agent can use; the message says what is expected, in one line."""


def shown(value: object, limit: int = 60) -> str:
    """`value` for an error message: repr (so one line, whatever it holds), cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def is_port(text: str) -> bool:
    """A port written as text: ASCII digits within 1-65535. str.isdigit() alone also takes '44\u00b2'
    (which int() then refuses) and fullwidth digits (which int() reads). probes.specs.Proxy.parse
    reads a proxy URL's port by the same rule (probes import nothing of agent/)."""
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit() and 0 < int(text) < 65536


@dataclass(frozen=True, slots=True)
class Bound:
    """The range a number must lie in, both ends included; always finite."""

    low: float
    high: float
    whole: bool = False  # an int (a count), not seconds
    unit: str = "seconds"

    def __str__(self) -> str:
        return f"{self.low:g}-{self.high:g}"

    def check(self, value: object) -> float:
        """`value` when it is a number in range (an int for a whole bound); else ValueProblem. The
        comparison is false for NaN and both infinities, and exact for ints of any size."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or (self.whole and not isinstance(value, int)) or not self.low <= value <= self.high:
            kind = "a whole number" if self.whole else f"a finite number of {self.unit}"
            raise ValueProblem(f"expected {kind} from {self.low:g} to {self.high:g}, not {shown(value)}")
        return value


TIMEOUT = Bound(0.1, 300)  # seconds per check (--timeout, timeout =)
DEADLINE = Bound(0.5, 3600)  # seconds for the whole run (--deadline, deadline =)
WAIT = Bound(1, 86400)  # check --wait: a setup-script hook, at most a day
INTERVAL = Bound(1, 86400)  # serve --interval
CONCURRENCY = Bound(1, 4096, whole=True)  # checks probing at once, each holding a socket (--concurrency)
LATENCY_MS = Bound(1, 300_000, unit="milliseconds")  # a layer's latency threshold (--latency, [latency]): at most 300 s


@cache
def _features_of(cloud: str) -> frozenset[str]:
    return frozenset(r.feature for r in catalog.load(cloud).requirements if r.feature)


def features() -> tuple[str, ...]:
    """The situational features of the catalog (the `feature` of its rows, in any cloud), sorted."""
    return tuple(sorted(frozenset().union(*(_features_of(cloud) for cloud in catalog.CLOUDS))))


def check_features(names: tuple[str, ...]) -> tuple[str, ...]:
    """`names` when every one is a feature of the catalog; else ValueProblem naming the unknown.
    The public catalog is asked first: most runs load it anyway, so a valid --with costs nothing."""
    unknown = [name for name in dict.fromkeys(names) if name not in _features_of("public")]
    unknown = [name for name in unknown if name not in features()]
    if unknown:
        listed = ", ".join(shown(name) for name in unknown)
        raise ValueProblem(f"unknown feature{'s' if len(unknown) > 1 else ''} {listed} "
                           f"(valid: {', '.join(features())})")
    return names
