from __future__ import annotations

import ast
from pathlib import Path

from packline_contracts.topics import SERVICES, TOPICS, dead_letter_topic

ROOT = Path(__file__).resolve().parents[2]


def test_topic_names_are_unique_and_every_service_has_a_dead_letter_topic() -> None:
    names = [topic.name for topic in TOPICS]
    assert len(names) == len(set(names))
    for service in SERVICES:
        assert dead_letter_topic(service) in TOPICS


def test_no_topic_name_is_written_outside_the_registry() -> None:
    registry = ROOT / "contracts/packline_contracts/topics.py"
    offenders = []
    for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("contracts/**/*.py")]:
        if path == registry:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if node.value.startswith("packline.") and node.value.count(".") >= 2:
                    offenders.append(f"{path.relative_to(ROOT)}: {node.value!r}")
    assert not offenders, offenders


def test_contracts_import_nothing_from_the_services() -> None:
    for path in ROOT.glob("contracts/**/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [alias.name for alias in node.names]
                )
                for module in modules:
                    assert not module.startswith(
                        (
                            "packline_core",
                            "packline_calendar",
                            "packline_invoicing",
                            "packline_matcher",
                        )
                    ), path
