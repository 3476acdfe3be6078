"""The CPython interpreters on this machine, for the tests that run the agent on each supported
version (3.10 and later) and on older ones (which must be refused in one line).

They are looked for where the project's machines keep them: pyenv's versions ($PYENV_ROOT,
default ~/.pyenv; the machines that run the suite, CI's included, are of one kind, whose image has
/root/.pyenv with 2.7 and 3.6 to 3.13) and Debian's /usr/bin/python3.N. None can be installed
by ./dev: `pyenv install` builds from python.org's sources, which CI cannot reach, and Debian 12
packages only 3.11. So a machine without 3.10 fails the tests that need it, saying so, rather
than passing them untested."""

from __future__ import annotations

import functools
import glob
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

OLDEST = (3, 10)  # pyproject.toml's requires-python
REFUSED = (3, 6)  # from here up to OLDEST an older Python is refused in one line (f-strings are 3.6's)
# Every version's own syntax: 2.7 and 3.6 must answer too.
_PROBE = ("import platform, sys; sys.stdout.write(' '.join([platform.python_implementation(), "
          "str(sys.version_info[0]), str(sys.version_info[1]), getattr(sys, 'abiflags', '')]))")


@dataclass(frozen=True, slots=True)
class Python:
    path: str
    version: tuple[int, int]

    @property
    def name(self) -> str:
        return f"{self.version[0]}.{self.version[1]}:{self.path}"


def _candidates() -> list[str]:
    pyenv = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    found = glob.glob(f"{pyenv}/versions/*/bin/python[23]") + glob.glob("/usr/bin/python3.[0-9]*")
    return [p for p in found if not p.endswith("-config")]


@functools.cache
def installed() -> tuple[Python, ...]:
    """Each CPython once (by its real path), oldest first. Free-threaded builds are left out: the
    zipapp ships no build for them."""
    pythons: dict[str, Python] = {}
    for path in _candidates():
        real = os.path.realpath(path)
        if real in pythons:
            continue
        try:
            out = subprocess.run([path, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=30,
                                 check=True).stdout.split()
        except (OSError, subprocess.SubprocessError):
            continue
        if len(out) >= 3 and out[0] == "CPython" and "t" not in out[3:4]:
            pythons[real] = Python(path, (int(out[1]), int(out[2])))
    return tuple(sorted(pythons.values(), key=lambda p: (p.version, p.path)))


def supported() -> tuple[Python, ...]:
    return tuple(p for p in installed() if p.version >= OLDEST)


def older() -> tuple[Python, ...]:
    return tuple(p for p in installed() if REFUSED <= p.version < OLDEST)


def oldest_supported() -> Python:
    """The 3.10 the zipapp and the code must run on; fails (never skips) when there is none."""
    for python in supported():
        if python.version == OLDEST:
            return python
    found = ", ".join(p.name for p in installed()) or "none"
    pytest.fail(f"no CPython {OLDEST[0]}.{OLDEST[1]} on this machine ($PYENV_ROOT/versions and /usr/bin have: {found}):"
                f" the oldest supported Python would go untested. Install it (`pyenv install {OLDEST[0]}.{OLDEST[1]}`)",
                pytrace=False)
