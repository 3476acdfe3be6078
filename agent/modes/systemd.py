"""The two systemd interfaces the daemon speaks, without a dependency: sd_notify datagrams
(READY, STATUS, WATCHDOG, STOPPING) and journald's native protocol for structured entries.
Both are a few lines over AF_UNIX datagram sockets."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import uuid
from collections.abc import Mapping

JOURNAL_SOCKET = "/run/systemd/journal/socket"
_MESSAGE_ID_NAMESPACE = uuid.UUID("6c0c3a5e-2f43-4b5e-9a61-8d7b2e1f0a93")  # fixed forever: IDs are API


class Notifier:
    """sd_notify(3). Without $NOTIFY_SOCKET (not under systemd) every call is a no-op."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval: float | None = int(usec) / 2_000_000 if watched else None  # half, as advised

    def send(self, **fields: str) -> None:
        if not self._address:
            return
        payload = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)  # a full receiver queue must never stall the event loop
            with contextlib.suppress(OSError):  # systemd went away or is not reading: nothing to tell
                sock.sendto(payload, self._address)


def message_id(code: str) -> str:
    """A stable 128-bit MESSAGE_ID per finding code, so `journalctl MESSAGE_ID=...` finds them all."""
    return uuid.uuid5(_MESSAGE_ID_NAMESPACE, code).hex


class Journal:
    """Structured entries to journald when the process runs under it ($JOURNAL_STREAM), one
    readable line on stderr otherwise."""

    def __init__(self, environ: Mapping[str, str] | None = None, socket_path: str = JOURNAL_SOCKET) -> None:
        env = os.environ if environ is None else environ
        self._path = socket_path if env.get("JOURNAL_STREAM") and os.path.exists(socket_path) else None

    def send(self, message: str, priority: int, **fields: str) -> None:
        if self._path is None:
            extra = " ".join(f"{k.lower()}={v}" for k, v in fields.items() if k != "MESSAGE_ID")
            print(f"<{priority}>{message}" + (f" [{extra}]" if extra else ""), file=sys.stderr, flush=True)
            return
        entry = {"MESSAGE": message, "PRIORITY": str(priority), "SYSLOG_IDENTIFIER": "aml-netcheck", **fields}
        payload = b"".join(_field(k, v) for k, v in entry.items())
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            try:
                sock.sendto(payload, self._path)
            except OSError:
                print(f"<{priority}>{message}", file=sys.stderr, flush=True)


def _field(key: str, value: str) -> bytes:
    data = value.encode()
    if b"\n" in data:  # the native protocol's binary form: name, newline, 64-bit length, data
        return key.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
    return key.encode() + b"=" + data + b"\n"
