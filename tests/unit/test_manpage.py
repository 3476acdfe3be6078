"""aml-netcheck(1) is generated from the CLI (packaging/make_manpage.py): it names every command and
every option, and groff and man read it without a warning (lintian's check of the .deb,
tests/packaging, reads the installed page the same way)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import click
import pytest
import typer

from agent.cli import app

REPO = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_manpage", REPO / "packaging" / "make_manpage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("man") / "aml-netcheck.1"
    path.write_text(generator().manpage("2026-12-02"), encoding="utf-8")
    return path


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: ./dev installs it")
    return found


def test_groff_reads_it_without_a_warning(page: Path) -> None:
    done = subprocess.run([tool("groff"), "-man", "-ww", "-z", str(page)], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")


def test_man_shows_every_command_and_option(page: Path) -> None:
    done = subprocess.run([tool("man"), "--warnings", "-E", "UTF-8", "-l", str(page)], capture_output=True,
                          text=True, check=False, env={**os.environ, "MANWIDTH": "400", "MAN_KEEP_FORMATTING": ""})
    assert (done.returncode, done.stderr) == (0, "")
    shown = done.stdout
    assert shown.startswith("AML-NETCHECK(1)") and "\nNAME\n       aml-netcheck - diagnose the network paths" in shown
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group) and len(group.commands) >= 7
    for name, command in group.commands.items():
        assert f"\n   aml-netcheck {name} " in shown, name
        for param in command.params:
            for option in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
                if option.startswith("-") and option not in ("--help",):
                    assert f"       {option}" in shown or f", {option}" in shown, f"{name} {option}"
    for section in ("SYNOPSIS", "DESCRIPTION", "COMMANDS", "CONTEXT OPTIONS", "EXIT STATUS", "ENVIRONMENT", "FILES"):
        assert f"\n{section}\n" in shown
