"""Stages the tree the wheel and sdist are built from (`packaging/build wheel`): the repository's
top-level packages agent/, probes/ and lab/ moved under one package, aml_netcheck, with their
imports of each other rewritten to match.

Why: installed into a shared environment (a compute instance's conda environment) the wheel added
three import names, `agent`, `probes` and `lab`, that any other distribution there may also use;
now it adds one. The checkout keeps its layout (./dev's editable install, the tests, `python -m
agent`), and the code names its own modules from `__name__` where it starts child interpreters
(`python -m <package>.servers`), so import statements are all that changes here. An import this
rewrite cannot map (`import agent.x`, `import agent as a`) fails the build instead of the node.
The zipapp and the .deb are built from the wheel, so they have the same layout.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

PACKAGE = "aml_netcheck"
TOP_LEVEL = ("agent", "probes", "lab")
_NAMES = "|".join(TOP_LEVEL)
# `from agent.x import y` and `from agent import y`: only statements (` import ` on the line), not prose.
FROM = re.compile(rf"^(?P<indent>[ \t]*)from (?P<name>{_NAMES})(?=[. ])(?=.* import )", re.MULTILINE)
# `import lab` becomes `from aml_netcheck import lab`, which binds the same name.
IMPORT = re.compile(rf"^(?P<indent>[ \t]*)import (?P<name>{_NAMES})[ \t]*$", re.MULTILINE)
UNMAPPED = re.compile(rf"^[ \t]*import [^#\n]*\b({_NAMES})\b", re.MULTILINE)
# What pyproject.toml says about the layout, and what the staged copy says instead.
PYPROJECT = (
    ('aml-netcheck = "agent.__main__:run"', f'aml-netcheck = "{PACKAGE}.agent.__main__:run"'),
    ('include = ["agent", "agent.*", "probes", "probes.*", "lab", "lab.*"]', f'include = ["{PACKAGE}", "{PACKAGE}.*"]'),
    ('[tool.setuptools.package-data]\nagent = ', f'[tool.setuptools.package-data]\n"{PACKAGE}.agent" = '),
)
INIT = f'''"""aml-netcheck as installed: the repository's {", ".join(TOP_LEVEL)} under one import name
(packaging/make_wheel_tree.py says why)."""
'''
MAIN = f'''"""`python -m {PACKAGE}`, the installed form of the checkout's `python -m agent`."""

if __name__ == "__main__":
    from {PACKAGE}.agent.__main__ import run

    run()
'''


def rewrite(source: str, path: Path) -> str:
    source = FROM.sub(rf"\g<indent>from {PACKAGE}.\g<name>", source)
    source = IMPORT.sub(rf"\g<indent>from {PACKAGE} import \g<name>", source)
    unmapped = UNMAPPED.search(source)
    if unmapped:
        raise SystemExit(f"make_wheel_tree: {path}: cannot map {unmapped.group(0).strip()!r} under {PACKAGE}")
    return source


def stage(repo: Path, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    package = out / PACKAGE
    package.mkdir(parents=True)
    for name in TOP_LEVEL:
        shutil.copytree(repo / name, package / name, ignore=shutil.ignore_patterns("__pycache__"))
        for path in (package / name).rglob("*.py"):
            path.write_text(rewrite(path.read_text(), path.relative_to(out)))
    (package / "__init__.py").write_text(INIT)
    (package / "__main__.py").write_text(MAIN)
    pyproject = (repo / "pyproject.toml").read_text()
    for old, new in PYPROJECT:
        if pyproject.count(old) != 1:
            raise SystemExit(f"make_wheel_tree: pyproject.toml no longer has {old!r} once: update PYPROJECT")
        pyproject = pyproject.replace(old, new)
    (out / "pyproject.toml").write_text(pyproject)
    shutil.copy2(repo / "README.md", out / "README.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    stage(args.repo, args.out)


if __name__ == "__main__":
    main()
