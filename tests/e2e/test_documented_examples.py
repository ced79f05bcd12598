"""What an integrator runs in their first hour, run as written against the three services as
processes: the demo (several times in a row, each on a new patient) and every ``python`` code
block of the README and of docs/ (a block marked ``python fragment`` is a sketch and is not run).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.conftest import CreateDatabase, Infrastructure
from tests.e2e.packline_processes import Processes, packline_processes

pytestmark = pytest.mark.infra

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks() -> list[tuple[str, str]]:
    """(where, code) of every runnable python block of the documents."""
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for match in PYTHON_BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{document.relative_to(ROOT)}:{line}", match.group(1)))
    return found


@pytest.fixture
async def system(
    infrastructure: Infrastructure, topic_prefix: str, create_database: CreateDatabase
) -> AsyncIterator[tuple[Processes, dict[str, str]]]:
    async with packline_processes(infrastructure, topic_prefix, create_database) as running:
        env = {
            **os.environ,
            "PACKLINE_KAFKA_BOOTSTRAP": infrastructure.kafka_bootstrap,
            "PACKLINE_TOPIC_PREFIX": topic_prefix,
            **{
                f"PACKLINE_{name.upper()}_HTTP_PORT": str(urlparse(url).port)
                for name, url in running.urls.items()
            },
            "PYTHONUNBUFFERED": "1",
        }
        yield running, env


async def run(*argv: str, env: dict[str, str], within: float = 120) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=within)
    except TimeoutError:
        process.kill()
        raise AssertionError(f"{argv} did not finish within {within} s") from None
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


def test_the_documents_hold_a_runnable_example() -> None:
    where = [place for place, _ in python_blocks()]
    assert any(place.startswith("README.md") for place in where), where


@pytest.mark.timeout(600)
async def test_the_demo_and_every_documented_python_block_run_as_written(
    system: tuple[Processes, dict[str, str]], tmp_path: Path
) -> None:
    running, env = system
    status, output = await run(
        sys.executable, str(ROOT / "deploy" / "demo.py"), "--runs", "3", env=env, within=300
    )
    assert status == 0, output
    assert output.count("Done. Every step went through Kafka") == 3, output
    assert "run 3 of 3 passed" in output

    # The README's example needs the demo's clinic, which is now defined.
    for where, code in python_blocks():
        script = tmp_path / f"{re.sub(r'[^A-Za-z0-9]+', '_', where)}.py"
        script.write_text(code)
        status, output = await run(sys.executable, str(script), env=env)
        assert status == 0, f"{where} failed:\n{output}"
        if where.startswith("README.md"):
            assert re.search(r"linked: session \d+, \d+ left", output), output
    await running.reconcile()
