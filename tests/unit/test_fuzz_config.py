"""Bad input is refused, never crashed on: 10,000 generated config files through the real CLI.

Each config is TOML text from a seeded generator: keys from the real key set and unknown ones,
values of every type (non-finite and extreme numbers, unicode digits, huge strings, deep nesting),
[[endpoint]] and [policy] tables with bad fields, and some text corrupted past TOML or UTF-8. Each
goes through `agent.cli.main(["plan" | "rules", "--no-detect", "--config", FILE, ...])` in-process,
and every one must end in exit 0, or exit 3 with exactly one short line on stderr naming the file:
no traceback and no "internal error". A config that exit 0 accepted must also hold nothing outside
the documented bounds and features (silent acceptance is the other way bad input gets through).
The seed is fixed, so a failure reproduces; the failing texts are printed."""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import json
import random
import string
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest
import typer.main

from agent.cli import main
from agent.inputs import config, context
from probes import node

SEED = 20261201
COUNT = 10_000

SETTINGS_KEYS = ("timeout", "deadline", "concurrency", "expected_issuers", "with", "endpoint", "policy")
REAL_KEYS = tuple(k.name for k in context.KEYS) + SETTINGS_KEYS
UNKNOWN_KEYS = ("regoin", "Region", "timeout_s", "proxy", "features", "\u0440\u0435\u0433\u0438\u043e\u043d",
                "with_", "", " ", "a\nb", "endpoints", "blocked", "44\u00b2")
# The documented bounds (README: Config file) and the catalog's features, written independently of
# the code under test: what a config that loads may hold.
DOCUMENTED = {"timeout": (0.1, 300), "deadline": (0.5, 3600), "concurrency": (1, 4096)}
_ROWS = tomllib.loads(resources.files("agent").joinpath("data/requirements.toml").read_text("utf-8"))["requirement"]
FEATURES = tuple(sorted({row["feature"] for row in _ROWS if "feature" in row}))
UNICODE_DIGITS = ("44\u00b2", "\uff14\uff14\uff13", "\u0664\u0664\u0663", "\u00b9", "\u2463", "\U0001d7d9")
NAMES = ("eastus", "westeurope", "contoso-ml", "contosomlsa", "ci-alice", "public", "usgov", "china",
         "instance", "cluster", "vm", "serverless", "hdinsight", "databricks", "9f1c2a3b-4d5e-4f60-8a7b-0c1d2e3f4a5b",
         "East US", "eastus\n", "", " ", "mars", "pypi.contoso.net", "10.0.0.5", "*.blob.core.windows.net:445")
HOSTS = ("pypi.contoso.net", "10.20.0.5", "x.y", "*.x.net", "a b", "", "::1", "[::1]", "p\u00fcpi.contoso.net",
         "a" * 64 + ".net", "a." * 130 + "net", "graph.windows.net", "-bad-.net", "x.net.", "xn--bcher-kva.example")
BLOCKED = ("*.anaconda.com", "pypi.org", "graph.windows.net:443", "graph.windows.net:0", "x.net:65536",
           "x.net:", "x.net:+1", "a b", "*.x", "*", "x.net:443:1", ":443", "*.azureml.ms:" + UNICODE_DIGITS[0],
           "*.azureml.ms:" + UNICODE_DIGITS[1], "management.azure.com:443", "*.microsoft.com")


def _string(s: str, rng: random.Random) -> str:
    """A TOML string in one of its forms; json.dumps without ensure_ascii escapes as TOML does."""
    form = rng.random()
    if form < 0.1 and "'" not in s and "\n" not in s:
        return f"'{s}'"
    if form < 0.15 and "'''" not in s:
        return f"'''{s}'''"
    if form < 0.2:
        return '"""' + json.dumps(s, ensure_ascii=False)[1:-1] + '"""'
    return json.dumps(s, ensure_ascii=False)


def _number(rng: random.Random) -> str:
    return rng.choice([
        "inf", "-inf", "+inf", "nan", "+nan", "-nan", "0", "-0", "0.0", "-0.0", "1", "-1", "1e400", "-1e400",
        "1e308", "5e-324", "0.1", "0.0999", "0.5", "0.4999", "300", "300.0001", "3600", "3600.5", "4096",
        "4097", "65535", "65536", "86400", "2.5", "1_000", "0x1BB", "0o777", "0b101", "+443",
        "9223372036854775807", "-9223372036854775808", "99999999999999999999999", "1e-400",
        str(rng.randint(-10**6, 10**6)), repr(rng.uniform(-1e4, 1e4)), repr(rng.uniform(0, 400)),
    ])


def _scalar(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.35:
        return _number(rng)
    if kind < 0.45:
        return rng.choice(["true", "false", "1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "1979-05-27 07:32"])
    pool = rng.choice([NAMES, UNICODE_DIGITS, FEATURES, HOSTS, BLOCKED])
    text = rng.choice(pool)
    if rng.random() < 0.1:
        text += rng.choice(["\x00", "\x7f", "\u202e", "\ud7ff", "\n", "\t", "\\", '"', "[/x]", "\u00e9"])
    return _string(text, rng)


def _value(rng: random.Random, depth: int = 0) -> str:
    kind = rng.random()
    if depth < 3 and kind < 0.15:
        return "[" + ", ".join(_value(rng, depth + 1) for _ in range(rng.randint(0, 4))) + "]"
    if depth < 3 and kind < 0.22:
        keys = [_key(rng) for _ in range(rng.randint(0, 3))]
        return "{" + ", ".join(f"{k} = {_value(rng, depth + 1)}" for k in dict.fromkeys(keys)) + "}"
    return _scalar(rng)


def _key(rng: random.Random) -> str:
    name = rng.choice(REAL_KEYS) if rng.random() < 0.93 else rng.choice(UNKNOWN_KEYS)
    if rng.random() < 0.3:
        name = name.replace("_", "-")
    bare = name and all(c in string.ascii_letters + string.digits + "_-" for c in name)
    return name if bare and rng.random() < 0.8 else json.dumps(name, ensure_ascii=False)


def _good(name: str, rng: random.Random) -> str:
    """A value the key accepts (mostly), so that a fair share of the configs plan to the end."""
    good: dict[str, Callable[[], str]] = {
        "region": lambda: _string(rng.choice(["eastus", "westeurope", "westus2"]), rng),
        "cloud": lambda: _string(rng.choice(context.CLOUDS), rng),
        "compute": lambda: _string(rng.choice(context.COMPUTE_KINDS), rng),
        "workspace_id": lambda: _string("9f1c2a3b-4d5e-4f60-8a7b-0c1d2e3f4a5b", rng),
        "workspace_name": lambda: _string("contoso-ml", rng),
        "storage_account": lambda: _string("contosomlsa", rng),
        "container_registry": lambda: _string("contosoacr", rng),
        "key_vault": lambda: _string("contoso-kv", rng),
        "compute_name": lambda: _string("ci-alice", rng),
        "identity_endpoint": lambda: _string("http://127.0.0.1:46808/MSI/auth", rng),
        "identity_client_id": lambda: _string("9f1c2a3b-4d5e-4f60-8a7b-0c1d2e3f4a5b", rng),
        "timeout": lambda: repr(rng.uniform(0.1, 300)),
        "deadline": lambda: str(rng.randint(1, 3600)),
        "concurrency": lambda: str(rng.randint(1, 4096)),
        "expected_issuers": lambda: "[" + ", ".join(_string(s, rng) for s in ("Microsoft Corporation", "x")) + "]",
        "with": lambda: "[" + ", ".join(_string(f, rng) for f in rng.sample(FEATURES, rng.randint(0, 3))) + "]",
    }
    if name in good:
        return good[name]()
    if name in context.KEYS_BY_NAME:  # the booleans
        return rng.choice(["true", "false"])
    return _value(rng)


def _near_miss(name: str, rng: random.Random) -> str:
    """A value just outside what the key accepts."""
    near = {
        "timeout": ["inf", "nan", "-inf", "0", "0.0999", "300.0001", "-1", '"5"', "true", "1e400"],
        "deadline": ["inf", "nan", "0.4999", "3600.5", "[60]"],
        "concurrency": ["inf", "nan", "0", "4097", "2.5", "128.0", '"128"'],
        "with": ['["rstuido"]', '["RStudio"]', '"rstudio"', "[1]", '[""]', '["rstudio", "vs code"]',
                 '["' + UNICODE_DIGITS[0] + '"]'],
        "region": ['"East US"', '"eastus\\n"', '"' + UNICODE_DIGITS[1] + '"', "5"],
        "cloud": ['"mars"', '"Public"'],
        "workspace_id": ['"not-a-guid"', '"9F1C2A3B-4D5E-4F60-8A7B-0C1D2E3F4A5B"'],
    }
    return rng.choice(near[name]) if name in near else _value(rng)


def _endpoint(rng: random.Random) -> list[str]:
    if rng.random() < 0.6:
        host = rng.choice(["pypi.contoso.net", "10.20.0.5", "graph.windows.net", "xn--bcher-kva.example"])
        probe = rng.choice(["https", "websocket", "tcp", "udp", "dns"])
        return [f"host = {_string(host, rng)}", f"port = {rng.randint(1, 65535)}", f"probe = {_string(probe, rng)}",
                f"required = {rng.choice(['true', 'false'])}", f"purpose = {_string('mirror [/x]', rng)}"]
    fields = {
        "host": lambda: _string(rng.choice(HOSTS), rng) if rng.random() < 0.9 else _value(rng),
        "port": lambda: rng.choice(["443", "5000", "0", "65536", "-1", "1.5", "true", '"443"',
                                    _string(rng.choice(UNICODE_DIGITS), rng), "inf", "nan", "65535", "1"]),
        "probe": lambda: _string(rng.choice(["https", "websocket", "tcp", "udp", "dns", "ftp", "HTTPS", ""]), rng),
        "purpose": lambda: _string("our mirror [/x] " * rng.randint(0, 3), rng) if rng.random() < 0.8 else _value(rng),
        "required": lambda: rng.choice(["true", "false", '"yes"', "1"]),
        "colour": lambda: _value(rng),
    }
    chosen = [f for f in fields if (f in ("host", "port") and rng.random() < 0.9) or rng.random() < 0.4]
    return [f"{name} = {fields[name]()}" for name in chosen]


def _policy(rng: random.Random) -> list[str]:
    lines = []
    if rng.random() < 0.9:
        pool = BLOCKED if rng.random() < 0.4 else BLOCKED[:3] + BLOCKED[-2:]  # the valid ones, mostly
        entries = [_string(rng.choice(pool), rng) for _ in range(rng.randint(0, 4) if rng.random() < 0.98 else 257)]
        lines.append("blocked = [" + ", ".join(entries) + "]" if rng.random() < 0.9 else f"blocked = {_value(rng)}")
    if rng.random() < 0.5:
        lines.append(f"reason = {_string('Contoso policy [/x] [bold]', rng) if rng.random() < 0.8 else _value(rng)}")
    if rng.random() < 0.05:
        lines.append(f"allowed = {_value(rng)}")
    return lines


def _deep(rng: random.Random) -> str:
    n = rng.choice([5, 16, 17, 50, 300, 2_000, 20_000])
    return rng.choice([
        "with = " + "[" * n + "]" * n,
        "region = " + "{a = " * n + "1" + "}" * n,
        "a" + ".a" * n + " = 1",
        "[a" + ".a" * n + "]",
        "[[endpoint" + ".a" * n + "]]",
        "policy.blocked = " + "[" * n + '"x.y"' + "]" * n,
        '"a"' + '."b"' * n + " = 1",
        "x = [" + "{a = [" * (n // 2) + "]}" * (n // 2) + "]",
    ])


def _corrupt(text: str, rng: random.Random) -> bytes:
    data = bytearray(text.encode("utf-8"))
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(data))
        junk = rng.choice([b"[", b"]", b"{", b'"', b"'", b"=", b"\n", b"\x00", b"\xff", b"\xc3", b"#", b".", b"\\"])
        data[at:at + rng.randint(0, 2)] = junk
    return bytes(data)


def generate(rng: random.Random) -> bytes:
    """One config file's bytes."""
    lines: list[str] = []
    names: set[str] = set()
    for _ in range(rng.randint(0, 8)):
        key = _key(rng)
        name = (json.loads(key) if key.startswith('"') else key).replace("-", "_")
        if name in names and rng.random() < 0.95:
            continue  # a key given twice is a TOML error: now and then, not in most configs
        names.add(name)
        roll = rng.random()
        value = _good(name, rng) if roll < 0.75 else _near_miss(name, rng) if roll < 0.92 else _value(rng)
        if name in ("endpoint", "policy") and roll < 0.92:
            continue  # written as tables below
        lines.append(f"{key} = {value}")
    if rng.random() < 0.05:
        lines.append("private-endpoint = true\nprivate_endpoint = false")
    if rng.random() < 0.04:
        lines.append(_deep(rng))
    if rng.random() < 0.02:  # a huge string: over the size bound, or under it in a key that echoes values
        huge = _string("x" * rng.choice([100_000, config.MAX_BYTES]), rng)
        lines.append(rng.choice([f"region = {huge}", f"with = [{huge}]", f"purpose_x = {huge}"]))
    for _ in range(rng.choice([0, 0, 1, 2, 4]) if rng.random() < 0.99 else config.MAX_ENDPOINTS + 1):
        lines.append("[[endpoint]]" if rng.random() < 0.95 else "[[endpoints]]")
        lines.extend(_endpoint(rng))
    if rng.random() < 0.4:
        lines.append("[policy]" if rng.random() < 0.95 else "[policy.x]")
        lines.extend(_policy(rng))
    text = "\n".join(lines) + "\n"
    return _corrupt(text, rng) if rng.random() < 0.06 else text.encode("utf-8")


def _extra_options(rng: random.Random) -> list[str]:
    """Options beside --config in a few runs; an error may then name the option instead of the file."""
    if rng.random() < 0.9:
        return []
    return rng.choice([["--with", rng.choice([*FEATURES, "rstuido", "", "rstudio,,vscode", UNICODE_DIGITS[0]])],
                       ["--region", "eastus"], ["--cloud", rng.choice([*context.CLOUDS, "mars"])],
                       ["--compute", "cluster", "--private-endpoint"]])


@pytest.fixture
def fast_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI as it runs, less typer rebuilding the same click command on each call (about 15 ms
    of each main() here); no proxy from this machine's environment or /etc/environment."""
    monkeypatch.setattr(typer.main, "get_command", functools.cache(typer.main.get_command))
    for name in node.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "environment").write_text("")
    monkeypatch.setattr(node, "ETC_ENVIRONMENT", tmp_path / "environment")


@pytest.mark.usefixtures("fast_cli")
def test_ten_thousand_generated_configs_exit_0_or_3_with_one_line(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "fuzz.toml"
    failures: list[str] = []
    outcomes: collections.Counter[str] = collections.Counter()
    for index in range(COUNT):
        data = generate(rng)
        extra = _extra_options(rng)
        command = "rules" if rng.random() < 0.1 else "plan"
        path.write_bytes(data)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([command, "--no-detect", "--config", str(path), "--format", "json", *extra])
        stderr = err.getvalue()
        problem = ""
        if code not in (0, 3):
            problem = f"exit {code}"
        elif "Traceback" in stderr + out.getvalue() or "internal error" in stderr:
            problem = "a crash"
        elif code == 3 and not (stderr.count("\n") == 1 and stderr.endswith("\n") and len(stderr) < 1000):
            problem = "not one short line"
        elif code == 3 and not extra and f"config {path}" not in stderr:
            problem = "no file named"
        elif code == 0 and (stderr or not out.getvalue().startswith("{")):
            problem = "exit 0 without a plain JSON answer"
        elif code == 0:
            problem = _accepted_wrongly(config.load(path))
        if problem:
            failures.append(f"#{index} {problem}: {[command, *extra]} {data[:300]!r} -> {stderr[:300]!r}")
        outcomes["exit 0" if code == 0 else _kind(stderr)] += 1
    assert not failures, f"{len(failures)} of {COUNT} (seed {SEED}):\n" + "\n".join(failures[:20])
    # The generator must keep reaching every kind of refusal, and a fair share of plans to the end.
    assert outcomes["exit 0"] >= COUNT // 10, outcomes
    for kind in ("invalid TOML", "not UTF-8", "nested deeper", "larger than", "unknown key", "finite number",
                 "whole number", "unknown feature", "port", "host", "given twice", "policy", "at most"):
        assert outcomes[kind] >= 5, (kind, outcomes)


def _accepted_wrongly(cfg: config.Config) -> str:
    """What a config that exit 0 accepted must not hold: silent acceptance is the other failure."""
    for name, (low, high) in DOCUMENTED.items():
        number = getattr(cfg.settings, name)
        if number is not None and not low <= number <= high:
            return f"{name} = {number!r} accepted"
    if not set(cfg.settings.features) <= set(FEATURES):
        return f"unknown features {cfg.settings.features!r} accepted"
    for entry in cfg.policy.blocked:
        port = entry.partition(":")[2]
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            return f"blocked {entry!r} accepted"
    if any(not (0 < e.port < 65536 and isinstance(e.purpose, str)) for e in cfg.endpoints):
        return f"endpoints {cfg.endpoints!r} accepted"
    return ""


def _kind(stderr: str) -> str:
    for kind in ("invalid TOML", "not UTF-8", "nested deeper", "more than", "larger than", "at most", "given twice",
                 "unknown feature", "unknown key", "finite number", "whole number", "port", "host", "policy"):
        if kind in stderr:
            return kind
    return "other"
