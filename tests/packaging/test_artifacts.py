"""The release artifacts, built with the documented commands (`packaging/build wheel|zipapp|deb`,
once per session, into a temporary DIST_DIR: conftest.py), then used the way a node uses them.

Slow (marker `packaging`, about two minutes in all): the builds fetch wheels from PyPI. Deselect
with `-m "not packaging"`. The .deb install test changes the machine (dpkg -i, then dpkg -P; the
system user it makes is deleted after): it runs only as root, and only where aml-netcheck is not
already installed; CI runs as root. Nothing here runs `check` or `serve`: `demo` keeps all traffic
inside the lab's namespaces (test_systemd_container.py runs them inside a container with no network)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging_support import REPO, SYSTEM_PYTHON, build, needs, run

from agent.diagnose.findings import DECLARATIONS
from agent.inputs import config
from agent.modes.systemd import message_id
from interpreters import Python, older, oldest_supported, supported

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
UNITS = ("aml-netcheck.service", "aml-netcheck-check.service", "aml-netcheck-check.timer",
         "aml-netcheck-wait-online.service")
SERVICES = [u for u in UNITS if u.endswith(".service")]
IS_ROOT = os.geteuid() == 0
HAS_LAB = IS_ROOT and bool(shutil.which("ip") and shutil.which("nft"))

pytestmark = pytest.mark.packaging


@pytest.fixture(scope="session")
def wheel_dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist-wheel")
    build("wheel", dist)
    return dist


@pytest.fixture(scope="session")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist-zipapp")
    build("zipapp", dist)
    return dist / "aml-netcheck.pyz"


# -- wheel and sdist -------------------------------------------------------------------------------

WHEEL = f"aml_netcheck-{VERSION}-py3-none-any.whl"
REPOSITORY_NAMES = ("agent", "probes", "lab")  # the checkout's top-level packages
# Imports every module of the installed package, then names any top-level module of the
# checkout's that got loaded on the way (an import the wheel's build left unmapped).
IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
import aml_netcheck
names = [m.name for m in pkgutil.walk_packages(aml_netcheck.__path__, "aml_netcheck.")]
for name in names:
    importlib.import_module(name)
print(len(names), sorted({m.partition(".")[0] for m in sys.modules} & {"agent", "probes", "lab"}))
"""


@pytest.fixture(scope="session")
def wheel_venv(wheel_dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed: a shared environment (a compute instance's conda
    environment) seen from the outside."""
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                     str(wheel_dist / WHEEL)], timeout=300)
    assert installed.returncode == 0, installed.stderr
    return venv


def test_wheel_and_sdist_carry_the_package_data(wheel_dist: Path) -> None:
    with zipfile.ZipFile(wheel_dist / WHEEL) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(f"aml_netcheck-{VERSION}.dist-info/entry_points.txt").decode()
    assert {"aml_netcheck/agent/data/requirements.toml", "aml_netcheck/agent/data/report-1.schema.json",
            "aml_netcheck/probes/__init__.py", "aml_netcheck/lab/__init__.py", "aml_netcheck/__main__.py"} <= names
    assert "aml-netcheck = aml_netcheck.agent.__main__:run" in entry_points
    with tarfile.open(wheel_dist / f"aml_netcheck-{VERSION}.tar.gz") as sdist:
        members = {m.name.partition("/")[2] for m in sdist.getmembers()}
    assert {"pyproject.toml", "README.md", "aml_netcheck/agent/data/requirements.toml"} <= members


def test_wheel_has_one_top_level_name(wheel_dist: Path) -> None:
    """Installed into a shared environment, the wheel adds one import name, aml_netcheck: it added
    agent, probes and lab, names any other distribution there may use."""
    with zipfile.ZipFile(wheel_dist / WHEEL) as archive:
        names = archive.namelist()
        info = f"aml_netcheck-{VERSION}.dist-info"
        top_level = archive.read(f"{info}/top_level.txt").decode().split()
        recorded = {line.partition(",")[0].partition("/")[0]
                    for line in archive.read(f"{info}/RECORD").decode().splitlines()}
    assert {n.partition("/")[0] for n in names} == {"aml_netcheck", info}
    assert recorded == {"aml_netcheck", info}
    assert top_level == ["aml_netcheck"]


def test_wheel_installs_into_a_fresh_venv(wheel_venv: Path, tmp_path: Path) -> None:
    python = str(wheel_venv / "bin" / "python")

    def ok(*argv: str) -> str:
        proc = run(offline(list(argv)), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    script = str(wheel_venv / "bin" / "aml-netcheck")
    assert ok(script, "--version").startswith(f"aml-netcheck {VERSION} ")
    assert ok(python, "-m", "aml_netcheck", "--version").startswith(f"aml-netcheck {VERSION} ")
    assert json.loads(ok(script, "plan", "--region", "eastus", "--format", "json"))["checks"]
    assert json.loads(ok(python, "-m", "aml_netcheck", "rules", "--region", "eastus", "--format", "json"))["nsg_rules"]
    count, loaded = ok(python, "-I", "-c", IMPORT_EVERY_MODULE).split(" ", 1)
    assert int(count) > 50 and loaded.strip() == "[]"
    for name in REPOSITORY_NAMES:
        proc = run([python, "-I", "-c", f"import {name}"], cwd=tmp_path)
        assert proc.returncode == 1 and f"ModuleNotFoundError: No module named '{name}'" in proc.stderr


def test_wheel_check_runs_in_an_empty_network(wheel_venv: Path, tmp_path: Path) -> None:
    """A real `check` from the installed wheel, in a network namespace with only its loopback:
    every endpoint unreachable, so critical (exit 2) with a full report."""
    check = run(no_network([str(wheel_venv / "bin" / "aml-netcheck"), "check", "--no-detect", "--region", "eastus",
                            "--deadline", "60", "--format", "json"]), cwd=tmp_path, timeout=120)
    assert check.returncode == 2, check.stderr
    report = json.loads(check.stdout)
    assert report["status"] == "critical" and report["checks"] and report["findings"]


@pytest.mark.lab
@pytest.mark.skipif(not HAS_LAB, reason="demo needs root, `ip` and `nft`")
def test_wheel_demo_runs_the_lab(wheel_venv: Path, tmp_path: Path) -> None:
    """demo starts `check` and the lab's servers as child interpreters by module name: under
    aml_netcheck too."""
    demo = run(offline([str(wheel_venv / "bin" / "aml-netcheck"), "demo", "--format", "json"]), cwd=tmp_path,
               timeout=300)
    assert demo.returncode == 0, demo.stderr
    assert json.loads(demo.stdout)["status"] == "ok"


# -- zipapp ------------------------------------------------------------------------------------------

def zipapp_env(tmp_path: Path) -> dict[str, str]:
    """An empty home and cache, nothing else from this environment."""
    return {"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def offline(argv: list[str]) -> list[str]:
    """argv in a new network namespace with only a down loopback: nothing can be fetched. Needs
    root (or unprivileged user namespaces); without it the test still runs, online."""
    if shutil.which("unshare") and run(["unshare", "--net", "true"]).returncode == 0:
        return ["unshare", "--net", *argv]
    return argv


def zipapp(pyz: Path, *args: str, python: str = SYSTEM_PYTHON) -> list[str]:
    return [python, "-I", str(pyz), *args]


def no_network(argv: list[str]) -> list[str]:
    """argv in a new network namespace with only its loopback (up), for `check`: unlike offline(),
    never runs it anywhere else."""
    if run(["unshare", "--net", "true"]).returncode != 0:
        pytest.skip("a real check runs only in a network namespace of its own (needs root)")
    return ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]


def each(pythons: tuple[Python, ...]) -> list[Python | None]:
    return list(pythons) or [None]


def name(python: Python | None) -> str:
    return python.name if python else "none"


def oldest_and_newest() -> list[Python | None]:
    found = supported()
    if not any(p.version == (3, 10) for p in found):
        return [None]
    return [next(p for p in found if p.version == (3, 10)), *found[-1:]] if found[-1].version > (3, 10) else [found[0]]


@pytest.fixture
def system_python() -> None:
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"{SYSTEM_PYTHON} missing")


def test_zipapp_layout_is_pure_python_plus_stable_abi(pyz: Path) -> None:
    with zipfile.ZipFile(pyz) as archive:
        names = archive.namelist()
    parts = {n.partition("/")[0] for n in names}
    assert {"__main__.py", "BUILD_ID", "common", "abi3-x86_64", "abi3-aarch64"} <= parts
    assert {f"cp3{minor}-{m}" for minor in (10, 11, 12, 13, 14) for m in ("x86_64", "aarch64")} <= parts
    # aiohttp, multidict, yarl, frozenlist, propcache, websockets: their pure-Python fallbacks.
    assert not [n for n in names if n.startswith("common/") and n.endswith(".so")]
    assert any(re.fullmatch(r"abi3-x86_64/cryptography/hazmat/bindings/_rust\.abi3\.so", n) for n in names)
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")


def test_zipapp_runs_isolated_and_offline(pyz: Path, tmp_path: Path, system_python: None) -> None:
    env = zipapp_env(tmp_path)
    version = run(offline(zipapp(pyz, "--version")), env=env, cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith(f"aml-netcheck {VERSION} ")
    (unpacked,) = (tmp_path / "cache" / "aml-netcheck").iterdir()
    assert re.fullmatch(r"[0-9a-f]{16}-cp3\d+-\w+", unpacked.name)
    assert not (tmp_path / "home").exists()  # XDG_CACHE_HOME wins over ~/.cache

    plan = run(offline(zipapp(pyz, "plan", "--region", "eastus", "--format", "json")), env=env,
               cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["checks"]


def test_zipapp_concurrent_first_starts_share_one_unpack(pyz: Path, tmp_path: Path,
                                                         system_python: None) -> None:
    env = zipapp_env(tmp_path)
    procs = [subprocess.Popen(zipapp(pyz, "--version"), env=env, cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    outputs = [(*p.communicate(timeout=120), p.returncode) for p in procs]
    assert all(rc == 0 and out.startswith(f"aml-netcheck {VERSION} ") for out, _, rc in outputs), outputs
    # One tree, no temporary directory left behind by the copies that lost the rename.
    assert len(list((tmp_path / "cache" / "aml-netcheck").iterdir())) == 1


@pytest.mark.parametrize("python", each(supported()), ids=name)
def test_zipapp_runs_on_every_installed_cpython(pyz: Path, tmp_path: Path, python: Python | None) -> None:
    """Each CPython >= 3.10 on the machine (tests/interpreters.py), the node's own python3 among
    them (Ubuntu 22.04's is 3.10): the commands that send nothing, then a real `check` in a
    network namespace with nothing but its loopback (every Azure ML endpoint unreachable: critical)."""
    if python is None:
        pytest.fail("no CPython >= 3.10 on this machine: the zipapp goes untested", pytrace=False)
    env = zipapp_env(tmp_path)

    def ok(*args: str) -> str:
        proc = run(offline(zipapp(pyz, *args, python=python.path)), env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert ok("--version").startswith(f"aml-netcheck {VERSION} ")
    assert json.loads(ok("plan", "--region", "eastus", "--format", "json"))["checks"]
    assert json.loads(ok("rules", "--region", "eastus", "--format", "json"))["nsg_rules"]
    assert "--wait" in ok("check", "--help")
    (unpacked,) = (tmp_path / "cache" / "aml-netcheck").iterdir()
    assert unpacked.name.endswith(f"-cp3{python.version[1]}-{os.uname().machine}")

    textfile = tmp_path / "metrics.prom"
    check = run(no_network(zipapp(pyz, "check", "--no-detect", "--region", "eastus", "--deadline", "60",
                                  "--format", "json", "--textfile", str(textfile), python=python.path)),
                env=env, cwd=tmp_path, timeout=120)
    assert check.returncode == 2, check.stderr
    report = json.loads(check.stdout)
    assert report["status"] == "critical" and report["checks"] and report["findings"]
    assert "aml_netcheck_status{status=\"critical\"} 1" in textfile.read_text()


def test_the_zipapp_is_tried_on_python_3_10() -> None:
    """The parametrised tests above run on what the machine has; without 3.10 they must not pass."""
    assert oldest_supported().version == (3, 10)


@pytest.mark.parametrize("python", each(older()), ids=name)
def test_zipapp_refuses_an_older_python_in_one_line(pyz: Path, tmp_path: Path, python: Python | None) -> None:
    """3.6 stopped at a SyntaxError in the bootstrap, 3.7 to 3.9 were refused: now all in one line."""
    if python is None:
        pytest.fail("no CPython 3.6-3.9 on this machine: the refusal goes untested", pytrace=False)
    proc = run(zipapp(pyz, "--version", python=python.path), env=zipapp_env(tmp_path), cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (3, "")
    assert re.fullmatch(r"aml-netcheck: error: needs CPython >= 3\.10, not Python 3\.\d+\.\d+\n", proc.stderr)


@pytest.mark.lab
@pytest.mark.skipif(not HAS_LAB, reason="demo needs root, `ip` and `nft`")
@pytest.mark.parametrize("python", oldest_and_newest(), ids=name)
def test_zipapp_demo_needs_no_network(pyz: Path, tmp_path: Path, python: Python | None) -> None:
    # The lab lives in its own namespaces, so demo runs even from a namespace with no network.
    if python is None:
        pytest.fail("no CPython 3.10 on this machine: demo goes untested on it", pytrace=False)
    demo = run(offline(zipapp(pyz, "demo", "--format", "json", python=python.path)), env=zipapp_env(tmp_path),
               cwd=tmp_path, timeout=300)
    assert demo.returncode == 0, demo.stderr
    assert json.loads(demo.stdout)["status"] == "ok"


# -- .deb ---------------------------------------------------------------------------------------------

def test_deb_control_files_and_contents(deb: Path) -> None:
    field = {name: run(["dpkg-deb", "-f", str(deb), name]).stdout.strip()
             for name in ("Package", "Version", "Architecture", "Depends", "Maintainer", "Description")}
    assert field["Package"] == "aml-netcheck"
    assert field["Version"] == f"{VERSION}-1"
    assert field["Architecture"] == run(["dpkg", "--print-architecture"]).stdout.strip()
    minor = run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[1])"]).stdout.strip()
    depends = [d.strip() for d in field["Depends"].split(",")]
    assert depends[:2] == [f"python3 (>= 3.{minor}~)", f"python3 (<< 3.{int(minor) + 1}~)"]
    # dpkg-shlibdeps' word on what the compiled modules link; sysusers for the units' user
    assert re.fullmatch(r"libc6 \(>= 2\.\d+\)", depends[2]), depends
    assert depends[-4:] == ["iproute2", "nftables", "procps",
                            "systemd | systemd-standalone-sysusers | systemd-sysusers"]
    assert field["Maintainer"] and field["Description"]

    info = run(["dpkg-deb", "-I", str(deb)]).stdout
    for script in ("postinst", "prerm", "postrm"):
        assert re.search(rf"^\s+\d+ bytes,\s+\d+ lines\s+\*\s+{script}\s", info, re.MULTILINE), info
    control_tar = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True,
                                 check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(control_tar)) as control:
        member = control.extractfile("./conffiles")
        assert member is not None and member.read().decode().split() == ["/etc/aml-netcheck/config.toml"]

    listing = run(["dpkg-deb", "-c", str(deb)]).stdout
    paths = {line.split()[5] for line in listing.splitlines()}
    assert {f"./lib/systemd/system/{u}" for u in UNITS} <= paths
    assert {"./etc/aml-netcheck/config.toml", "./usr/bin/aml-netcheck",
            "./usr/lib/aml-netcheck/aml_netcheck/agent/__main__.py",
            "./usr/lib/sysusers.d/aml-netcheck.conf", "./usr/lib/tmpfiles.d/aml-netcheck.conf",
            "./usr/lib/systemd/catalog/aml-netcheck.catalog", "./usr/share/lintian/overrides/aml-netcheck",
            "./usr/share/doc/aml-netcheck/copyright",
            "./usr/share/doc/aml-netcheck/changelog.Debian.gz", "./usr/share/man/man1/aml-netcheck.1.gz"} <= paths
    assert re.search(r"^-rwxr-xr-x root/root .* \./usr/bin/aml-netcheck$", listing, re.MULTILINE)
    # Only what runs: no console scripts of the dependencies, no test extension, no bytecode
    # (postinst compiles it), nothing of the build machine.
    assert not [p for p in paths if p.startswith(("./usr/lib/aml-netcheck/bin/", "./opt/"))
                or "_testcapi" in p or "__pycache__" in p]
    assert "build/deb/root" not in listing


def test_deb_is_lintian_clean(deb: Path) -> None:
    """No lintian error or warning: the tags the package keeps are overridden, each with its
    reason, in packaging/lintian-overrides (shipped as /usr/share/lintian/overrides/aml-netcheck)."""
    needs("lintian")
    result = run(["lintian", "--no-cfg", "--fail-on", "error,warning", str(deb)], timeout=600)
    tags = [line for line in result.stdout.splitlines() if re.match(r"[EW]: ", line)]
    assert (result.returncode, tags) == (0, []), result.stdout + result.stderr


def test_deb_catalog_explains_every_message_id(deb_tree: Path, tmp_path: Path) -> None:
    """journald accepts the shipped catalog (`journalctl --update-catalog`, which systemd's dpkg
    trigger runs on installation) and it has an entry for the MESSAGE_ID of every finding code."""
    needs("journalctl")
    root = tmp_path / "root"
    shutil.copytree(deb_tree / "usr/lib/systemd/catalog", root / "usr/lib/systemd/catalog")
    updated = run(["journalctl", f"--root={root}", "--update-catalog"])
    assert (updated.returncode, updated.stderr) == (0, "")
    listed = run(["journalctl", f"--root={root}", "--list-catalog"]).stdout
    subjects = dict(line.split(" ", 1) for line in listed.splitlines())
    expected = {message_id(code.value): code.value for code in DECLARATIONS}
    assert set(subjects) == set(expected)
    for mid, code in expected.items():
        assert subjects[mid].startswith(f"aml-netcheck: aml-netcheck finding {code}: "), subjects[mid]


def executable_stack(path: Path) -> bool:
    """Whether a 64-bit little-endian ELF object asks for an executable stack (PT_GNU_STACK with
    PF_X): dlopen() would then mprotect the stack executable, which MemoryDenyWriteExecute=
    forbids."""
    data = path.read_bytes()
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, p_flags = struct.unpack_from("<II", data, phoff + i * phentsize)
        if p_type == 0x6474E551:  # PT_GNU_STACK
            return bool(p_flags & 1)
    return True  # no PT_GNU_STACK: the loader assumes an executable stack


def test_deb_compiled_modules_suit_memory_deny_write_execute(deb_tree: Path) -> None:
    objects = list((deb_tree / "usr/lib/aml-netcheck").rglob("*.so"))
    assert objects
    assert [o.name for o in objects if executable_stack(o)] == []


def test_deb_installs_runs_demo_and_purges_clean(deb: Path) -> None:
    if not IS_ROOT:
        pytest.skip("dpkg -i needs root (CI runs as root)")
    if not HAS_LAB:
        pytest.skip("demo needs `ip` and `nft`")
    if Path("/usr/lib/aml-netcheck").exists() or run(["dpkg", "-s", "aml-netcheck"]).returncode == 0:
        pytest.skip("aml-netcheck is already installed on this machine: not touching it")
    leftovers = ["/usr/lib/aml-netcheck", "/etc/aml-netcheck", "/usr/bin/aml-netcheck",
                 "/var/lib/aml-netcheck", "/run/aml-netcheck",
                 *(f"/lib/systemd/system/{u}" for u in UNITS)]
    had_user = run(["getent", "passwd", "aml-netcheck"]).returncode == 0
    try:
        installed = run(["dpkg", "-i", str(deb)], timeout=300)
        assert installed.returncode == 0, installed.stdout + installed.stderr
        version = run(["/usr/bin/aml-netcheck", "--version"])
        assert version.stdout.startswith(f"aml-netcheck {VERSION} "), version.stderr
        demo = run(["/usr/bin/aml-netcheck", "demo", "--format", "json"], timeout=300, cwd=Path("/"))
        assert demo.returncode == 0, demo.stderr
        assert json.loads(demo.stdout)["status"] == "ok"
    finally:
        purged = run(["dpkg", "-P", "aml-netcheck"], timeout=300)
        if not had_user:  # the system user postinst made stays on purge, as Debian's do: not here
            run(["userdel", "aml-netcheck"])
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert [p for p in leftovers if os.path.lexists(p)] == []


# -- systemd units ----------------------------------------------------------------------------------

def test_units_verify_against_the_package(deb_tree: Path, tmp_path: Path) -> None:
    """`systemd-analyze verify` checks that every Exec*= binary exists, so it runs with --root on
    the unpacked package (which provides /usr/bin/aml-netcheck) plus this machine's systemd units
    (the targets the units order against), sh and kill(1) (ExecReload=; kill from procps, a Depends)."""
    needs("systemd-analyze", "kill", "sh")
    root = tmp_path / "root"
    shutil.copytree(deb_tree, root, symlinks=True)
    shutil.copytree("/lib/systemd/system", root / "lib/systemd/system", symlinks=True, dirs_exist_ok=True)
    (root / "bin").mkdir()
    for tool in ("kill", "sh"):
        shutil.copy2(shutil.which(tool) or "", root / "bin" / tool)
    verify = run(["systemd-analyze", "verify", "--man=no", f"--root={root}", *UNITS])
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")

    # The check is real: without the package's binary the same verification fails.
    (root / "usr/bin/aml-netcheck").unlink()
    assert run(["systemd-analyze", "verify", "--man=no", f"--root={root}", UNITS[0]]).returncode != 0


@pytest.mark.parametrize("unit", SERVICES)
def test_unit_exposure_is_at_most_2(unit: str) -> None:
    needs("systemd-analyze")
    result = run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                  str(REPO / "systemd" / unit)])
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def test_timer_service_can_fire_more_than_once() -> None:
    # RemainAfterExit=yes on the timer's oneshot would keep it "active": the timer fires once.
    text = (REPO / "systemd/aml-netcheck-check.service").read_text()
    assert not re.search(r"^RemainAfterExit=", text, re.MULTILINE)


# -- shipped configuration and scripts ----------------------------------------------------------

def test_default_config_is_empty_and_its_examples_are_valid() -> None:
    path = REPO / "packaging" / "config.toml"
    assert config.load(path) == config.Config()
    examples = config.parse(tomllib.loads(re.sub(r"(?m)^# ", "", path.read_text())))
    assert examples.context and examples.endpoints and examples.policy.blocked


def test_setup_script_is_valid_shell() -> None:
    result = run(["bash", "-n", str(REPO / "packaging" / "setup-script.sh")])
    assert result.returncode == 0, result.stderr


def test_setup_script_warns_when_it_skips_the_check(tmp_path: Path) -> None:
    """An instance whose only python3 is too old: the check is skipped (the instance must not fail
    for it), with a warning in the setup log. Before, one plain line on stdout, easy to miss."""
    if not older():
        pytest.fail("no CPython 3.6-3.9 on this machine: the skip goes untested", pytrace=False)
    python = older()[-1]
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python3").symlink_to(python.path)
    proc = run(["/bin/bash", str(REPO / "packaging" / "setup-script.sh")],
               env={"PATH": str(tmp_path / "bin"), "HOME": str(tmp_path)}, cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "")
    version = ".".join(map(str, python.version))
    assert re.fullmatch(rf"aml-netcheck-setup: warning: network check skipped: no Python >= 3\.10 on this instance "
                        rf"\(python3: Python {re.escape(version)}\.\d+\); set AML_NETCHECK_PYTHON to one\n",
                        proc.stderr)
