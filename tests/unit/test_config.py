"""The config file: same keys as the options, validated at load time with one-line errors."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

import pytest

from agent.inputs import config, context, values
from agent.inputs.given import Inputs

from .helpers import tomllib


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "aml-netcheck.toml"
    path.write_text(text)
    return path


def test_context_and_settings(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, '''
region = "westeurope"
private-endpoint = true
storage_account = "mysa01"
timeout = 3
with = ["rstudio"]
expected_issuers = ["Microsoft Corporation", "Contoso Firewall"]
'''))
    assert cfg.context == {"region": "westeurope", "private_endpoint": True, "storage_account": "mysa01"}
    assert cfg.settings.timeout == 3.0 and cfg.settings.features == ("rstudio",)
    assert cfg.settings.expected_issuers == ("Microsoft Corporation", "Contoso Firewall")


@pytest.mark.parametrize(("text", "message"), [
    ("region = [", "invalid TOML"),
    ("regoin = 'eastus'", "unknown key 'regoin'"),
    ("region = 5", "region: expected a string"),
    ("public_ip = 'yes'", "public_ip: expected true or false"),
    ("cloud = 'mars'", "cloud: must be one of public, usgov, china"),
    ("workspace_id = 'not-a-guid'", "workspace_id: a workspace GUID"),
    ("timeout = -1", "timeout: expected a finite number of seconds from 0.1 to 300, not -1"),
    ("concurrency = 2.5", "concurrency: expected a whole number from 1 to 4096, not 2.5"),
    ("with = 'rstudio'", "with: expected a list of strings"),
    ("private-endpoint = true\nprivate_endpoint = false",
     "private_endpoint: given twice (as 'private-endpoint' and 'private_endpoint')"),
    ("[[endpoint]]\nhost = 'x.y'\nport = 1\n\"a\\nb\" = 1", "endpoint #1: unknown key(s) 'a\\nb'"),
    ("[[endpoint]]\nhost = 'x.y'\nport = 1\npurpose = 5", "endpoint #1: purpose must be a string, not 5"),
    ("[[endpoint]]\nhost = '" + "a" * 60 + ".b" * 100 + "'\nport = 1", "endpoint #1: host must be a DNS name"),
    ("[[endpoint]]\nhost = 'x.y'\nport = 1\nprobe = ['tcp']", "probe must be one of"),
    ("[[endpoint]]\nhost = 'x.y'\nport = 1\nprobe = {a = 1}", "probe must be one of"),
    ("\"\\n\" = 1", "unknown key '\\n'"),
    ("\"\" = 1", "unknown key ''"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load(write(tmp_path, text))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize(("text", "message"), [
    # inf ran forever against a stalled peer; nan failed every check at once (a false critical)
    ("timeout = inf", "timeout: expected a finite number of seconds from 0.1 to 300, not inf"),
    ("timeout = -inf", "timeout: expected a finite number of seconds from 0.1 to 300, not -inf"),
    ("timeout = nan", "timeout: expected a finite number of seconds from 0.1 to 300, not nan"),
    ("timeout = 1e400", "timeout: expected a finite number of seconds from 0.1 to 300, not inf"),
    ("timeout = 0.05", "timeout: expected a finite number of seconds from 0.1 to 300, not 0.05"),
    ("timeout = 300.5", "timeout: expected a finite number of seconds from 0.1 to 300, not 300.5"),
    ("deadline = inf", "deadline: expected a finite number of seconds from 0.5 to 3600, not inf"),
    ("deadline = nan", "deadline: expected a finite number of seconds from 0.5 to 3600, not nan"),
    ("deadline = 0.4", "deadline: expected a finite number of seconds from 0.5 to 3600, not 0.4"),
    ("deadline = 1e9", "deadline: expected a finite number of seconds from 0.5 to 3600, not 1000000000.0"),
    ("concurrency = inf", "concurrency: expected a whole number from 1 to 4096, not inf"),
    ("concurrency = nan", "concurrency: expected a whole number from 1 to 4096, not nan"),
    ("concurrency = 4097", "concurrency: expected a whole number from 1 to 4096, not 4097"),
    ("concurrency = 0", "concurrency: expected a whole number from 1 to 4096, not 0"),
    ("concurrency = 99999999999999999999999", "concurrency: expected a whole number from 1 to 4096, not 9999"),
    ("timeout = true", "timeout: expected a finite number of seconds from 0.1 to 300, not True"),
    ("[latency]\ntcp_ms = -1", "latency.tcp_ms: expected a finite number of milliseconds from 1 to 300000, not -1"),
    ("[latency]\ntls_ms = inf", "latency.tls_ms: expected a finite number of milliseconds from 1 to 300000, not inf"),
    ("[latency]\nhttp_ms = nan", "latency.http_ms: expected a finite number of milliseconds from 1 to 300000, not nan"),
    ("[latency]\ndns_ms = 300001", "latency.dns_ms: expected a finite number of milliseconds from 1 to 300000"),
    ("[latency]\ntcp_ms = \"300\"", "latency.tcp_ms: expected a finite number of milliseconds from 1 to 300000"),
    ("[latency]\nudp_ms = 300", "latency: unknown key 'udp_ms' (known: dns_ms, tcp_ms, tls_ms, http_ms)"),
    ("[latency]\ntcp = 300", "latency: unknown key 'tcp' (known: dns_ms, tcp_ms, tls_ms, http_ms)"),
    ("[latency]\ntcp_ms = 300\ntcp-ms = 400", "latency.tcp_ms: given twice"),
    ("latency = 300", "latency: expected a [latency] table with dns_ms, tcp_ms, tls_ms, http_ms"),
])
def test_numbers_are_finite_and_within_the_documented_bounds(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load(write(tmp_path, text))
    assert str(info.value).startswith(f"config {tmp_path}") and message in str(info.value)


def test_latency_thresholds_are_read_by_layer(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, "[latency]\ntcp_ms = 150\nhttp-ms = 3000.5\n")).settings
    assert settings.latency == {"tcp": 150.0, "http": 3000.5}
    assert config.load(write(tmp_path, "timeout = 5\n")).settings.latency == {}


def test_the_bounds_themselves_are_accepted(tmp_path: Path) -> None:
    low = config.load(write(tmp_path, "timeout = 0.1\ndeadline = 0.5\nconcurrency = 1\n")).settings
    high = config.load(write(tmp_path, "timeout = 300\ndeadline = 3600\nconcurrency = 4096\n")).settings
    assert (low.timeout, low.deadline, low.concurrency) == (0.1, 0.5, 1)
    assert (high.timeout, high.deadline, high.concurrency) == (300.0, 3600.0, 4096)
    assert isinstance(high.timeout, float) and isinstance(high.concurrency, int)


def test_an_unknown_feature_is_refused_naming_it_and_the_valid_ones(tmp_path: Path) -> None:
    """`with = ["rstuido"]` once selected nothing, silently: RStudio's requirements went unchecked."""
    with pytest.raises(config.ConfigError) as info:
        config.load(write(tmp_path, 'with = ["rstudio", "rstuido", "vscode", "RStudio"]'))
    assert str(info.value) == (f"config {tmp_path / 'aml-netcheck.toml'}: with: unknown features 'rstuido', 'RStudio' "
                               f"(valid: {', '.join(values.features())})")


def test_the_valid_features_are_the_catalogs() -> None:
    rows = tomllib.loads(resources.files("agent").joinpath("data/requirements.toml").read_text("utf-8"))["requirement"]
    assert values.features() == tuple(sorted({row["feature"] for row in rows if "feature" in row}))
    assert {"rstudio", "vscode", "automl", "custom-apps"} <= set(values.features())


def test_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="cannot read config"):
        config.load(tmp_path / "missing.toml")
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(config.ConfigError, match="not UTF-8"):
        config.load(binary)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_a_device_is_refused_without_reading_it(device: str) -> None:
    """`--config /dev/zero` grew until MemoryError: only a regular file is read."""
    with pytest.raises(config.ConfigError, match=f"^config {device}: not a regular file$"):
        config.load(Path(device))


def test_a_fifo_or_a_directory_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(config.ConfigError, match="not a regular file"):
        config.load(fifo)
    with pytest.raises(config.ConfigError, match="not a regular file"):
        config.load(tmp_path)


def test_a_symlink_to_a_device_is_refused(tmp_path: Path) -> None:
    (tmp_path / "link.toml").symlink_to("/dev/zero")
    with pytest.raises(config.ConfigError, match="not a regular file"):
        config.load(tmp_path / "link.toml")


def test_the_size_is_bounded(tmp_path: Path) -> None:
    at_limit = "#" * (config.MAX_BYTES - 1) + "\n"
    assert config.load(write(tmp_path, at_limit)) == config.Config()
    with pytest.raises(config.ConfigError, match=r"larger than 1024 KiB$"):
        config.load(write(tmp_path, at_limit + "\n"))


FLEET_ENDPOINT = ('[[endpoint]]\nhost = "mirror{i}.pypi.contoso.net"\nport = 443\nprobe = "https"\n'
                  'purpose = "our package mirror, region {i}"\nrequired = true\n\n')


def test_a_fleet_of_5000_endpoints_is_read_and_planned(tmp_path: Path) -> None:
    """Issue 10's scale targets are 1,000 HTTPS and 5,000 TCP endpoints: the bound was 256."""
    text = "".join(FLEET_ENDPOINT.format(i=i) for i in range(5000))
    cfg = config.load(write(tmp_path, text))
    assert len(cfg.endpoints) == 5000 and cfg.endpoints[-1].host == "mirror4999.pypi.contoso.net"
    inputs = Inputs.build({"region": "eastus"}, cfg, (), detect_context=False)
    _, checks = inputs.plan(inputs.context())
    assert {f"http:mirror{i}.pypi.contoso.net:443" for i in range(5000)} <= {c.id for c in checks}


def test_more_endpoints_than_the_bound_are_one_line_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "".join(FLEET_ENDPOINT.format(i=i) for i in range(5001)))
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert str(info.value) == f"config {path}: endpoint: at most 5000 [[endpoint]] tables, not 5001"


def test_endpoints_and_blocked_entries_are_bounded(tmp_path: Path) -> None:
    endpoint = "[[endpoint]]\nhost = 'x.y'\nport = 443\n"
    assert len(config.load(write(tmp_path, endpoint * config.MAX_ENDPOINTS)).endpoints) == config.MAX_ENDPOINTS
    with pytest.raises(config.ConfigError, match=r"endpoint: at most 5000 \[\[endpoint\]\] tables, not 5001$"):
        config.load(write(tmp_path, endpoint * (config.MAX_ENDPOINTS + 1)))
    blocked = [f"h{i}.contoso.net" for i in range(config.MAX_BLOCKED + 1)]
    assert len(config.load(write(tmp_path, f"[policy]\nblocked = {blocked[1:]}")).policy.blocked) == 256
    with pytest.raises(config.ConfigError, match=r"policy.blocked: at most 256 entries, not 257$"):
        config.load(write(tmp_path, f"[policy]\nblocked = {blocked}"))


@pytest.mark.parametrize(("text", "message"), [
    # each header makes 14 tables: 1 MiB of them took tomllib 3.7 s and 428 MiB
    ("[a.b.c.d.e.f.g.h.i.j.k.l.m.n]\n" * 2000, "more than 20,000 tables, arrays and dotted-key parts (line 1429)"),
    ("x = [" + "{}," * 20_001 + "]", "more than 20,000 tables, arrays and dotted-key parts (line 1)"),
    ("x = [" + "1," * 130_000 + "]", "more than 120,000 values, brackets and lines (line 1)"),  # 524,000 took 1.8 s
    ("# a comment\n" * 70_000, "more than 120,000 values, brackets and lines (line 60001)"),
])
def test_what_the_parser_would_spend_is_counted_before_it_runs(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert str(info.value) == f"config {path}: {message}"


DEEP = 50_000  # the 100 kB key
TOO_DEEP = config.MAX_NESTING + 1


@pytest.mark.parametrize("text", [
    "a" + ".a" * DEEP + " = 1",  # parsed, this took tomllib 90 s and 9 GB
    "[a" + ".a" * DEEP + "]",
    "[[a" + ".a" * DEEP + "]]",
    "with = " + "[" * DEEP + "]" * DEEP,  # RecursionError in tomllib
    "region = " + "{a = " * (DEEP // 5) + "1" + "}" * (DEEP // 5),
    "x = {" + "a." * DEEP + "a = 1}",
    "a" + ".a" * TOO_DEEP + " = 1",
    "endpoint = " + "[" * TOO_DEEP + "]" * TOO_DEEP,
    '"a"."b"' + '."c"' * TOO_DEEP + " = 1",
])
def test_deep_nesting_is_refused_before_parsing(tmp_path: Path, text: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load(write(tmp_path, text))
    expected = f"nested deeper than {config.MAX_NESTING} levels (line 1)"
    assert str(info.value) == f"config {tmp_path / 'aml-netcheck.toml'}: {expected}"


@pytest.mark.parametrize(("text", "message"), [
    ("a" + ".a" * config.MAX_NESTING + " = 1", "unknown key 'a'"),
    ("with = " + "[" * config.MAX_NESTING + "]" * config.MAX_NESTING, "with: expected a list of strings"),
])
def test_nesting_up_to_the_bound_is_left_to_the_parser(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.load(write(tmp_path, text))


def test_brackets_and_dots_in_strings_and_comments_are_not_nesting(tmp_path: Path) -> None:
    deep = "[{." * 50
    cfg = config.load(write(tmp_path, "\n".join([
        f"# {deep}",
        f"[policy]  # {deep}",
        "blocked = [",
        '  "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.contoso.net",  # ' + deep,
        "]",
        f'reason = """{deep} "quoted" \\""" {deep}',
        '"""',
        "[[endpoint]]",
        "host = 'x.y'",
        "port = 443",
        "purpose = '''" + deep + "''''",  # a fourth quote belongs to the string
    ])))
    assert cfg.policy.blocked == ("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.contoso.net",)
    assert cfg.policy.reason == f'{deep} "quoted" """ {deep}\n' and cfg.endpoints[0].purpose == deep + "'"


def test_options_beat_config_beat_defaults() -> None:
    values = context.build([("option", {"region": "eastus"}), ("config", {"region": "westus", "compute": "cluster"})])
    assert (values["region"].value, values["region"].source) == ("eastus", "option")
    assert (values["compute"].value, values["compute"].source) == ("cluster", "config")
    assert (values["cloud"].value, values["cloud"].source) == ("public", "default")
    assert (values["storage_account"].value, values["storage_account"].source) == (None, "unknown")


def test_extra_endpoints_and_policy(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, '''
[[endpoint]]
host = "PyPI.contoso.net"
port = 443
purpose = "our package mirror"

[[endpoint]]
host = "10.20.0.5"
port = 5000
probe = "tcp"
required = false

[[endpoint]]
host = "files.contoso.net"
port = 445
probe = "smb"

[policy]
blocked = ["*.anaconda.com", "graph.windows.net:443"]
reason = "Contoso policy: packages come from the mirror"
'''))
    assert cfg.endpoints == (config.Endpoint("pypi.contoso.net", 443, "https", "our package mirror", True),
                             config.Endpoint("10.20.0.5", 5000, "tcp", "", False),
                             config.Endpoint("files.contoso.net", 445, "smb", "", True))
    assert cfg.policy == config.Policy(("*.anaconda.com", "graph.windows.net:443"),
                                       "Contoso policy: packages come from the mirror")


@pytest.mark.parametrize(("text", "message"), [
    ("[[endpoint]]\nhost = 'x.net'\nport = 70000", "endpoint #1: port must be 1-65535"),
    ("[[endpoint]]\nhost = '*.x.net'\nport = 443", "endpoint #1: host must be a DNS name"),
    ("[[endpoint]]\nhost = 'x.net'\nport = 443\nprobe = 'ftp'", "probe must be one of"),
    ("[[endpoint]]\nhost = 'x.net'\nport = 443\ncolour = 1", "unknown key(s) 'colour'"),
    ("[policy]\nblocked = ['a b']", "not a host, *.suffix or host:port"),
    ("[policy]\nallowed = []", "policy: expected a [policy] table"),
])
def test_bad_endpoints_and_policy(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.load(write(tmp_path, text))


@pytest.mark.parametrize("entry", [
    "graph.windows.net:44\u00b2",  # a superscript two: str.isdigit() said yes, int() said no (internal error)
    "graph.windows.net:\uff14\uff14\uff13",  # fullwidth 443: int() read it, the config said nothing
    "graph.windows.net:\u0664\u0664\u0663",  # Arabic-Indic 443
    "graph.windows.net:0", "graph.windows.net:65536", "graph.windows.net:", "graph.windows.net:+443",
    "graph.windows.net: 443", "graph.windows.net:443:1", ":443",
])
def test_a_blocked_port_is_ascii_digits_within_1_65535(tmp_path: Path, entry: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load(write(tmp_path, f"[policy]\nblocked = [{entry!r}]"))
    assert "policy.blocked: " in str(info.value) and "\n" not in str(info.value)


def test_blocked_ports_at_the_bounds_are_kept(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "[policy]\nblocked = ['a.b:1', '*.c.d:65535', 'e.f']"))
    assert cfg.policy.blocked == ("a.b:1", "*.c.d:65535", "e.f")


def test_policy_reason_has_a_default(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "[policy]\nblocked = ['pypi.org']\n"))
    assert cfg.policy == config.Policy(("pypi.org",), "blocked by policy")
