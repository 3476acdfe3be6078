"""Real third-party servers (squid, nginx) run by the lab's server process in the az namespace.

Each runs in the foreground as a child of lab.servers, is waited for until its port accepts, and
is stopped with it; if the server process dies outright, lab.netns kills whatever is left in the
namespace at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from probes import _compat

START_TIMEOUT = 15.0
STOP_TIMEOUT = 2.0
_POLL = 0.02


class DaemonFailed(RuntimeError):
    """A server exited or never accepted on its port: the message carries its log's last lines."""


@dataclass(frozen=True, slots=True)
class Daemon:
    name: str
    process: asyncio.subprocess.Process
    stop_signal: signal.Signals
    leftovers: str | None  # a glob of what it leaves behind outside the lab's work directory

    async def stop(self) -> None:
        """stop_signal, then SIGKILL if it is still there after STOP_TIMEOUT; then its leftovers."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(self.stop_signal)
            try:
                async with _compat.timeout(STOP_TIMEOUT):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        for path in glob.glob(self.leftovers) if self.leftovers else ():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


async def start(name: str, argv: list[str], address: str, port: int, log: Path, *,
                stop_signal: signal.Signals = signal.SIGTERM, leftovers: str | None = None) -> Daemon:
    """Start argv (its output to log) and return once address:port accepts a connection."""
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    daemon = Daemon(name, process, stop_signal, leftovers)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.returncode is not None:
            raise DaemonFailed(f"{name} exited with {process.returncode}: {_tail(log)}")
        try:
            _, writer = await asyncio.open_connection(address, port)
        except OSError:
            if time.monotonic() > deadline:
                await daemon.stop()
                raise DaemonFailed(f"{name} did not listen on {address}:{port}: {_tail(log)}") from None
            await asyncio.sleep(_POLL)
            continue
        writer.close()
        return daemon


async def run(argv: list[str], *, user: str | None = None) -> None:
    """Run a preparation step (a helper that sets up a server's files) to completion, as user."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, user=user)
    output, _ = await process.communicate()
    if process.returncode:
        raise DaemonFailed(f"{argv[0]} exited with {process.returncode}: {output.decode(errors='replace')[-300:]}")


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
    return " | ".join(lines) or "no output"
