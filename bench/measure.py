"""One process, measured whole: wall, CPU (user + system of it and its children), peak RSS and the
peak number of open descriptors (sampled from /proc/<pid>/fd while it runs), and medians of several.

The pid measured is the one started: `ip netns exec`, `sh` and `env` exec in place, so it ends up
being the agent's interpreter; wait4 gives the CPU and peak RSS of it and of every child it waited
for. Descriptors are sampled every few milliseconds, so a peak shorter than that can be missed.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

FD_SAMPLE_S = 0.005


@dataclass(frozen=True, slots=True)
class Sample:
    wall_s: float
    cpu_s: float
    rss_mib: float
    fds: int
    exit_code: int
    stdout: bytes


@dataclass(frozen=True, slots=True)
class Summary:
    """Medians (and the spread of wall time) of several samples of one case."""

    runs: int
    wall_s: float
    wall_min_s: float
    wall_max_s: float
    cpu_s: float
    rss_mib: float
    fds: int
    exit_codes: tuple[int, ...]

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> Summary:
        walls = [s.wall_s for s in samples]
        return cls(len(samples), statistics.median(walls), min(walls), max(walls),
                   statistics.median(s.cpu_s for s in samples), statistics.median(s.rss_mib for s in samples),
                   round(statistics.median(s.fds for s in samples)),
                   tuple(sorted({s.exit_code for s in samples})))


def _count_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # gone, or between execs
        return 0


def run(argv: Sequence[str], *, cwd: Path, nofile: int | None = None,
        env: dict[str, str] | None = None) -> Sample:
    """Run argv to its end, measuring it; nofile: RLIMIT_NOFILE for it (as `ulimit -n`)."""
    preexec: Callable[[], None] | None = None
    if nofile is not None:
        limit = nofile

        def preexec() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    started = time.monotonic()
    proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, preexec_fn=preexec)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _count_fds(proc.pid))
            done.wait(FD_SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    # the sampler stops before the process is reaped, so it never counts a reused pid's descriptors
    _, status, usage = _wait(proc.pid, done)
    wall = time.monotonic() - started
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, peak[0], proc.returncode, stdout)


def _wait(pid: int, done: threading.Event) -> tuple[int, int, resource.struct_rusage]:
    """wait4 once the process has exited, stopping the sampler in between (waitid WNOWAIT leaves
    the zombie, so its pid cannot be reused while the sampler may still look at it)."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    done.set()
    return os.wait4(pid, 0)
