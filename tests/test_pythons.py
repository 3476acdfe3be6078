"""The code on every Python it meets: CPython 3.10 (Ubuntu 22.04's python3, under Azure ML's images
and most attached VMs) runs every module and passes the unit tests; an older Python is refused in
one line, never with a traceback. The suite itself runs on the venv's Python (3.11 or later), so
3.11-only code would pass everything else: ruff (target py310) and mypy (python_version 3.10)
catch the syntax and the standard library's names, these tests what differs at run time.

The 3.10 interpreter comes from the machine (tests/interpreters.py says where, and fails when
there is none); the dependencies are installed from PyPI once, with its own pip, into a cached
venv ($AML_NETCHECK_TEST_CACHE, default /var/cache/aml-netcheck-tests/), one per requirement
set. The zipapp on every installed CPython is tests/packaging/test_artifacts.py's."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from interpreters import Python, older, oldest_supported

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("AML_NETCHECK_TEST_CACHE", "/var/cache/aml-netcheck-tests"))
PACKAGES = ("agent", "probes", "lab")
REFUSAL = re.compile(r"aml-netcheck: error: needs Python >= 3\.10, not Python 3\.\d+\.\d+\n")


def requirements(*extras: str) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    return wanted


def venv(python: Python, wanted: list[str]) -> str:
    """The interpreter of a venv of `python` with `wanted` installed (its own pip resolves the
    markers: tomli on 3.10), made once per interpreter and requirement set; the code itself comes
    from this checkout (PYTHONPATH, pytest's pythonpath), as in the suite's own venv. A venv, not
    a directory on PYTHONPATH: the lab starts its servers with sys.executable and a PYTHONPATH of
    its own. Made at a temporary path renamed into place (a venv's scripts name its path, so it is
    made at the final path's sibling and checked by its marker file)."""
    key = hashlib.sha256("\n".join([os.path.realpath(python.path), *wanted]).encode()).hexdigest()[:16]
    final = CACHE / f"venv-cp{python.version[0]}{python.version[1]}-{key}"
    if (final / "ready").is_file():
        return str(final / "bin" / "python")
    CACHE.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(final, ignore_errors=True)
    steps = [[python.path, "-m", "venv", str(final)],
             [str(final / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              "--only-binary=:all:", *wanted]]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0:
            shutil.rmtree(final, ignore_errors=True)
            pytest.fail(f"{' '.join(step[:4])} for {python.name} failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    (final / "ready").touch()
    return str(final / "bin" / "python")


def with_path(*paths: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PYTHONDONTWRITEBYTECODE": "1"} | ({"PYTHONPATH": os.pathsep.join(map(str, paths))} if paths else {})


def modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


# Run by the Python under test: imports each module, then reads every str- or int-valued enum the
# modules define, whose str() and format() must be the value as on 3.11 (3.10's str() of a
# str-mixin enum is "Class.NAME").
IMPORT_ALL = """
import enum, importlib, json, sys
failed, enums = {}, []
for name in json.loads(sys.argv[1]):
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        failed[name] = type(exc).__name__ + ": " + str(exc)
        continue
    for value in vars(module).values():
        if isinstance(value, enum.EnumMeta) and value.__module__ == name and issubclass(value, (str, int)):
            enums += [[name + "." + m.__class__.__name__ + "." + m.name, str(m), format(m), "%s" % m, str(m.value)]
                      for m in value]
print(json.dumps({"failed": failed, "enums": enums}))
"""


def test_every_module_imports_on_python_3_10() -> None:
    interpreter = venv(oldest_supported(), requirements())
    wanted = modules()
    proc = subprocess.run([interpreter, "-c", IMPORT_ALL, json.dumps(wanted)], cwd=ROOT, env=with_path(ROOT),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout)
    assert seen["failed"] == {}
    assert {"agent.diagnose.findings", "probes.reasons", "lab.servers"} <= set(wanted)
    assert len(seen["enums"]) > 100  # Code, Reason, Status, Layer, Severity, ... all read
    assert [e for e in seen["enums"] if e[1:4] != [e[4]] * 3] == []


def test_the_unit_tests_pass_on_python_3_10() -> None:
    """The same unit tests, on 3.10: what differs there at run time (urlsplit's checks, what
    datetime.fromisoformat reads, asyncio's TimeoutError) fails here."""
    # ruff and mypy check the sources once, in the suite's venv (tests/test_static.py)
    interpreter = venv(oldest_supported(), [r for r in requirements("test") if not r.startswith(("ruff", "mypy"))])
    proc = subprocess.run([interpreter, "-m", "pytest", "tests/unit", "-q", "-p", "no:cacheprovider", "-x"],
                          cwd=ROOT, env=with_path(), capture_output=True, text=True, timeout=1200, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


@pytest.mark.parametrize("python", older() or [None], ids=lambda p: p.name if p else "none")
@pytest.mark.parametrize("argv", [["--version"], ["check", "--help"]], ids=" ".join)
def test_an_older_python_gets_one_line_and_exit_3(python: Python | None, argv: list[str]) -> None:
    """3.6 raised a SyntaxError at `from __future__ import annotations`, 3.7 to 3.9 an ImportError;
    agent/__init__.py, which runs first, checks the version before anything else."""
    if python is None:
        pytest.fail("no CPython 3.6-3.9 on this machine (pyenv's are looked for): the refusal goes untested",
                    pytrace=False)
    proc = subprocess.run([python.path, "-m", "agent", *argv], cwd=ROOT, env=with_path(ROOT),
                          capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout) == (3, "")
    assert REFUSAL.fullmatch(proc.stderr), proc.stderr
