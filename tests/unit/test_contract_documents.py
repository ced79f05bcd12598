"""The committed JSON Schemas and AsyncAPI document match the models, validate real messages with
an independent validator, and a breaking change needs a schema version bump."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from packline_contracts import documents
from packline_contracts.compat import breaking_changes
from packline_contracts.envelope import encode
from packline_contracts.examples import example_envelope
from packline_contracts.registry import MESSAGE_TYPES

ROOT = Path(__file__).resolve().parents[2]


def test_committed_documents_are_up_to_date() -> None:
    stale = [str(path.relative_to(ROOT)) for path in documents.stale_files()]
    assert not stale, f"run 'packline-contracts generate' and commit: {stale}"


def test_no_breaking_change_without_a_version_bump() -> None:
    assert documents.unbumped_breaking_changes() == {}


@pytest.mark.parametrize("message_type", sorted(MESSAGE_TYPES))
def test_committed_schema_validates_a_real_message(message_type: str) -> None:
    cls = MESSAGE_TYPES[message_type]
    schema = json.loads((documents.SCHEMA_DIR / documents.schema_file_name(cls)).read_text())
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    message = json.loads(encode(example_envelope(message_type)).value)
    validator.validate(message)
    broken = copy.deepcopy(message)
    broken["occurred_at"] = 17
    assert not validator.is_valid(broken)


def test_asyncapi_document_is_valid_asyncapi_3() -> None:
    node = shutil.which("node")
    tools = ROOT / "contracts/tools"
    assert node, "Node.js is needed to validate the AsyncAPI document"
    assert (tools / "node_modules/@asyncapi/parser").is_dir(), (
        "run 'deploy/packline setup' (npm ci --prefix contracts/tools)"
    )
    result = subprocess.run(
        [node, str(tools / "validate-asyncapi.mjs"), str(documents.ASYNCAPI_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid AsyncAPI 3.0.0" in result.stdout


BASE: dict[str, object] = {
    "type": "object",
    "properties": {
        "a": {"type": "integer"},
        "b": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "c": {"$ref": "#/$defs/C"},
    },
    "required": ["a"],
    "$defs": {"C": {"type": "object", "properties": {"x": {"enum": ["p", "q"]}}}},
}


def changed(edit: str) -> dict[str, object]:
    schema = copy.deepcopy(BASE)
    exec(edit, {"s": schema})
    return schema


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ("del s['properties']['a']", "a: field removed"),
        ("s['required'].append('b')", "b: field is now required"),
        ("s['properties']['a'] = {'type': 'string'}", "a.: type changed"),
        ("s['$defs']['C']['properties']['x']['enum'] = ['p']", "enum values removed"),
        ("del s['$defs']['C']['properties']['x']", "c.x: field removed"),
    ],
)
def test_breaking_changes_are_found(edit: str, problem: str) -> None:
    problems = breaking_changes(BASE, changed(edit))
    assert any(problem in found for found in problems), problems


@pytest.mark.parametrize(
    "edit",
    [
        "s['properties']['d'] = {'type': 'string', 'default': ''}",
        "s['required'].remove('a')",
        "s['$defs']['C']['properties']['x']['enum'].append('r')",
        "s['properties']['a']['description'] = 'now documented'",
    ],
)
def test_compatible_changes_pass(edit: str) -> None:
    assert breaking_changes(BASE, changed(edit)) == []
