"""Path localisation over a real routed path: four network namespaces of the test's own (node,
two Linux routers, a destination), joined by veth pairs created inside them (never the host's),
with nftables drops and rejects where an NSG, an appliance or a gateway would have them. The
tracer runs inside the node namespace as a child process: the suite's guard sees no traffic
leave loopback, and none does (the namespaces have no link to the host)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.netns import PREFIX, remove_stale
from probes._hops import Answer, Dies, Hop, from_facts, summarize

REPO = Path(__file__).resolve().parents[2]
needs_netns = pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("ip") and shutil.which("nft")),
                                 reason="needs root, `ip` and `nft`")

# (answers as (ttl, answer, address)), the limit, then what summarize says: dies, last answered ttl, first silent
SUMMARIES = [
    ([(1, "time-exceeded", "r1"), (2, "time-exceeded", "r2"), (3, "reached", "d")], 12, Dies.REACHED, 3, None),
    ([(1, "time-exceeded", "r1"), (2, "time-exceeded", "r2"), (3, "refused", "d")], 12, Dies.REACHED, 3, None),
    ([(1, "time-exceeded", "r1"), (2, "time-exceeded", "r2")], 12, Dies.BEYOND_FIRST_HOP, 2, 3),
    ([], 12, Dies.FIRST_HOP, None, 1),
    ([(1, "silent", None), (2, "time-exceeded", "r2")], 12, Dies.FIRST_HOP, None, 1),  # a hop that never answers
    ([(1, "time-exceeded", "r1"), (2, "unreachable", "r1")], 12, Dies.REJECTED, 2, 3),
    ([(2, "reached", "d"), (1, "time-exceeded", "r1"), (3, "reached", "d")], 12, Dies.REACHED, 2, None),
    ([(1, "time-exceeded", "r1"), (2, "time-exceeded", "r2")], 2, Dies.BEYOND_FIRST_HOP, 2, None),
]


@pytest.mark.parametrize(("answers", "limit", "dies", "last", "silent"), SUMMARIES)
def test_summary_names_where_the_flow_dies(answers: list[tuple[int, str, str | None]], limit: int, dies: Dies,
                                           last: int | None, silent: int | None) -> None:
    summary = summarize([Hop(ttl, Answer(answer), address) for ttl, answer, address in answers], limit)
    assert summary.dies is dies
    assert (summary.last_answered.ttl if summary.last_answered else None) == last
    assert summary.first_silent == silent
    assert [h.ttl for h in summary.hops] == list(range(1, len(summary.hops) + 1))


def test_a_path_the_node_could_not_trace_whole_tells_nothing() -> None:
    """A copy that never left the node (EMFILE) leaves its hop limit silent: that silence must not
    read as "no hop answered", the first hop's drop."""
    recorded = {"address": "10.97.2.2", "port": 445, "protocol": "tcp", "limit": 12, "hops": []}
    assert from_facts(recorded) is not None
    assert from_facts({**recorded, "local_error": "EMFILE"}) is None


def test_the_path_line_shows_the_hops_up_to_the_silence() -> None:
    summary = summarize([Hop(1, Answer.TIME_EXCEEDED, "10.97.0.1"), Hop(2, Answer.TIME_EXCEEDED, "10.97.1.2")])
    assert summary.line("10.97.2.2:445") == "node → 10.97.0.1 → 10.97.1.2 → * → 10.97.2.2:445 (dies past hop 2)"
    assert summarize([]).line("10.97.2.2:445") == "node → * → 10.97.2.2:445 (no hop answered)"


# node 10.97.0.2 -- 10.97.0.1 r1 10.97.1.1 -- 10.97.1.2 r2 10.97.2.1 -- 10.97.2.2 destination
DESTINATION = "10.97.2.2"
R1, R2 = "10.97.0.1", "10.97.1.2"
OPEN, DROPPED_PAST_R2, DROPPED_AT_NIC, REJECTED_AT_R2, CLOSED = 443, 445, 9000, 8080, 7000
UDP_ANSWERING, UDP_CLOSED, UDP_DROPPED_PAST_R2 = 5300, 5301, 5302


@pytest.fixture(scope="module")
def chain() -> Iterator[dict[str, str]]:
    remove_stale()
    names = {role: f"{PREFIX}-{os.getpid()}-{900 + i}" for i, role in enumerate(("node", "r1", "r2", "dst"))}
    server: subprocess.Popen[bytes] | None = None

    def ns(role: str, *argv: str, stdin: str | None = None) -> None:
        subprocess.run(["ip", "netns", "exec", names[role], *argv], input=stdin, text=True, check=True,
                       capture_output=True)

    try:
        for name in names.values():
            subprocess.run(["ip", "netns", "add", name], check=True)
        links = (("node", "eth0", "r1", "a0"), ("r1", "b0", "r2", "a0"), ("r2", "b0", "dst", "eth0"))
        for left, left_if, right, right_if in links:
            ns(left, "ip", "link", "add", left_if, "type", "veth", "peer", "name", right_if, "netns", names[right])
        for role, address, device in (("node", "10.97.0.2/24", "eth0"), ("r1", "10.97.0.1/24", "a0"),
                                      ("r1", "10.97.1.1/24", "b0"), ("r2", "10.97.1.2/24", "a0"),
                                      ("r2", "10.97.2.1/24", "b0"), ("dst", "10.97.2.2/24", "eth0")):
            ns(role, "ip", "addr", "add", address, "dev", device)
            ns(role, "ip", "link", "set", device, "up")
        for role in names:
            ns(role, "ip", "link", "set", "lo", "up")
        ns("node", "ip", "route", "add", "default", "via", R1)
        ns("r1", "ip", "route", "add", "default", "via", R2)
        ns("r2", "ip", "route", "add", "10.97.0.0/24", "via", "10.97.1.1")
        ns("dst", "ip", "route", "add", "default", "via", "10.97.2.1")
        for role in ("r1", "r2"):
            ns(role, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0",
               "net.ipv4.icmp_msgs_per_sec=100000")
        ns("r2", "nft", "-f", "-", stdin=textwrap.dedent(f"""
            table ip appliance {{
              chain forward {{ type filter hook forward priority 0;
                tcp dport {DROPPED_PAST_R2} drop
                tcp dport {REJECTED_AT_R2} reject with icmp type admin-prohibited
                udp dport {UDP_DROPPED_PAST_R2} drop
              }}
            }}"""))
        ns("node", "nft", "-f", "-", stdin=textwrap.dedent(f"""
            table inet nsg {{
              chain output {{ type filter hook output priority 0; tcp dport {DROPPED_AT_NIC} drop; }}
            }}"""))
        listen = (f"import socket; s=socket.create_server(('{DESTINATION}', {OPEN}), backlog=64); "
                  f"u=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('{DESTINATION}', {UDP_ANSWERING})); "
                  "print('up', flush=True)\n"
                  "while True: data, peer = u.recvfrom(512); u.sendto(data, peer)")
        server = subprocess.Popen(["ip", "netns", "exec", names["dst"], sys.executable, "-c", listen],
                                  stdout=subprocess.PIPE)
        assert server.stdout is not None and server.stdout.readline() == b"up\n"
        yield names
    finally:
        if server is not None:
            server.kill()
            server.wait()
            assert server.stdout is not None
            server.stdout.close()
        for name in names.values():
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def trace_in_node(names: dict[str, str], port: int, udp: bool = False) -> dict[str, object]:
    """The tracer from the node, inside a window as the engine gives one, recording into a check's
    evidence (localise); the summary is read back from that evidence, as diagnosis reads it."""
    script = textwrap.dedent(f"""
        import asyncio, json, contextlib
        from probes._hops import from_facts, localise
        from probes._trace import Trace
        async def main():
            trace = Trace()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await localise(trace, {DESTINATION!r}, {port}, {"udp" if udp else "tcp"!r}, b"probe")
            json.dumps(trace.facts)  # the evidence is JSON as it stands
            summary, destination = from_facts(trace.facts["path"])
            print(json.dumps({{**summary.facts(), "line": summary.line(destination)}}))
        asyncio.run(main())
    """)
    result = subprocess.run(["ip", "netns", "exec", names["node"], sys.executable, "-c", script], cwd=REPO,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def answers(facts: dict[str, object]) -> list[tuple[object, ...]]:
    hops = facts["hops"]
    assert isinstance(hops, list)
    return [(h["ttl"], h["answer"], h["address"]) for h in hops]


@needs_netns
def test_an_open_port_is_reached_through_both_routers(chain: dict[str, str]) -> None:
    facts = trace_in_node(chain, OPEN)
    assert facts["dies"] == "reached"
    assert answers(facts) == [(1, "time-exceeded", R1), (2, "time-exceeded", R2), (3, "reached", DESTINATION)]


@needs_netns
def test_a_closed_port_is_refused_by_the_destination(chain: dict[str, str]) -> None:
    facts = trace_in_node(chain, CLOSED)
    assert facts["dies"] == "reached"
    assert answers(facts)[-1] == (3, "refused", DESTINATION)


@needs_netns
def test_a_drop_at_the_second_router_is_localised_past_the_first_hop(chain: dict[str, str]) -> None:
    facts = trace_in_node(chain, DROPPED_PAST_R2)
    assert facts["dies"] == "beyond-first-hop"
    assert facts["last_answered"] == {"ttl": 2, "address": R2}
    assert facts["first_silent"] == 3
    assert facts["line"] == f"node → {R1} → {R2} → * → {DESTINATION}:{DROPPED_PAST_R2} (dies past hop 2)"


@needs_netns
def test_a_drop_at_the_node_s_own_nic_answers_at_no_hop(chain: dict[str, str]) -> None:
    facts = trace_in_node(chain, DROPPED_AT_NIC)
    assert facts["dies"] == "first-hop"
    assert facts["last_answered"] is None and facts["first_silent"] == 1


@needs_netns
def test_a_reject_on_the_way_names_the_rejecting_router(chain: dict[str, str]) -> None:
    facts = trace_in_node(chain, REJECTED_AT_R2)
    assert facts["dies"] == "rejected"
    assert answers(facts)[:3] == [(1, "time-exceeded", R1), (2, "time-exceeded", R2), (3, "unreachable", R2)]


@needs_netns
def test_a_datagram_that_the_destination_answers_is_reached(chain: dict[str, str]) -> None:
    facts = trace_in_node(chain, UDP_ANSWERING, udp=True)
    assert facts["dies"] == "reached"
    assert answers(facts) == [(1, "time-exceeded", R1), (2, "time-exceeded", R2), (3, "reached", DESTINATION)]


@needs_netns
def test_a_closed_udp_port_is_the_destination_s_own_answer(chain: dict[str, str]) -> None:
    facts = trace_in_node(chain, UDP_CLOSED, udp=True)
    assert facts["dies"] == "reached"
    assert answers(facts)[-1] == (3, "refused", DESTINATION)


@needs_netns
def test_a_datagram_dropped_past_the_second_router_is_localised(chain: dict[str, str]) -> None:
    facts = trace_in_node(chain, UDP_DROPPED_PAST_R2, udp=True)
    assert facts["dies"] == "beyond-first-hop"
    assert facts["last_answered"] == {"ttl": 2, "address": R2}


def test_a_copy_the_node_cannot_open_ends_the_trace_as_the_node_s_own_error() -> None:
    """Under a descriptor limit that lets only a few copies open, the trace stops, says EMFILE, and
    leaves no copy's socket behind (loopback, in a child process with its own limit)."""
    script = textwrap.dedent("""
        import asyncio, json, os, resource, socket
        from probes._hops import from_facts, localise
        from probes._trace import Trace
        async def main():
            server = socket.create_server(("127.0.0.1", 0))
            before = len(os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (before + 4, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            trace = Trace()
            await localise(trace, "127.0.0.1", server.getsockname()[1], "tcp")
            await asyncio.sleep(0)
            print(json.dumps({"error": trace.facts["path"].get("local_error"),
                              "summary": from_facts(trace.facts["path"]) is None,
                              "left": len(os.listdir("/proc/self/fd")) - before}))
        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == {"error": "EMFILE", "summary": True, "left": 0}
