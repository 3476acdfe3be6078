"""The real consumers the CI formats are read by, for the unit and the lab tests: the JUnit
schemas of Jenkins and Ant (tests/unit/schemas) through xmlschema, node-tap's TAP 14 parser
(tests/consumers, installed by ./dev with npm ci) through node, jq for NDJSON, and pandoc's GFM
reader for the markdown a ticket shows."""

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


def gfm_blocks(document: str) -> list[tuple[str, Any]]:
    """What pandoc's GitHub-flavoured markdown reader makes of `document`, block by block:
    ("heading", (level, text)), ("table", [header cells, *row cells]), ("list", [item text]) or
    ("para", text); inline markup is reduced to its text."""
    proc = subprocess.run([_tool("pandoc"), "--from", "gfm", "--to", "json"], input=document, capture_output=True,
                          text=True, check=True, timeout=60)
    return [_block(block) for block in json.loads(proc.stdout)["blocks"]]


def _block(block: dict[str, Any]) -> tuple[str, Any]:
    kind, content = block["t"], block.get("c")
    if kind == "Header":
        return "heading", (content[0], _text(content[2]))
    if kind == "Table":  # attr, caption, column specs, head, bodies, foot: rows of cells of blocks
        head, bodies = content[3], content[4]
        rows = head[1] + [row for body in bodies for row in body[3]]
        return "table", [[" ".join(_block(b)[1] for b in cell[4]) for cell in row[1]] for row in rows]
    if kind == "BulletList":
        return "list", [" ".join(_block(b)[1] for b in item) for item in content]
    if kind in ("Para", "Plain"):
        return "para", _text(content)
    return kind, content


def _text(inlines: list[dict[str, Any]]) -> str:
    parts = []
    for inline in inlines:
        kind, content = inline["t"], inline.get("c")
        if kind == "Str":
            parts.append(content)
        elif kind in ("Space", "SoftBreak", "LineBreak"):
            parts.append(" ")
        elif kind in ("Code", "RawInline"):
            parts.append(content[1])
        elif kind in ("Emph", "Strong", "Strikeout", "Underline"):
            parts.append(_text(content))
        else:
            parts.append(f"<{kind}>")  # a link, an image, a note: nothing the renderers write
    return "".join(parts)
