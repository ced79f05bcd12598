"""Another team installs only the contracts: a fresh virtual environment, no Packline service."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys, json
from datetime import datetime, timezone
from uuid import uuid4
from packline_contracts.appointments import BookAppointment
from packline_contracts.envelope import Envelope, decode, encode
from packline_contracts.types import BookingSource
booking = BookAppointment(patient_id="p-1", appointment_id=uuid4(), practitioner_id="dr-a",
    location_id="north", starts_at=datetime(2026, 3, 10, 10, tzinfo=timezone.utc),
    fee_ids=["massage-60"], source=BookingSource.ONLINE, booked_by="shop")
record = encode(Envelope.wrap(booking, producer="shop"))
assert decode(record.value, record.headers, record.key).payload == booking
assert not any(name.startswith(("packline_core", "packline_calendar", "faststream", "asyncpg"))
               for name in sys.modules), sorted(sys.modules)
print("contracts alone: ok")
"""


def test_contracts_install_and_work_without_the_services(tmp_path: Path) -> None:
    uv = os.environ.get("PACKLINE_UV") or shutil.which("uv")
    assert uv, "uv is needed (deploy/packline sets PACKLINE_UV)"
    venv = tmp_path / "venv"
    subprocess.run(
        [uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=120
    )
    python = venv / "bin/python"
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), str(ROOT / "contracts")],
        check=True,
        timeout=300,
    )
    installed = subprocess.run(
        [uv, "pip", "list", "--python", str(python)], capture_output=True, text=True, check=True
    ).stdout
    assert "packline-contracts" in installed
    assert "faststream" not in installed and "asyncpg" not in installed
    result = subprocess.run(
        [str(python), "-c", SCRIPT], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "contracts alone: ok" in result.stdout
