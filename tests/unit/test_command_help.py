"""Every command a person types answers --help with its usage and exits 0, without starting
anything (issue #18: 'deploy/packline --help' exited 2, 'packline-console --help' started the
server)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

COMMANDS = [
    [str(ROOT / "deploy" / "packline"), "--help"],
    [str(ROOT / "deploy" / "packline"), "demo", "--help"],
    *[
        [str(BIN / name), "--help"]
        for name in (
            "packline-calendar",
            "packline-invoicing",
            "packline-matcher",
            "packline-console",
            "packline-admin",
            "packline-contracts",
        )
    ],
    [sys.executable, "-m", "benchmarks.run", "--help"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(Path(part).name for part in c))
def test_the_command_answers_help_and_exits_0(command: list[str]) -> None:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "usage" in done.stdout.lower() or "deploy/packline run" in done.stdout, done.stdout
