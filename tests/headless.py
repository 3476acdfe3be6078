"""A real browser for the html report's tests: Debian's chromium, headless, driven over the DevTools
protocol on a pipe (--remote-debugging-pipe: no port, no socket), in a network namespace of its
own with nothing in it (not even loopback up), so the page it renders can fetch nothing from
anywhere; the Network domain's events say whether it tried. Screenshots come back as PNG, decoded
here (zlib and PNG's row filters) into pixels to look at."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe")
WIDTH, HEIGHT = 1200, 900
HANG = 120  # seconds of silence after which chromium is taken to hang: a bound on a stuck test, not a timing


def chromium() -> str:
    """The browser, or a failed test saying how to get it: CI installs it through ./dev."""
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium is not installed: the html report's tests render it in a real browser; "
                    "./dev installs it (apt-get install --no-install-recommends chromium)", pytrace=False)
    return found


def _isolated() -> list[str]:
    """A new, empty network namespace for the browser (as root; else inside a user namespace)."""
    return ["unshare", "--net", "--"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--net", "--"]


@dataclass
class Image:
    width: int
    height: int
    pixels: bytes = field(repr=False)  # RGB, row after row
    png: bytes = field(default=b"", repr=False)  # the screenshot as the browser gave it

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        at = (y * self.width + x) * 3
        return self.pixels[at], self.pixels[at + 1], self.pixels[at + 2]


def decode_png(data: bytes) -> Image:
    """An 8-bit RGB or RGBA, non-interlaced PNG (what chromium's screenshots are) as RGB pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    at, chunks, header = 8, [], b""
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        at += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(line)
        previous = line
    rgb = bytearray()
    for line in rows:
        rgb += line if channels == 3 else bytes(b for i, b in enumerate(line) if i % 4 != 3)
    return Image(width, height, bytes(rgb), data)


@dataclass
class Page:
    """A page loaded in the browser: what it requested, and what a script of the test finds in it."""

    browser: Browser
    session: str
    requests: list[str] = field(default_factory=list)  # every URL the page asked for, the document first

    def evaluate(self, expression: str) -> Any:
        """A JavaScript expression's value, evaluated by the test (the page itself runs no script)."""
        answer = self.browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                   session=self.session)
        assert "exceptionDetails" not in answer, answer
        return answer["result"].get("value")

    def screenshot(self) -> Image:
        shot = self.browser.call("Page.captureScreenshot", {"format": "png"}, session=self.session)
        return decode_png(base64.b64decode(shot["data"]))


class Browser:
    def __init__(self, process: subprocess.Popen[bytes], commands: int, answers: int, log: Path) -> None:
        self._process, self._commands, self._answers, self._log = process, commands, answers, log
        self._buffer = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: Mapping[str, Any] | None = None, *, session: str | None = None) -> Any:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": dict(params or {})}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self._next:
                assert "error" not in answer, (method, answer["error"])
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str) -> dict[str, Any]:
        """The first event `method` not yet seen."""
        while True:
            for index, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(index)
            self.events.append(self._read())

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if not select.select([self._answers], [], [], HANG)[0]:
                raise AssertionError(f"chromium said nothing for {HANG}s: {self._said()}")
            chunk = os.read(self._answers, 1 << 16)
            if not chunk:
                raise AssertionError(f"chromium ended (exit {self._process.wait()}): {self._said()}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)  # type: ignore[no-any-return]

    def _said(self) -> str:
        return self._log.read_text(errors="replace")[-2000:]

    def open(self, path: Path) -> Page:
        """Load a local file (file://) in a new tab of WIDTH x HEIGHT CSS pixels at scale 1, recording
        every request it makes, and wait until it has loaded."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}, session=session)
        self.events.clear()
        self.call("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        self.wait_for("Page.loadEventFired")
        page.requests = [e["params"]["request"]["url"] for e in self.events
                         if e.get("method") == "Network.requestWillBeSent"]
        return page


@contextmanager
def browser() -> Iterator[Browser]:
    """Chromium, headless, with a fresh profile, in an empty network namespace, on a DevTools pipe."""
    executable = chromium()
    commands_read, commands_write = os.pipe()
    answers_read, answers_write = os.pipe()

    def onto_3_and_4() -> None:  # the pipe's ends where --remote-debugging-pipe looks for them
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_read, answers_write)]  # 3 or 4 may be one
        os.dup2(high[0], 3)
        os.dup2(high[1], 4)

    with tempfile.TemporaryDirectory(prefix="aml-netcheck-chromium-") as work:
        profile, log = Path(work) / "profile", Path(work) / "stderr"
        with log.open("wb") as stderr:
            process = subprocess.Popen([*_isolated(), executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                       stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                                       preexec_fn=onto_3_and_4, pass_fds=(3, 4))
        os.close(commands_read)
        os.close(answers_write)
        try:
            yield Browser(process, commands_write, answers_read, log)
        finally:
            os.close(commands_write)
            os.close(answers_read)
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
