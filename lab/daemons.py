"""Real third-party servers (squid, nginx) run by the lab's server process in the az namespace.

Each runs in the foreground as a child of lab.servers, is waited for until its port accepts, and
is stopped with it; if the server process dies outright, lab.netns kills whatever is left in the
namespace at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path

START_TIMEOUT = 15.0
STOP_TIMEOUT = 2.0
_POLL = 0.02


class DaemonFailed(RuntimeError):
    """A server exited or never accepted on its port: the message carries its log's last lines."""


async def start(name: str, argv: list[str], address: str, port: int, log: Path) -> asyncio.subprocess.Process:
    """Start argv (its output to log) and return once address:port accepts a connection."""
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.returncode is not None:
            raise DaemonFailed(f"{name} exited with {process.returncode}: {_tail(log)}")
        try:
            _, writer = await asyncio.open_connection(address, port)
        except OSError:
            if time.monotonic() > deadline:
                await stop(process)
                raise DaemonFailed(f"{name} did not listen on {address}:{port}: {_tail(log)}") from None
            await asyncio.sleep(_POLL)
            continue
        writer.close()
        return process


async def run(argv: list[str], **options: object) -> None:
    """Run a preparation step (a helper that sets up a server's files) to completion."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        **options)  # type: ignore[arg-type]
    output, _ = await process.communicate()
    if process.returncode:
        raise DaemonFailed(f"{argv[0]} exited with {process.returncode}: {output.decode(errors='replace')[-300:]}")


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it is still there after STOP_TIMEOUT."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
    return " | ".join(lines) or "no output"
