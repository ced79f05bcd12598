"""One lock story (issue #18: uv.lock was ignored yet tracked, the README said setup installs it,
setup installed requirements.lock).

The committed uv.lock is the resolver's lock, the source of truth. ``deploy/packline lock``
re-resolves it and exports from it the hashed requirement files that are installed:
requirements.lock (everything, for development: ``deploy/packline setup``) and
services/<service>/requirements.lock (one service's run-time dependencies, for its image). So
each committed requirements.lock is exactly what uv exports from the committed uv.lock, uv.lock
is tracked, and every dependency a pyproject.toml declares is pinned in both.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("calendar", "invoicing", "matcher", "console")
WORKSPACE = ("contracts", "services/core", *(f"services/{s}" for s in SERVICES))

# The options deploy/packline's lock() exports with (uv writes the command into each file's
# header, so a lock exported any other way differs from what uv gives here).
ROOT_EXPORT = ["--all-packages", "--no-emit-workspace"]


def service_export(service: str) -> list[str]:
    return ["--package", f"packline-{service}", "--no-dev", "--no-emit-workspace"]


def uv() -> str:
    """The uv deploy/packline installs and exports PACKLINE_UV for the tests; else where its
    uv_bin puts it. Only that version: another one may write the same lock differently."""
    given = os.environ.get("PACKLINE_UV")
    if given:
        assert Path(given).is_file(), f"PACKLINE_UV={given} does not exist"
        return given
    version = re.search(r"^UV_VERSION=(\S+)$", (ROOT / "deploy/packline").read_text(), re.M)
    assert version, "deploy/packline no longer says UV_VERSION"
    cache = os.environ.get("PACKLINE_CACHE_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "packline"
    )
    found = Path(cache) / f"uv-{version[1]}" / "bin" / "uv"
    if not found.is_file():
        pytest.skip(
            f"uv {version[1]} is not installed ({found}); deploy/packline setup installs it,"
            " and deploy/packline test passes it as PACKLINE_UV"
        )
    return str(found)


def run_uv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [uv(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def exported(options: list[str], output: str) -> str:
    """What ``uv export --frozen ... -o output`` writes from the committed uv.lock (read from
    stdout, so nothing in the work tree is touched: only the header's command names the file)."""
    done = run_uv("export", "--frozen", *options, "--format", "requirements-txt")
    assert done.returncode == 0, done.stderr
    header = "#    uv export --frozen " + " ".join([*options, "--format", "requirements-txt"])
    assert header + "\n" in done.stdout, done.stdout[:300]
    return done.stdout.replace(header + "\n", f"{header} -o {output}\n", 1)


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_uv_lock_is_committed_and_not_ignored() -> None:
    for path in [
        "uv.lock",
        "requirements.lock",
        *(f"services/{s}/requirements.lock" for s in SERVICES),
    ]:
        assert git("ls-files", "--error-unmatch", path).returncode == 0, f"{path} is not tracked"
        ignored = git("check-ignore", "--no-index", "-v", path)
        assert ignored.returncode == 1, f"{path} is ignored: {ignored.stdout}"


def test_each_service_with_an_image_has_its_lock_and_no_other_lock_lies_around() -> None:
    locks = {p.parent.name for p in (ROOT / "services").glob("*/requirements.lock")}
    assert locks == set(SERVICES)


def test_uv_lock_matches_every_pyproject() -> None:
    """uv.lock is up to date: resolving again from the pyprojects would not change it."""
    done = run_uv("lock", "--check", "--offline")
    assert done.returncode == 0, (
        "uv.lock does not match the pyproject.toml files; run deploy/packline lock\n" + done.stderr
    )


def test_requirements_lock_is_exported_from_uv_lock() -> None:
    expected = exported(ROOT_EXPORT, "requirements.lock")
    assert (ROOT / "requirements.lock").read_text() == expected, (
        "requirements.lock is not what uv.lock exports; run deploy/packline lock"
    )


@pytest.mark.parametrize("service", SERVICES)
def test_service_lock_is_exported_from_uv_lock(service: str) -> None:
    path = f"services/{service}/requirements.lock"
    assert (ROOT / path).read_text() == exported(service_export(service), path), (
        f"{path} is not what uv.lock exports; run deploy/packline lock"
    )


def declared() -> list[tuple[str, Requirement]]:
    """Every third-party requirement of every pyproject.toml: run time, extras, dev groups."""
    found = []
    for directory in ["", *WORKSPACE]:
        path = ROOT / directory / "pyproject.toml"
        project = tomllib.loads(path.read_text())
        strings = list(project.get("project", {}).get("dependencies", []))
        for extra in project.get("project", {}).get("optional-dependencies", {}).values():
            strings += extra
        for group in project.get("dependency-groups", {}).values():
            strings += [s for s in group if isinstance(s, str)]
        for text in strings:
            requirement = Requirement(text)
            if not canonicalize_name(requirement.name).startswith("packline-"):
                found.append((str(path.relative_to(ROOT)), requirement))
    assert found, "no dependencies found: has the workspace moved?"
    return found


def test_every_declared_dependency_is_pinned_with_hashes_in_both_locks() -> None:
    """Independent of uv: each requirement a pyproject.toml states has a version in uv.lock and
    the same version, with hashes, in requirements.lock, and that version satisfies it."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    in_uv_lock: dict[str, set[str]] = {}
    for package in lock["package"]:
        if "version" in package:
            in_uv_lock.setdefault(canonicalize_name(package["name"]), set()).add(package["version"])
    pinned = {
        canonicalize_name(name): version
        for name, version in re.findall(
            # A pin may carry an environment marker ("uvloop==0.22.1 ; sys_platform != 'win32'").
            r"^([A-Za-z0-9._-]+)==(\S+)(?: ;[^\\\n]*)? \\\n\s+--hash=sha256:",
            (ROOT / "requirements.lock").read_text(),
            re.M,
        )
    }
    problems = []
    for where, requirement in declared():
        name = canonicalize_name(requirement.name)
        versions = in_uv_lock.get(name, set())
        if not any(requirement.specifier.contains(v, prereleases=True) for v in versions):
            problems.append(f"{where}: {requirement} has no fitting version in uv.lock {versions}")
        elif pinned.get(name) not in versions or not requirement.specifier.contains(
            pinned[name], prereleases=True
        ):
            problems.append(f"{where}: {requirement} is {pinned.get(name)} in requirements.lock")
    assert problems == [], "run deploy/packline lock:\n" + "\n".join(problems)
