"""The nftables ruleset as the node's firewall checks read it: `nft -j list ruleset`, which also
holds iptables-nft rules (and so ufw and Docker on a current Ubuntu), evaluated for classes of
IPv4 traffic, new connections, as they meet the base chains of the families ip, inet and netdev:
inbound at the prerouting, input and ingress hooks, outbound at output, postrouting and egress.
Every base chain is walked on its own (an accept in one does not stop a drop in another), rule by
rule, following jump and goto into named chains at any depth, with `return` and a drop policy
honoured.
Understood: tcp/udp/sctp/dccp/udplite and `th` ports, `ip saddr/daddr/protocol`,
`meta l4proto/nfproto/protocol`, interface names (the traffic is on some non-loopback
interface), `ct state`, with `==`, `!=`, `in` and numeric comparisons against values, ranges,
prefixes, anonymous and named sets; verdict maps on those keys; the iptables extensions
conntrack, state and multiport (opaque `xt` in the JSON, read from nft's own translation in the
rule text) and `-j REJECT`. Not evaluable: other `xt` extensions, `fib`, `limit`, marks,
concatenations, and values the node does not know (the source address of inbound traffic). A
drop hanging on those counts only when the rule also names the traffic's key (the port, or the
platform address), and an accept hanging on those before a drop makes the drop uncertain: the
caller hears of both as uncertain, never as a pass. Not seen at all: IPv6, the forward hook
(containers' traffic), the bridge and arp families, the legacy iptables backend (nft cannot see
it: `legacy_tables` only says whether its tables are loaded), and everything outside the node
(NSG, UDR, Azure Firewall).

Interface: `read(nft)` runs `nft -j list ruleset` (nft: the argv prefix) and parses it into a
`Ruleset`, whose `base_chains(hooks)` are the chains walked; `walk(ruleset, traffic)` evaluates
`Traffic` classes (hooks INBOUND or OUTBOUND; OPEN for a field any value of which counts) and
returns the rules (or policies) that block them and those their fate hangs on, as `Finding`s
with nft's text of the rule; `legacy_tables(path)` lists the legacy iptables tables. nft
missing, refusing (not root) or printing what cannot be parsed: `ProbeError(LOCAL_INCONCLUSIVE)`
(read and walk run nft; the caller's deadline cuts them off and leaves no nft behind)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from probes._compat import IntEnum
from probes._trace import ProbeError
from probes.reasons import Reason

# --- traffic and its evaluation against one rule -----------------------------------------------

INBOUND = frozenset({"prerouting", "input", "ingress"})
OUTBOUND = frozenset({"output", "postrouting", "egress"})
_FAMILIES = frozenset({"ip", "inet", "netdev"})  # the families that see IPv4 traffic
_PORT_PROTOCOLS = frozenset({"tcp", "udp", "sctp", "dccp", "udplite"})
_NOT_IPV4 = frozenset({"ip6", "icmpv6", "arp", "rt0", "hbh", "frag", "dst", "mh", "srh"})
_PROTOCOL_NUMBERS = {1: "icmp", 6: "tcp", 17: "udp", 132: "sctp"}
_COMPARISONS: dict[str, Callable[[int, int], bool]] = {
    "<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}
_NEUTRAL = frozenset({"counter", "log", "mangle", "notrack", "set"})  # statements, not conditions
_XT_TRANSLATED = frozenset({"conntrack", "state", "multiport"})
_TRANSLATED = re.compile(  # what nft prints for those: `ct state a,b`, `tcp dport { 1, 2-3 }`
    r"(?:\b(?P<ct>ct state)|\b(?P<protocol>tcp|udp|sctp|dccp|udplite) (?P<field>dport|sport)) "
    r"(?P<op>!= )?(?P<values>\{[^}]*\}|\S+)")


class _M(IntEnum):
    """How a condition meets a traffic class; combining takes the maximum."""
    YES = 0  # all of the traffic matches
    SOME = 1  # part of it does (a field the check leaves open is constrained)
    MAYBE = 2  # cannot tell (a value the node does not know, or a match not understood)
    NO = 3  # none of it does


class _Open:
    """A field the check leaves open: any value counts (platform traffic on any port)."""


class _NotLoopback:
    """The traffic's interface: not lo, name unknown."""


OPEN = _Open()
_NOT_LOOPBACK = _NotLoopback()

_Value = int | str | ipaddress.IPv4Address | _Open | _NotLoopback | None
_Verdict = tuple[str, str | None]  # (accept|drop|reject|jump|goto|return|continue, jump target)


@dataclass(frozen=True, slots=True)
class Traffic:
    """One class of IPv4 packets, new connections; None: the node does not know the value."""
    label: str
    hooks: frozenset[str]
    key: str  # the field a rule must match to be about this traffic (dport, saddr, daddr)
    protocol: str | _Open = "tcp"
    sport: int | _Open | None = None
    dport: int | _Open | None = None
    saddr: ipaddress.IPv4Address | None = None
    daddr: ipaddress.IPv4Address | None = None
    policy_counts: bool = True  # False: only rules that match `key` count, not chain policies

    def value(self, name: str) -> _Value:
        fixed: dict[str, _Value] = {"interface": _NOT_LOOPBACK, "state": "new",
                                   "nfproto": "ipv4", "ethertype": "ip"}
        return fixed[name] if name in fixed else getattr(self, name)


@dataclass(frozen=True, slots=True)
class _Rule:
    family: str
    table: str
    chain: str
    handle: int
    expr: list[Any]


@dataclass(frozen=True, slots=True)
class Chain:
    family: str
    table: str
    name: str
    hook: str | None
    policy: str | None


@dataclass(slots=True)
class Ruleset:
    nft: tuple[str, ...]  # the argv prefix it was read with, to read the rules' texts alike
    chains: dict[tuple[str, str, str], Chain] = field(default_factory=dict)
    rules: dict[tuple[str, str, str], list[_Rule]] = field(default_factory=dict)
    sets: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    texts: dict[tuple[str, str, str, int], str] = field(default_factory=dict)  # for xt matches

    @classmethod
    def parse(cls, document: Any, nft: tuple[str, ...]) -> Ruleset:
        ruleset = cls(nft)
        for item in document["nftables"]:
            [(kind, body)] = item.items()
            if kind == "chain":
                chain = Chain(body["family"], body["table"], body["name"], body.get("hook"),
                               body.get("policy"))
                ruleset.chains[(chain.family, chain.table, chain.name)] = chain
            elif kind == "rule":
                key = (body["family"], body["table"], body["chain"])
                ruleset.rules.setdefault(key, []).append(_Rule(*key, body["handle"], body["expr"]))
            elif kind in ("set", "map"):
                key = (body["family"], body["table"], body["name"])
                ruleset.sets[key] = _listed(body.get("elem", []))
        return ruleset

    def base_chains(self, hooks: frozenset[str]) -> list[Chain]:
        return [c for c in self.chains.values() if c.family in _FAMILIES and c.hook in hooks]

    def elements(self, rule: _Rule, right: Any) -> list[Any] | None:
        """The values a match compares against; None for a named set this ruleset lacks."""
        if isinstance(right, str) and right.startswith("@"):
            return self.sets.get((rule.family, rule.table, right[1:]))
        if isinstance(right, dict) and "set" in right:
            return _listed(right["set"])
        return _listed(right)

    def evaluate(self, rule: _Rule, traffic: Traffic) -> tuple[_M, bool, _Verdict | None]:
        """(how the rule's conditions meet the traffic, whether a condition on the traffic's key
        matched, the verdict as (kind, jump target))."""
        state, keyed, verdict = _M.YES, False, None
        for expr in rule.expr:
            [(kind, body)] = expr.items()
            xt = body if kind == "xt" and isinstance(body, dict) else {}
            if kind == "match":
                name, met = self._match(rule, body, traffic)
            elif kind == "vmap":
                name, met, verdict = self._vmap(rule, body, traffic)
            elif kind in ("accept", "drop", "reject", "return", "continue"):
                name, met, verdict = None, _M.YES, (kind, None)
            elif kind in ("jump", "goto"):
                name, met, verdict = None, _M.YES, (kind, body["target"])
            elif xt.get("type") == "target" and xt.get("name") == "REJECT":  # iptables -j REJECT
                name, met, verdict = None, _M.YES, ("reject", None)
            elif xt.get("type") == "match" and xt.get("name") in _XT_TRANSLATED:
                xt_met, xt_keyed = self._xt(rule, traffic)
                name, met, keyed = None, xt_met, keyed or xt_keyed
            else:
                name, met = None, _M.YES if kind in _NEUTRAL else _M.MAYBE
            state = max(state, met)
            keyed = keyed or (met is _M.YES and name == traffic.key)
            if state is _M.NO:
                break
        return state, keyed, verdict

    def _xt(self, rule: _Rule, traffic: Traffic) -> tuple[_M, bool]:
        """An iptables extension match (conntrack, state, multiport): its JSON is opaque, but nft
        prints its translation in the rule's text (`ct state related,established`, `tcp dport
        8000-9000`); those parts of the text are evaluated as the native matches they name."""
        text = self.texts.get((rule.family, rule.table, rule.chain, rule.handle), "")
        met, keyed, found = _M.YES, False, False
        for words in _TRANSLATED.finditer(text):
            found = True
            left = ({"ct": {"key": "state"}} if words["ct"] else
                    {"payload": {"protocol": words["protocol"], "field": words["field"]}})
            values = [_text_value(v) for v in words["values"].strip("{} ").split(",")]
            name, one = self._match(rule, {"left": left, "op": words["op"] or "==",
                                           "right": values}, traffic)
            met, keyed = max(met, one), keyed or (one is _M.YES and name == traffic.key)
        return (met, keyed) if found else (_M.MAYBE, False)

    def _match(self, rule: _Rule, body: Any, traffic: Traffic) -> tuple[str | None, _M]:
        name, implied = _field(body["left"])
        met = _M.NO if name == "never" else _implied(implied, traffic)
        if name is None or met is _M.NO:
            return name, max(met, _M.MAYBE)
        elements = self.elements(rule, body["right"])
        if elements is None:
            return name, _M.MAYBE
        return name, max(met, _compare(traffic.value(name), body.get("op", "=="), elements))

    def _vmap(self, rule: _Rule, body: Any,
              traffic: Traffic) -> tuple[str | None, _M, _Verdict | None]:
        """A verdict map decides only when its key's value is known: the matching entry's verdict,
        or none when no entry matches (the rule does nothing)."""
        name, implied = _field(body["key"])
        met = _M.NO if name == "never" else _implied(implied, traffic)
        if met is _M.NO:
            return name, _M.NO, None
        value = None if name is None else traffic.value(name)
        entries = self.elements(rule, body["data"])
        if met is not _M.YES or value is None or isinstance(value, _Open) or entries is None:
            return name, _M.MAYBE, None
        for entry in entries:
            if isinstance(entry, list) and len(entry) == 2 and _contains(entry[0], value):
                [(kind, target)] = entry[1].items()
                return name, _M.YES, (kind, target["target"] if isinstance(target, dict) else None)
        return name, _M.NO, None


def _implied(protocol: str | None, traffic: Traffic) -> _M:
    """A match on a transport header implies its protocol (`tcp dport` needs tcp)."""
    return _M.YES if protocol is None else _compare(traffic.protocol, "==", [protocol])


def _text_value(text: str) -> Any:
    """One element of a translated match's text: a number, a range "a-b", or a word."""
    low, dash, high = text.strip().partition("-")
    if dash and low.isdigit() and high.isdigit():
        return {"range": [int(low), int(high)]}
    return int(text) if text.strip().isdigit() else text.strip()


def _listed(value: Any) -> list[Any]:
    """Set elements, unwrapped from {"elem": {"val": ...}} (sets with timeouts or counters)."""
    items = value if isinstance(value, list) else [value]
    return [i["elem"]["val"] if isinstance(i, dict) and "elem" in i else i for i in items]


def _field(left: Any) -> tuple[str | None, str | None]:
    """(the traffic field a match's left side reads, or None when not understood, "never" when
    IPv4 traffic cannot match; the transport protocol it implies)."""
    if not isinstance(left, dict) or len(left) != 1:
        return None, None
    [(kind, body)] = left.items()
    key = body.get("key") if isinstance(body, dict) else None
    if kind == "payload":
        base, name = body.get("protocol"), body.get("field")
        if base in _NOT_IPV4:
            return "never", None
        if base in _PORT_PROTOCOLS or base == "th":
            implied = None if base == "th" else base
            return (name if name in ("sport", "dport") else None), implied
        if base == "ip" and name in ("saddr", "daddr", "protocol"):
            return name, None
        return None, base if base in ("icmp", "igmp", "esp", "ah") else None
    if kind == "meta":
        return {"l4proto": "protocol", "nfproto": "nfproto", "protocol": "ethertype",
                "iifname": "interface", "oifname": "interface", "iif": "interface",
                "oif": "interface"}.get(str(key)), None
    if kind == "ct" and key == "state":
        return "state", None
    return None, None


def _compare(value: _Value, op: str, elements: list[Any]) -> _M:
    if value is None:
        return _M.MAYBE
    if isinstance(value, _Open):
        return _M.SOME
    if op in ("==", "in", "!="):
        found = [_contains(e, value) for e in elements]
        met = _M.YES if True in found else _M.MAYBE if None in found else _M.NO
        if op == "!=" and met is not _M.MAYBE:
            return _M.NO if met is _M.YES else _M.YES
        return met
    number = _number(elements[0]) if len(elements) == 1 else None
    if op in _COMPARISONS and isinstance(value, int) and number is not None:
        return _M.YES if _COMPARISONS[op](value, number) else _M.NO
    return _M.MAYBE


def _contains(element: Any, value: _Value) -> bool | None:
    """Whether one set element (value, range or prefix) holds the value; None: cannot tell."""
    if value is _NOT_LOOPBACK:
        return False if element == "lo" else None
    if isinstance(element, dict) and "range" in element:
        low, high = element["range"]
        if isinstance(value, int):
            low, high = _number(low), _number(high)
            return None if low is None or high is None else low <= value <= high
        if isinstance(value, ipaddress.IPv4Address):
            try:
                return ipaddress.IPv4Address(low) <= value <= ipaddress.IPv4Address(high)
            except ValueError:
                return None
        return None
    if isinstance(element, dict) and "prefix" in element:
        element = f"{element['prefix']['addr']}/{element['prefix']['len']}"
    if isinstance(value, ipaddress.IPv4Address):
        try:
            network = ipaddress.ip_network(element, strict=False)
        except (TypeError, ValueError):
            return None
        return network.version == 4 and value in network
    if isinstance(value, int):
        number = _number(element)
        return None if number is None else number == value
    if isinstance(element, int):
        element = _PROTOCOL_NUMBERS.get(element)
    return None if not isinstance(element, str) else element == value


def _number(element: Any) -> int | None:
    if isinstance(element, int) and not isinstance(element, bool):
        return element
    return int(element) if isinstance(element, str) and element.isdigit() else None


# --- walking the chains ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ref:
    """A rule (or, with handle None, a chain's policy) an outcome depends on."""
    family: str
    table: str
    chain: str
    handle: int | None
    verdict: str


_ACCEPT: Literal["accept"] = "accept"


class _Walk:
    """One traffic class through every base chain of its hooks: what blocks it for sure
    (`blocking`), and what might block it or might save it from a block (`uncertain`)."""

    def __init__(self, ruleset: Ruleset, traffic: Traffic) -> None:
        self.ruleset = ruleset
        self.traffic = traffic
        self.blocking: list[_Ref] = []
        self.uncertain: list[_Ref] = []
        self._possible_accepts: list[_Ref] = []
        for chain in ruleset.base_chains(traffic.hooks):
            self._base(chain)

    def _base(self, chain: Chain) -> None:
        self._possible_accepts = []
        key = (chain.family, chain.table, chain.name)
        outcome = self._chain(key, _M.YES, False, (key,))
        if outcome is None and chain.policy == "drop" and self.traffic.policy_counts:
            outcome = _Ref(*key, None, "drop")
        if isinstance(outcome, _Ref):
            if self._possible_accepts:
                self.uncertain += [*self._possible_accepts, outcome]
            else:
                self.blocking.append(outcome)

    def _chain(self, key: tuple[str, str, str], context: _M, keyed: bool,
               stack: tuple[tuple[str, str, str], ...]) -> _Ref | Literal["accept"] | None:
        """The chain's decision for the traffic: accept, a blocking rule, or None (it fell
        through or returned). Under a context of SOME or MAYBE (a jump that only part of the
        traffic takes, or that may not be taken) nothing inside is decisive for all of it."""
        for rule in self.ruleset.rules.get(key, []):
            met, rule_keyed, verdict = self.ruleset.evaluate(rule, self.traffic)
            met, rule_keyed = max(met, context), keyed or rule_keyed
            if met is _M.NO or verdict is None:
                continue
            kind, target = verdict
            ref = _Ref(rule.family, rule.table, rule.chain, rule.handle, kind)
            if kind == "accept":
                if met is _M.YES:
                    return _ACCEPT
                if met is _M.MAYBE:  # SOME: part of the traffic is accepted, the rest goes on
                    self._possible_accepts.append(ref)
            elif kind in ("drop", "reject") and (rule_keyed or self.traffic.policy_counts):
                if met is not _M.MAYBE:
                    return ref  # SOME: part of the traffic is dropped, which is enough
                if rule_keyed:
                    self.uncertain.append(ref)
            elif kind in ("jump", "goto") and target is not None:
                inner = (rule.family, rule.table, target)
                if inner not in stack:
                    outcome = self._chain(inner, met, rule_keyed, (*stack, inner))
                    if outcome is not None:
                        return outcome
                if kind == "goto" and met is _M.YES:
                    return None
            elif kind == "return" and met is _M.YES:
                return None
        return None


# --- reading the ruleset and walking traffic through it ----------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule (or, with handle None, a chain's policy) that blocks traffic, or that its fate
    hangs on."""
    family: str
    table: str
    chain: str
    handle: int | None
    verdict: str
    text: str | None  # nft's own text of the rule; None for a policy, or a rule nft did not print
    traffic: tuple[str, ...]  # the labels of the traffic classes it concerns


async def read(nft: tuple[str, ...]) -> Ruleset:
    """The ruleset `nft -j list ruleset` prints, nft being the argv prefix; with the rules' texts
    when iptables-nft extensions need them."""
    document = await _nft(nft, "-j", "list", "ruleset")
    try:
        ruleset = Ruleset.parse(json.loads(document), nft)
    except (ValueError, KeyError, TypeError) as exc:
        raise _inconclusive(f"cannot parse `nft -j list ruleset`: {exc!r}") from exc
    if '"xt"' in document:  # iptables-nft extensions: only their text says what they match
        ruleset.texts = await _rule_texts(nft)
    return ruleset


async def walk(ruleset: Ruleset,
               traffic: list[Traffic]) -> tuple[list[Finding], list[Finding]]:
    """(what blocks some of the traffic for sure, what might block it or might save it from a
    block): each rule or policy once, in the order first met, with the labels of the traffic it
    concerns and its text (read from nft now if it was not yet)."""
    blocking: dict[_Ref, list[str]] = {}
    uncertain: dict[_Ref, list[str]] = {}
    for item in traffic:
        walked = _Walk(ruleset, item)
        for ref in walked.blocking:
            blocking.setdefault(ref, []).append(item.label)
        for ref in walked.uncertain:
            uncertain.setdefault(ref, []).append(item.label)
    texts = ruleset.texts or (await _rule_texts(ruleset.nft) if blocking or uncertain else {})
    return _findings(blocking, texts), _findings(uncertain, texts)


def _findings(refs: dict[_Ref, list[str]],
              texts: dict[tuple[str, str, str, int], str]) -> list[Finding]:
    return [Finding(r.family, r.table, r.chain, r.handle, r.verdict,
                    None if r.handle is None else texts.get((r.family, r.table, r.chain, r.handle)),
                    tuple(labels))
            for r, labels in refs.items()]


def _inconclusive(detail: str) -> ProbeError:
    return ProbeError(Reason.LOCAL_INCONCLUSIVE, detail)


async def _nft(nft: tuple[str, ...], *args: str) -> str:
    """Run nft without a shell; a missing binary or a refusal (not root) is inconclusive."""
    argv = [*nft, *args]
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise _inconclusive(f"cannot run {argv[0]} to read the firewall rules: "
                            f"{exc.strerror or exc}") from exc
    try:
        stdout, stderr = await process.communicate()
    except BaseException:  # the engine's deadline: leave no nft behind
        if process.returncode is None:
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        lines = stderr.decode(errors="replace").strip().splitlines()
        why = lines[0] if lines else f"exit status {process.returncode}"
        raise _inconclusive(f"`{' '.join(argv)}` failed: {why} (reading the firewall rules needs "
                            "root)")
    return stdout.decode(errors="replace")


async def _rule_texts(nft: tuple[str, ...]) -> dict[tuple[str, str, str, int], str]:
    """nft's own text of each rule by (family, table, chain, handle): `nft -a list ruleset`."""
    texts: dict[tuple[str, str, str, int], str] = {}
    table: tuple[str, str] | None = None
    chain: str | None = None
    for line in (await _nft(nft, "-a", "list", "ruleset")).splitlines():
        words = line.split()
        if words[:1] == ["table"] and len(words) >= 3:
            table, chain = (words[1], words[2]), None
        elif words[:1] == ["chain"] and len(words) >= 2:
            chain = words[1].strip('"')
        else:
            body, sep, handle = line.strip().rpartition(" # handle ")
            if sep and table and chain and handle.isdigit() and not body.endswith("{"):
                texts[(table[0], table[1], chain, int(handle))] = body
    return texts


def legacy_tables(path: Path) -> list[str]:
    """The tables the legacy iptables backend has loaded, read from path (per netns:
    /proc/net/ip_tables_names); none when it cannot be read."""
    try:
        return path.read_text().split()
    except OSError:
        return []
