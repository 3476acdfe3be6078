"""The real consumers the CI formats are read by, for the unit and the lab tests: the JUnit
schemas of Jenkins and Ant (tests/unit/schemas) through xmlschema, node-tap's TAP 14 parser
(tests/consumers, installed by ./dev with npm ci) through node, and jq for NDJSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Any

import xmlschema

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).with_name("schemas")
CONSUMERS = ROOT / "tests" / "consumers"
JUNIT_SCHEMAS = ("jenkins-junit-10.xsd", "ant-junit.xsd")


@cache
def _schema(name: str) -> xmlschema.XMLSchema10:
    return xmlschema.XMLSchema10(str(SCHEMAS / name))


def junit_errors(document: str) -> list[str]:
    """Every reason either schema refuses `document` (an XML 1.0 parse error included)."""
    try:
        return [f"{name}: {error.reason or error}" for name in JUNIT_SCHEMAS
                for error in _schema(name).iter_errors(document)]
    except ET.ParseError as exc:  # xmlschema raises its own subclass: the document is no XML
        return [f"not XML: {exc}"]


def parse_junit(document: str) -> ET.Element:
    errors = junit_errors(document)
    assert errors == [], errors[:5]
    return ET.fromstring(document)


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed: ./dev installs it"
    return found


def parse_tap(stream: str) -> dict[str, Any]:
    """What node-tap's parser (strict) reads from `stream`: version, asserts, comments, extra, final."""
    assert (CONSUMERS / "node_modules" / "tap-parser").is_dir(), "tap-parser is not installed: ./dev runs npm ci"
    proc = subprocess.run([_tool("node"), str(CONSUMERS / "parse-tap.cjs")], input=stream, capture_output=True,
                          text=True, check=True, timeout=60)
    parsed: dict[str, Any] = json.loads(proc.stdout)
    return parsed


def jq_lines(stream: str, program: str = ".") -> list[Any]:
    """jq's reading of an NDJSON stream: `program` applied to each line, one compact result a line."""
    proc = subprocess.run([_tool("jq"), "-c", program], input=stream, capture_output=True, text=True, check=True,
                          timeout=60)
    return [json.loads(line) for line in proc.stdout.splitlines()]
