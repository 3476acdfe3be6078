"""Bootstrap of the aml-netcheck zipapp (stored as __main__.py in aml-netcheck.pyz).

The archive holds every dependency for every supported interpreter (CPython 3.10 to 3.14):
pure-Python wheels under common/, psutil and cryptography (stable-ABI wheels, one per architecture) under
abi3-<machine>/, and cffi and pydantic-core, which only ship per-version builds, under
cp3XY-<machine>/. On first run the parts this interpreter needs are unpacked into one directory,
<cache>/<build id>-cp3XY-<machine>, which is then put first on sys.path: compiled modules cannot be
imported from a zip, and an unpacked tree lets CPython cache bytecode so later starts are fast.
The unpack goes to a temporary directory that is renamed into place, so a reader never sees half
a tree and two copies starting at once both end up using the one that won the rename.

Standard library only, and nothing here may need the network: this file runs before any
dependency can be imported. It is the first code any Python runs from the archive, so an older
one (3.6 to 3.9) gets one line and exit 3 instead of a traceback: the version is checked before
anything is imported, and the file's syntax is that of Python 3.6 (no `from __future__ import
annotations`; the annotations below are evaluated only on 3.10 and later).
"""

import sys

if sys.version_info < (3, 10):  # noqa: UP036 (the check is for the Pythons the target excludes)
    sys.stderr.write("aml-netcheck: error: needs CPython >= 3.10, not Python " + sys.version.split()[0] + "\n")
    raise SystemExit(3)

import errno
import os
import platform
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

EXIT_UNKNOWN = 3  # the agent's "could not decide" code, so scripts treat it like any other failure
MIN_GLIBC = (2, 17)  # manylinux2014, the oldest tag the bundled wheels carry


def fail(message: str) -> NoReturn:
    print(f"aml-netcheck: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_UNKNOWN)


def glibc() -> tuple[int, int] | None:
    try:
        name, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
    except (ValueError, OSError):  # not glibc (musl) or no such confstr name
        return None
    major, _, minor = version.partition(".")
    return (int(major), int(minor)) if name == "glibc" and major.isdigit() and minor.isdigit() else None


def cache_roots() -> Iterator[Path]:
    """Where to unpack, best first: $XDG_CACHE_HOME, ~/.cache, then /var/cache for root services
    without a home."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        yield Path(xdg) / "aml-netcheck"
    home = os.environ.get("HOME", "")
    if os.path.isabs(home):
        yield Path(home) / ".cache" / "aml-netcheck"
    yield Path("/var/cache/aml-netcheck")


def usable(root: Path) -> bool:
    """A directory this user owns and nobody else may write: code is loaded from it."""
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = root.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022 and os.access(root, os.W_OK | os.X_OK)


def unpack(archive: zipfile.ZipFile, parts: list[str], root: Path, final: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        for info in archive.infolist():
            part, _, rest = info.filename.partition("/")
            if part not in parts or not rest or info.is_dir():
                continue
            target = tmp / rest
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        os.rename(tmp, final)  # atomic: the tree appears whole or not at all
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not final.is_dir():
            raise
        # Another copy started at the same time and renamed its identical tree first: use it.


def site_dir(pyz: Path) -> Path:
    if sys.implementation.name != "cpython":
        fail(f"needs CPython >= 3.10, not {platform.python_implementation()} {platform.python_version()}")
    machine = platform.machine()
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}-{machine}"
    with zipfile.ZipFile(pyz) as archive:
        parts = ["common", f"abi3-{machine}", tag]
        shipped = {name.partition("/")[0] for name in archive.namelist()}
        libc = glibc()
        if sys.platform != "linux" or libc is None or libc < MIN_GLIBC or not set(parts) <= shipped:
            builds = ", ".join(sorted(p for p in shipped if p.startswith("cp")))
            fail(f"this aml-netcheck.pyz has no build for {tag} ({sys.platform}, "
                 f"glibc {'.'.join(map(str, libc)) if libc else 'none'}); it has {builds} "
                 f"(Linux, glibc >= {'.'.join(map(str, MIN_GLIBC))})")
        build_id = archive.read("BUILD_ID").decode().strip()
        for root in cache_roots():
            if not usable(root):
                continue
            final = root / f"{build_id}-{tag}"
            if not final.is_dir():
                unpack(archive, parts, root, final)
            return final
    fail("no writable cache directory: set XDG_CACHE_HOME or HOME to a writable directory")


def main() -> None:
    pyz = Path(__file__).resolve().parent  # __file__ is <archive>/__main__.py
    site = site_dir(pyz)
    sys.path[0] = str(site)  # instead of the archive itself
    # Child interpreters (the lab's servers, `demo` running `check` in its namespace) are started
    # as `python3 -m ...` and find the same packages through PYTHONPATH.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    from aml_netcheck.agent.__main__ import run

    run()


if __name__ == "__main__":
    main()
