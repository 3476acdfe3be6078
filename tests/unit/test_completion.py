"""`-h` and shell completion, asked of real shells: the script `completion SHELL` prints is loaded into
bash, zsh and fish, which then ask the real process (as `aml-netcheck` on PATH) for completions."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.output import Format

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH whose `aml-netcheck` is this checkout's, as the console script would be."""
    bin_dir = tmp_path_factory.mktemp("bin")
    script = bin_dir / "aml-netcheck"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m agent "$@"\n')
    script.chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin"


def shell(name: str, code: str, path: str, home: Path) -> list[str]:
    """`code` run by a real `name`, in the checkout (where `python -m agent` is this tree's), with a
    HOME of its own (fish keeps its variables there)."""
    executable = shutil.which(name)
    if executable is None:
        pytest.fail(f"{name} is missing: ./dev installs it")
    argv = [executable, "-fc" if name == "zsh" else "-c", code]
    done = subprocess.run(argv, cwd=REPO, env={"PATH": path, "HOME": str(home)}, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("argv", [["-h"], ["check", "-h"], ["plan", "-h"], ["merge", "-h"], ["completion", "-h"]])
def test_h_is_help_on_every_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("Usage: aml-netcheck") and "-h, --help" in help_text
    assert main([*argv[:-1], "--help"]) == 0 and capsys.readouterr().out == help_text


def test_bash_completes_commands_options_and_choices(path: str, tmp_path: Path) -> None:
    lines = shell("bash", """
        source <(aml-netcheck completion bash)
        complete -p aml-netcheck
        ask() { COMPREPLY=(); COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _aml_netcheck_completion aml-netcheck
                echo "${COMPREPLY[*]}"; }
        ask aml-netcheck ch
        ask aml-netcheck check --form
        ask aml-netcheck check --format ''
        ask aml-netcheck completion ''
    """, path, tmp_path)
    assert lines == ["complete -o nosort -F _aml_netcheck_completion aml-netcheck", "check", "--format",
                     " ".join(f.value for f in Format), "bash zsh fish"]


def test_zsh_completes_through_compsys(path: str, tmp_path: Path) -> None:
    """The script registers with compinit's compdef (-D: no dump file; compinit replaces its dump file
    by a rename, so never give it one that is not its own); compsys's _describe and compadd are
    replaced by functions printing what the completion function gives them."""
    lines = shell("zsh", """
        autoload -U compinit && compinit -u -D
        source <(aml-netcheck completion zsh)
        print -r -- $_comps[aml-netcheck]
        _describe() { print -rl -- "${(@P)3}" }
        compadd() { print -rl -- "${(@P)5}" }
        words=(aml-netcheck check --exit-co); CURRENT=3; _aml_netcheck_completion
        words=(aml-netcheck check --exit-codes ''); CURRENT=4; _aml_netcheck_completion
    """, path, tmp_path)
    assert lines[0] == "_aml_netcheck_completion"
    assert lines[1].startswith("--exit-codes:nagios: 0 ok, 1 warning")
    assert lines[2:] == ["nagios", "npd", "simple"]


def test_fish_completes_on_complete_c(path: str, tmp_path: Path) -> None:
    lines = shell("fish", """
        aml-netcheck completion fish | source
        complete -C'aml-netcheck pl'
        complete -C'aml-netcheck rules --format '
    """, path, tmp_path)
    words = [line.split("\t")[0] for line in lines]  # fish sorts what it is given
    assert words[0] == "plan" and sorted(words[1:]) == ["az", "json", "table"]
