"""A real samba (smbd) serving SMB, for the lab's 445 and for the smb probe's tests: its config,
state and log all under one directory, nothing in the system's /etc/samba or /var/lib/samba.

No share is defined: the agent sends only NEGOTIATE, which needs none. Ready once the log says
"waiting for connections" (log level 2), i.e. after every listening socket is bound."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

READY_TIMEOUT = 20.0
_READY = "waiting for connections"
_DIRS = ("private", "lock", "state", "cache", "pid", "ncalrpc")
PROTOCOLS = ("SMB2_02", "SMB2_10", "SMB3_00", "SMB3_02", "SMB3_11")  # `server max protocol` values


class SambaUnavailable(RuntimeError):
    """smbd is not installed, or did not start."""


BINARY = "/usr/sbin/smbd"
PACKAGE = "samba"


def installed() -> bool:
    return os.access(BINARY, os.X_OK)


def configure(root: Path, *, port: int = 445, max_protocol: str = "SMB3_11", loopback: bool = False) -> Path:
    """Write smb.conf and its directories under `root`; `loopback`: listen on lo only (the tests),
    otherwise on every address (the lab's az namespace answers for whole networks)."""
    if max_protocol not in PROTOCOLS:
        raise ValueError(f"server max protocol {max_protocol!r} is not one of {', '.join(PROTOCOLS)}")
    for name in _DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
    options = {
        "server role": "standalone server",
        "smb ports": str(port),
        "disable netbios": "yes",
        "server min protocol": "SMB2_02",
        "server max protocol": max_protocol,
        **({"interfaces": "lo", "bind interfaces only": "yes"} if loopback else {"bind interfaces only": "no"}),
        "private dir": str(root / "private"),
        "lock directory": str(root / "lock"),
        "state directory": str(root / "state"),
        "cache directory": str(root / "cache"),
        "pid directory": str(root / "pid"),
        "ncalrpc dir": str(root / "ncalrpc"),
        "log file": str(root / "smbd.log"),
        "log level": "2",  # logs the line `start` waits for
        "max log size": "1000",
        "load printers": "no",
        "printing": "bsd",
        "printcap name": "/dev/null",
        "disable spoolss": "yes",
    }
    config = root / "smb.conf"
    config.write_text("[global]\n" + "".join(f"  {key} = {value}\n" for key, value in options.items()))
    return config


def command(config: Path) -> list[str]:
    """smbd in the foreground (its owner stops it), making no process group of its own: `start` gives it
    a session, since a stopping smbd signals its whole process group."""
    return [BINARY, "--foreground", "--no-process-group", f"--configfile={config}"]


def start(config: Path, wrap: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Start smbd (under `wrap`, e.g. `ip netns exec NS`) and wait until it listens."""
    if not installed():
        raise SambaUnavailable("smbd is not installed (apt-get install samba)")
    log = config.parent / "smbd.log"
    log.unlink(missing_ok=True)
    process = subprocess.Popen([*wrap, *command(config)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    end = time.monotonic() + READY_TIMEOUT
    while not (log.exists() and _READY in log.read_text(errors="replace")):
        if process.poll() is not None or time.monotonic() > end:
            stop(process)
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise SambaUnavailable("smbd did not start: " + (" | ".join(tail) or "no log"))
        time.sleep(0.02)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (smbd's parent then ends its children), SIGKILL if it lingers."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
