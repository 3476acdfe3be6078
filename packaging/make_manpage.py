"""Writes aml-netcheck(1), the man page, from the CLI itself: click's command tree as typer builds it
from agent/cli.py (every command, argument and option with its help), plus the sections a man page
has that --help has not (exit status, environment, files). make_deb.sh installs it, gzip'd, as
/usr/share/man/man1/aml-netcheck.1.gz; tests/unit/test_manpage.py checks it names every command and
option and that groff and man read it without a warning.

    python3 packaging/make_manpage.py OUTPUT      (with the agent importable: PYTHONPATH)

The date is $SOURCE_DATE_EPOCH's when set (reproducible builds), else today's.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import click
import typer

from agent import __version__
from agent.cli import _CONTEXT_NAMES, PROG, app

_EXIT_STATUS = [
    ("0", "ok: no warning or critical finding (every profile)."),
    ("1", "warning: warnings only (nagios); a problem (npd); not healthy (simple: warning gives 0)."),
    ("2", "critical: at least one critical finding (nagios); unknown (npd)."),
    ("3", ("unknown: the agent could not decide: bad usage, a bad config, an internal error, a stop by a signal, "
           "or the run deadline reached before the checks finished (nagios).")),
]
_ENVIRONMENT = [
    ("HTTPS_PROXY, HTTP_PROXY, NO_PROXY", ("The proxy path, as Azure ML's clients read it (also the lowercase "
     "names, and /etc/environment): the proxied checks go through it; its credentials are never shown.")),
    ("SSL_CERT_FILE", "The trust store the TLS checks verify against (the system's otherwise)."),
    ("STATE_DIRECTORY", "serve: where the last report is kept when --state is not given (systemd sets it)."),
]
_FILES = [
    ("/etc/aml-netcheck/config.toml", "The config file the packaged units pass with --config."),
    ("/var/lib/aml-netcheck/report.json", "The last report of the packaged units."),
    ("/run/aml-netcheck/aml_netcheck.prom", "The Prometheus metrics, for node_exporter's textfile collector."),
]
_EXAMPLES = [
    ("aml-netcheck check", "Diagnose this node: text to a terminal, a pipe or a file alike."),
    ("aml-netcheck check --format json --output report.json", "The JSON report, for scripts."),
    ("aml-netcheck check --bundle support.tar.gz", "The report, and a support bundle to attach to a ticket."),
    ("aml-netcheck rules --format az", "The NSG, firewall and DNS changes, as Azure CLI commands."),
    ("eval \"$(aml-netcheck completion bash)\"", "Tab completion in this bash."),
]


def roff(text: str) -> str:
    """Text for a roff line: backslashes escaped, a leading dot or quote made literal, `code` bold."""
    text = text.replace("\\", "\\e")
    text = re.sub(r"`([^`]+)`", lambda m: "\\fB" + m.group(1).replace("-", "\\-") + "\\fR", text)
    return "\\&" + text if text.startswith((".", "'")) else text


def _option_name(name: str) -> str:
    return "\\fB" + name.replace("-", "\\-") + "\\fR"


def _paragraphs(help_text: str) -> list[str]:
    """A docstring's paragraphs, each one line (roff fills them)."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", help_text.strip()) if p.strip()]


def _term(param: click.Parameter, ctx: click.Context) -> str:
    if isinstance(param, click.Argument):
        return "\\fI" + param.make_metavar(ctx).replace("-", "\\-") + "\\fR"
    assert isinstance(param, click.Option)
    names = ", ".join(_option_name(n) for n in [*param.opts, *param.secondary_opts])
    if param.is_flag:
        return names
    if isinstance(param.type, click.Choice):
        return f"{names} {{{'|'.join(str(c) for c in param.type.choices)}}}"
    return f"{names} \\fI{param.make_metavar(ctx).replace('-', chr(92) + '-')}\\fR"


def _params(params: list[click.Parameter], ctx: click.Context) -> list[str]:
    lines = []
    for param in params:
        if getattr(param, "hidden", False):
            continue
        lines += [".TP", _term(param, ctx), roff(" ".join((getattr(param, "help", None) or "").split()) or ".")]
    return lines


def _section(title: str, rows: list[tuple[str, str]], intro: str = "") -> list[str]:
    lines = [f".SH {title}", *([roff(intro)] if intro else [])]
    for term, text in rows:
        lines += [".TP", "\\fB" + roff(term).replace("-", "\\-") + "\\fR", roff(text)]
    return lines


def manpage(date: str) -> str:
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    root = click.Context(group, info_name=PROG)
    commands = [(name, group.commands[name]) for name in group.list_commands(root)]
    description = _paragraphs(group.help or "")
    lines = [
        f'.TH AML\\-NETCHECK 1 "{date}" "aml-netcheck {__version__}" "User Commands"',
        ".SH NAME",
        f"aml\\-netcheck \\- {roff(description[0][0].lower() + description[0][1:].rstrip('.'))}",
        ".SH SYNOPSIS",
        ".B aml\\-netcheck",
        ".I COMMAND",
        ".RI [ OPTIONS ]",
        ".br",
        ".B aml\\-netcheck",
        ".RB [ \\-h | \\-\\-help | \\-\\-version ]",
        ".SH DESCRIPTION",
        roff("aml-netcheck probes, from the node, every network path Azure Machine Learning compute needs (DNS, TCP, "
             "UDP, TLS, HTTP, WebSocket, SMB), groups the failures into root causes and says for each which "
             "requirement fails, at which layer, why, and the NSG rule, firewall rule, DNS record or setting that "
             "fixes it. `plan`, `rules` and `merge` send nothing; `check`, `serve` and `demo` probe."),
        ".PP",
        roff("Every command takes `-h` or `--help`. The text report's format does not depend on where it goes: "
             "the same text to a terminal, a pipe or a file (colour and live progress only on a terminal); "
             "`--format json` is asked for explicitly."),
        ".SH COMMANDS",
    ]
    shared: list[click.Parameter] = []
    for name, command in commands:
        ctx = click.Context(command, info_name=name, parent=root)
        own = [p for p in command.params if p.name not in _CONTEXT_NAMES and p.name != "help"]
        if len(own) < len(command.params) and not shared:
            shared = [p for p in command.params if p.name in _CONTEXT_NAMES]
        usage = " ".join(["aml\\-netcheck", name, *(p.make_metavar(ctx) for p in command.params
                                                    if isinstance(p, click.Argument)), "[OPTIONS]"])
        lines += [f'.SS "{usage}"']
        for index, paragraph in enumerate(_paragraphs(command.help or "")):
            lines += [".PP"] if index else []
            lines.append(roff(paragraph))
        if any(p.name in _CONTEXT_NAMES for p in command.params):
            lines += [".PP", "It takes the context options (below), and:"]
        lines += _params(own, ctx)
    lines += [".SH CONTEXT OPTIONS",
              roff("What `check`, `plan`, `rules` and `serve` are planned for; each is also a config file key "
                   "(with - or _). Options beat the config file, which beats detection, which beats the defaults.")]
    lines += _params(shared, root)
    lines += _section("EXIT STATUS", _EXIT_STATUS, "`check` follows --exit-codes: nagios (the default), npd or "
                      "simple; the other commands exit 0, or 3 on bad usage.")
    lines += _section("ENVIRONMENT", _ENVIRONMENT) + _section("FILES", _FILES) + _section("EXAMPLES", _EXAMPLES)
    lines += [".SH SEE ALSO", ".BR systemctl (1),", ".BR journalctl (1),", ".BR tar (1)", ".PP",
              roff("The README in /usr/share/doc/aml-netcheck and https://learn.microsoft.com/azure/machine-learning/"
                   "how-to-access-azureml-behind-firewall")]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    date = time.strftime("%Y-%m-%d", time.gmtime(int(epoch)) if epoch else time.gmtime())
    Path(argv[0]).write_text(manpage(date), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
