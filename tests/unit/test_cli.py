"""The CLI contract for commands that send nothing: plan, usage errors, exit codes.

`check` itself is exercised in the lab (tests/lab), never here: outside the lab it would query
real hosts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import UsageProblem, _loopback, main
from probes import node

from .helpers import GUID

CONTEXT = ["--region", "eastus", "--workspace-id", GUID, "--workspace-name", "contoso-ml",
           "--storage-account", "contosomlsa", "--compute-name", "ci-alice", "--private-endpoint"]


def test_plan_json_lists_checks_with_their_context_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--format", "json", *CONTEXT]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["context"]["region"] == {"value": "eastus", "source": "option"}
    assert plan["context"]["cloud"] == {"value": "public", "source": "default"}
    ids = {c["id"] for c in plan["checks"]}
    assert f"dns:{GUID}.workspace.eastus.api.azureml.ms" in ids
    assert "udp:eastus.tundra.azureml.ms:5831" in ids


@pytest.mark.parametrize(("option", "key", "host"), [
    ("storage", "storage_private_endpoint", "contosomlsa.blob.core.windows.net"),
    ("key-vault", "key_vault_private_endpoint", "contoso-kv.vault.azure.net"),
    ("registry", "registry_private_endpoint", "contosoacr.azurecr.io"),
])
def test_a_resource_private_endpoint_is_an_option_and_a_config_key(
        option: str, key: str, host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = ["--key-vault", "contoso-kv", "--container-registry", "contosoacr"]
    assert main(["plan", "--format", "json", *CONTEXT, *names]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["context"][key] == {"value": None, "source": "unknown"}  # read from the CNAME chain then
    assert main(["plan", "--format", "json", *CONTEXT, *names, f"--{option}-private-endpoint"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["context"][key] == {"value": True, "source": "option"}
    assert next(c for c in plan["checks"] if c["id"] == f"dns:{host}")["params"]["expect"] == "private"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"{key.replace('_', '-')} = false\n")
    assert main(["plan", "--format", "json", *CONTEXT, *names, "--config", str(cfg)]) == 0
    assert json.loads(capsys.readouterr().out)["context"][key] == {"value": False, "source": "config"}
    rules = ["rules", "--format", "json", *CONTEXT, *names, f"--{option}-private-endpoint"]
    assert main(rules) == 0
    assert "privatelink." + host.split(".", 1)[1].replace("vault.", "vaultcore.") in capsys.readouterr().out


def test_plan_reads_the_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('region = "westus2"\ncompute = "cluster"\n')
    assert main(["plan", "--format", "json", "--config", str(cfg)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["context"]["region"] == {"value": "westus2", "source": "config"}
    assert not any(".instances." in c["host"] for c in plan["checks"])


@pytest.mark.parametrize(("argv", "message"), [
    (["check", "--bogus"], "No such option: --bogus"),
    (["plan", "--region", "East US"], "region: an Azure region name"),
    (["plan", "--compute", "mainframe"], "compute: must be one of"),
    (["plan", "--managed-network", "yes"], "managed_network: must be one of disabled, allow_internet_outbound"),
    (["rules", "--managed-network", "allow_internet_outbound", "--compute", "vm", "--no-detect"],
     "managed_network: a managed virtual network holds only Azure ML's own compute"),
    (["check", "--timeout", "0"], "--timeout"),
    (["check", "--format", "xml"], "--format"),
    (["plan", "--config", "/nonexistent/aml.toml"], "/nonexistent/aml.toml"),
    (["demo", "no-such-scenario"], "unknown scenario"),
    (["nonsense"], "No such command"),
    ([], "Usage"),
])
def test_usage_errors_exit_3_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 3
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err + captured.out
    if argv:
        assert len(captured.err.strip().splitlines()) == 1


# `check` stops at the option (or else at the unwritable --output) before anything is probed.
_NO_RUN = ["--no-detect", "--output", "/nonexistent-dir/report.json"]
_NO_SERVE = ["--no-detect", "--listen", "0.0.0.0:9119"]  # `serve` too: a non-loopback --listen is refused


@pytest.mark.parametrize(("argv", "option", "expected"), [
    (["check", "--timeout", "inf", *_NO_RUN], "--timeout", "a finite number of seconds from 0.1 to 300, not inf"),
    (["check", "--timeout", "nan", *_NO_RUN], "--timeout", "a finite number of seconds from 0.1 to 300, not nan"),
    (["check", "--timeout", "0.01", *_NO_RUN], "--timeout", "from 0.1 to 300, not 0.01"),
    (["check", "--deadline", "inf", *_NO_RUN], "--deadline", "a finite number of seconds from 0.5 to 3600, not inf"),
    (["check", "--deadline", "nan", *_NO_RUN], "--deadline", "a finite number of seconds from 0.5 to 3600, not nan"),
    (["check", "--wait", "inf", *_NO_RUN], "--wait", "a finite number of seconds from 1 to 86400, not inf"),
    (["check", "--wait", "nan", *_NO_RUN], "--wait", "a finite number of seconds from 1 to 86400, not nan"),
    (["check", "--concurrency", "4097", *_NO_RUN], "--concurrency", "a whole number from 1 to 4096, not 4097"),
    (["serve", "--interval", "nan", *_NO_SERVE], "--interval", "a finite number of seconds from 1 to 86400"),
    (["serve", "--timeout", "inf", *_NO_SERVE], "--timeout", "a finite number of seconds from 0.1 to 300"),
    (["check", "--latency", "tcp=-5", *_NO_RUN], "--latency", "tcp: expected a finite number of milliseconds from 1"),
    (["check", "--latency", "tcp=inf", *_NO_RUN], "--latency", "tcp: expected a finite number of milliseconds"),
    (["check", "--latency", "tls=nan", *_NO_RUN], "--latency", "tls: expected a finite number of milliseconds"),
    (["check", "--latency", "udp=300", *_NO_RUN], "--latency", "unknown layer 'udp' (known: dns, tcp, tls, http)"),
    (["check", "--latency", "tcp", *_NO_RUN], "--latency", "expected LAYER=MILLISECONDS[,...]"),
    (["check", "--latency", "tcp=300,tcp=400", *_NO_RUN], "--latency", "tcp: given twice"),
    (["serve", "--latency", "http=0", *_NO_SERVE], "--latency", "http: expected a finite number of milliseconds"),
])
def test_numeric_options_are_finite_and_within_bounds(argv: list[str], option: str, expected: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The bounds are the config file's (agent/inputs/values.py), whatever typer or click would
    let through: click's FloatRange passes NaN, since every comparison with it is false."""
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"'{option}'" in err and expected in err, err


def test_numeric_options_at_their_bounds_reach_the_next_check(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check", "--timeout", "300", "--deadline", "0.5", "--wait", "86400", "--concurrency", "1",
            "--latency", "tcp=1,tls=300000, http=2500,dns=1000", *_NO_RUN]
    assert main(argv) == 3
    assert "cannot write /nonexistent-dir/report.json" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["plan", "rules"])
def test_an_unknown_feature_exits_3_naming_it_and_the_valid_ones(command: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`--with rstuido` once selected nothing, silently: RStudio's requirements went unchecked."""
    assert main([command, "--no-detect", "--with", "vscode, rstuido"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("aml-netcheck: error: --with: unknown feature 'rstuido' (valid: automl, conda, cran, ")
    assert "rstudio" in err and "vscode" in err


def test_known_features_select_their_requirements(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--no-detect", "--region", "eastus", "--with", "rstudio", "--format", "json"]) == 0
    assert any("rstudio" in r for c in json.loads(capsys.readouterr().out)["checks"] for r in c["requirements"])


def test_a_config_that_is_no_regular_file_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    """`--config /dev/zero` grew until MemoryError."""
    assert main(["plan", "--no-detect", "--config", "/dev/zero"]) == 3
    assert capsys.readouterr().err == "aml-netcheck: error: config /dev/zero: not a regular file\n"


@pytest.fixture
def no_proxy_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No proxy from this machine's environment or /etc/environment: each test sets its own."""
    for name in node.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "environment").write_text("")
    monkeypatch.setattr(node, "ETC_ENVIRONMENT", tmp_path / "environment")
    return monkeypatch


def test_a_blocked_port_in_unicode_digits_is_a_usage_error(tmp_path: Path, no_proxy_here: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """'44\u00b2' passed str.isdigit() at load time and failed int() when planning: internal error."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[policy]\nblocked = ['*.azureml.ms:44\u00b2']\n", encoding="utf-8")
    assert main(["plan", "--no-detect", "--region", "eastus", "--config", str(cfg)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" not in err
    assert err.startswith(f"aml-netcheck: error: config {cfg}: policy.blocked: '*.azureml.ms:44\u00b2' is not ")


@pytest.mark.parametrize("url", [
    "http://[::1", "http://[zz]:3128", "http://[::1]x:3128",  # urlsplit's own ValueError: internal error
    "http://[10.0.0.1]:3128",  # an IPv4 address in brackets: 3.10's urlsplit takes it
    "http://proxy:0",  # silently the scheme's port
    "http://proxy:99999", "http://proxy:abc", "http://proxy:44\u00b2", "http://proxy:\uff14\uff14\uff13",
    "http://proxy:-1", "http://proxy:+80", "http://pro xy:3128", "http://proxy\t:3128", "http://pr\u00f6xy:3128",
    "http://TOKEN/x@proxy:3128",  # an unencoded / in the credentials: the proxy would be "token", port 80
    "http://user:pa?ss@proxy:3128", "http://user:pa#ss@proxy:3128",
])
@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy"])
def test_a_bad_proxy_url_is_a_usage_error_naming_the_variable(
        url: str, variable: str, no_proxy_here: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    no_proxy_here.setenv(variable, url)
    assert main(["plan", "--no-detect", "--region", "eastus"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aml-netcheck: error: HTTPS_PROXY (from environment): "), err
    assert "TOKEN" not in err and "pa?ss" not in err and "pa#ss" not in err  # no part of the URL is echoed


@pytest.mark.parametrize("listen", ["127.0.0.1:44\u00b2", "127.0.0.1:\uff19\uff11\uff11\uff19", "127.0.0.1:0",
                                    "127.0.0.1:65536", "127.0.0.1:", "[::1]:+80"])
def test_listen_is_refused_unless_its_port_is_ascii_digits_within_1_65535(listen: str) -> None:
    """'44\u00b2' raised ValueError from int() (internal error); fullwidth digits were read as a port."""
    with pytest.raises(UsageProblem, match="--listen must be a loopback HOST:PORT"):
        _loopback(listen)
    assert _loopback("[::1]:9119") == ("::1", 9119) and _loopback("127.0.0.1:65535") == ("127.0.0.1", 65535)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare to run `check` in a network namespace of its own")
def test_broken_config_through_the_real_console_script(tmp_path: Path) -> None:
    """`check` must stop at the config, before any probe; a private, empty network namespace makes
    sure that even a regression here could not send anything."""
    broken = tmp_path / "broken.toml"
    broken.write_text("region = \n[[[")
    proc = subprocess.run(["unshare", "--net", sys.executable, "-m", "agent", "check", "--config", str(broken)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "invalid TOML" in proc.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """The catalog's version is read from the compiled catalog alone (agent.version_line): the same as the
    whole catalog's."""
    from agent import catalog

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"aml-netcheck 0.1.0 (catalog {catalog.load().version})\n"


@pytest.mark.parametrize(("fmt", "expected"), [
    ("json", '"schema": "aml-netcheck.rules/1"'),
    ("az", "az network nsg rule create --resource-group rg1 --nsg-name nsg1 "),
    ("table", "NSG rules"),
])
def test_rules_formats(fmt: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", *CONTEXT, "--format", fmt, "--resource-group", "rg1", "--nsg", "nsg1"]) == 0
    out = capsys.readouterr().out
    assert expected in out
    if fmt == "az":
        assert "az network private-dns link vnet create" in out and "privatelink.api.azureml.ms" in out


def test_merge_rejects_what_is_not_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "r.json"
    bogus.write_text('{"schema": "something/else"}')
    assert main(["merge", str(bogus)]) == 3
    assert capsys.readouterr().err.strip() == f"aml-netcheck: error: {bogus}: not an aml-netcheck.report/1 report"


@pytest.mark.parametrize(("fmt", "start"), [("markdown", "# Azure ML network check: CRITICAL on 2 nodes\n"),
                                           ("table", "2 nodes, fleet status critical\n"),
                                           ("json", '{\n  "schema": "aml-netcheck.fleet/1"')])
def test_merge_formats(fmt: str, start: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from .test_outputs import node_report

    paths = []
    for case, name in (("healthy", "a"), ("smb dropped", "b")):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(node_report(case, name)), "utf-8")
    assert main(["merge", "--format", fmt, *map(str, paths)]) == 2
    assert capsys.readouterr().out.startswith(start)


def test_serve_refuses_a_non_loopback_listen_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--listen", "0.0.0.0:9119", "--state", "/nonexistent/dir/r.json"]) == 3
    assert "--listen must be a loopback HOST:PORT" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--output", "--textfile", "--bundle"])
def test_an_unwritable_output_is_refused_before_probing(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", option, "/nonexistent-dir/report.json"]) == 3
    assert "cannot write /nonexistent-dir/report.json" in capsys.readouterr().err


def test_serve_says_when_its_listen_address_is_taken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--listen", f"127.0.0.1:{port}", "--state", str(tmp_path / "r.json"), "--no-detect"])
    assert code == 3
    err = capsys.readouterr().err
    assert err.strip() == f"aml-netcheck: error: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_an_unusable_https_proxy_is_one_line_and_exit_3(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy.contoso.net:1080")
    assert main(["plan", "--no-detect", "--region", "eastus"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("aml-netcheck: error: HTTPS_PROXY (from environment): unsupported proxy scheme 'socks5'")


def test_plan_shows_the_proxy_on_its_scheme_port_and_without_credentials(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://alice:s3cret@proxy.contoso.net")
    assert main(["plan", "--no-detect", "--region", "eastus", "--format", "json"]) == 0
    out = capsys.readouterr().out
    checks = {c["id"]: c for c in json.loads(out)["checks"]}
    assert "tcp:proxy.contoso.net:80" in checks and "s3cret" not in out
    assert checks["http:management.azure.com:443@proxy"]["params"]["proxy"] == "http://***@proxy.contoso.net:80"
    assert "alice" not in out  # the user too: a token is often the user part alone


def test_a_policy_reason_that_looks_like_markup_is_shown_as_written(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`plan`'s table read a policy reason with `[/x]` as rich markup and crashed (internal error)."""
    config = tmp_path / "config.toml"
    config.write_text('[policy]\nblocked = ["pypi.org"]\nreason = "see [/x] ticket [b]42"\n')
    assert main(["plan", "--no-detect", "--region", "eastus", "--with", "pypi", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "[/x]" in out and "[b]42" in out


@pytest.mark.parametrize("argv", [["--version"], ["rules", "--format", "json", *CONTEXT],
                                  ["plan", "--format", "json", *CONTEXT]])
def test_the_process_ends_with_its_output_whole(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The process exits with os._exit, skipping the interpreter's teardown: stdout is flushed
    first, so a pipe gets every byte the command printed in-process."""
    assert main(argv) == 0
    expected = capsys.readouterr().out
    proc = subprocess.run([sys.executable, "-m", "agent", *argv], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == expected and len(expected) > (0 if argv == ["--version"] else 8192)  # past one buffer


def test_a_closed_stdout_is_click_s_exit_1_without_a_traceback() -> None:
    """click turns EPIPE into exit 1 and nothing on stderr, as before the process ended with os._exit."""
    proc = subprocess.Popen([sys.executable, "-m", "agent", "plan", "--format", "json", *CONTEXT],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `aml-netcheck plan | head -0`
    assert proc.wait(60) == 1
    with proc.stderr:
        assert proc.stderr.read() == ""


@pytest.mark.parametrize(("argv", "rule"), [
    (["--container-registry", "acr1"],
     "container_registry: a container registry name is 5 to 50 letters and digits, not 'acr1'"),
    (["--storage-account", "Contoso"],
     "storage_account: a storage account name is 3 to 24 lowercase letters and digits, not 'Contoso'"),
    (["--key-vault", "1kv"],
     "key_vault: a key vault name is 3 to 24 letters, digits and hyphens, starting with a letter, not '1kv'"),
    (["--region", "East US"],
     ("region: an Azure region name is 2 to 31 lowercase letters and digits, starting with a letter (like eastus), "
      "not 'East US'")),
])
def test_a_name_that_fails_validation_states_the_rule(argv: list[str], rule: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--no-detect", *argv]) == 3
    assert capsys.readouterr().err == f"aml-netcheck: error: {rule}\n"


def test_the_progress_line_names_the_check_it_waits_on_longest() -> None:
    """The progress bar sat at 93/94 and did not say what for. A check is open from when the check it
    needs finished; the one open longest is named once it has waited a second."""
    from agent.cli import Waiting, progress_note

    from .helpers import make_plan

    checks = make_plan()
    dns = next(c for c in checks if c.needs is None and c.skip is None)
    tcp = next(c for c in checks if c.needs == dns.id)
    other = next(c for c in checks if c.needs is None and c.skip is None and c is not dns)
    waiting = Waiting((dns, tcp, other), now=100.0)
    waiting.finished(other.id, now=100.5)
    assert waiting.longest(now=100.6) == (dns.id, pytest.approx(0.6))
    assert progress_note(0, waiting.longest(now=100.6)) == ""  # not yet a wait worth naming
    assert progress_note(2, waiting.longest(now=104.1)) == f"2 failing, waiting on {dns.id} (4.1 s)"
    waiting.finished(dns.id, now=104.2)  # the check that needs it opens now, not at the start
    assert waiting.longest(now=106.0) == (tcp.id, pytest.approx(1.8))
    waiting.finished(tcp.id, now=106.1)
    assert waiting.longest(now=107.0) is None and progress_note(1, None) == "1 failing"
