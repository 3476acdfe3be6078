"""Assembles dist/aml-netcheck.pyz: the agent and every dependency in one file that runs with the
node's own python3 (CPython 3.10 to 3.14) and never touches the network. Called by `packaging/build
zipapp`; zipapp_main.py (the bootstrap) explains the layout it unpacks.

The dependency set is resolved once, by pip running on the oldest supported CPython (--resolve-python:
pip evaluates environment markers on the interpreter it runs on, and tomli and async-timeout are
3.10's alone; a later version needs none of its own), then fetched per target:
  common/            pure-Python wheels (h11 among them); aiohttp, multidict, yarl, frozenlist, propcache
                     and websockets publish py3-none-any wheels that use their pure-Python fallbacks
  abi3-<machine>/    psutil and cryptography: stable-ABI wheels for 3.10's ABI, one file for every
                     CPython >= 3.10 (cryptography's cp311-abi3 build would refuse 3.10)
  cp3XY-<machine>/   cffi (needed by cryptography's bindings) and pydantic-core (typer validates
                     options with pydantic) exist only as per-version builds
A dependency that is none of these makes the build fail here, not on a node.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

ABI3 = {"psutil", "cryptography"}
PER_VERSION = {"cffi", "pydantic-core"}
MACHINES = ("x86_64", "aarch64")
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
OLDEST = PYTHONS[0]
# manylinux2014 = glibc 2.17; pip also accepts the older manylinux tags it implies.
PLATFORM = "manylinux2014_{machine}"
EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same inputs give the same archive


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolve(pip: str, python: str, wheel: Path, work: Path) -> dict[str, str]:
    """name -> version of every dependency of the wheel (the wheel itself excluded), as pip on
    `python` resolves them."""
    report = work / "resolve.json"
    subprocess.run([pip, "--python", python, "install", "-q", "--disable-pip-version-check", "--dry-run",
                    "--ignore-installed", "--report", str(report), str(wheel)], check=True)
    items = json.loads(report.read_text())["install"]
    pins = {normalize(i["metadata"]["name"]): i["metadata"]["version"] for i in items}
    pins.pop("aml-netcheck")
    return pins


def install(pip: str, target: Path, specs: list[str], *, python: str, implementation: str,
            abi: str, platform: str) -> None:
    """pip install --target for another interpreter/platform: wheels only, no dependencies (the
    set is already complete), no bytecode (compiled on the node by its own interpreter)."""
    subprocess.run([pip, "install", "-q", "--disable-pip-version-check", "--no-deps", "--no-compile",
                    "--only-binary=:all:", "--target", str(target), "--python-version", python,
                    "--implementation", implementation, "--abi", abi, "--platform", platform, *specs],
                   check=True)
    shutil.rmtree(target / "bin", ignore_errors=True)  # console scripts with the build's paths


def stage(pip: str, python: str, wheel: Path, work: Path) -> Path:
    payload = work / "payload"
    shutil.rmtree(work, ignore_errors=True)
    payload.mkdir(parents=True)
    pins = resolve(pip, python, wheel, work)
    spec = {name: f"{name}=={version}" for name, version in pins.items()}
    pure = [spec[n] for n in sorted(set(pins) - ABI3 - PER_VERSION)]
    install(pip, payload / "common", [str(wheel), *pure], python=OLDEST, implementation="py",
            abi="none", platform="any")
    for machine in MACHINES:
        install(pip, payload / f"abi3-{machine}", [spec[n] for n in sorted(ABI3)], python=OLDEST,
                implementation="cp", abi="abi3", platform=PLATFORM.format(machine=machine))
        for python in PYTHONS:
            tag = "cp" + python.replace(".", "")
            install(pip, payload / f"{tag}-{machine}", [spec[n] for n in sorted(PER_VERSION & set(pins))],
                    python=python, implementation="cp", abi=tag, platform=PLATFORM.format(machine=machine))
    return payload


def write(payload: Path, bootstrap: Path, output: Path) -> None:
    files = sorted(p for p in payload.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(payload).as_posix().encode() + b"\0" + path.read_bytes())
    digest.update(bootstrap.read_bytes())
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "wb") as raw:
        raw.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            entries = [("__main__.py", bootstrap.read_bytes()),
                       ("BUILD_ID", digest.hexdigest()[:16].encode() + b"\n")]
            entries += [(p.relative_to(payload).as_posix(), p.read_bytes()) for p in files]
            for name, data in entries:
                info = zipfile.ZipInfo(name, EPOCH)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
    tmp.chmod(0o755)
    tmp.replace(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pip", required=True)
    parser.add_argument("--resolve-python", required=True, help=f"a CPython {OLDEST}, where pip resolves the set")
    parser.add_argument("--wheel", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    payload = stage(args.pip, args.resolve_python, args.wheel, args.work)
    write(payload, Path(__file__).with_name("zipapp_main.py"), args.output)


if __name__ == "__main__":
    main()
