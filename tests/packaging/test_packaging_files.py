"""Packaging files: the two hashed locks, the Makefile's split install, the image and compose stack.

No Docker engine is needed: these read the files a deploy depends on and fail on the mistakes that
only show on another machine (a lock carrying a local index path or an unhashed line, a dev tool in
the serving set, an image running as root, a compose app starting before its migration).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from configs import Settings

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ("requirements.lock", "requirements-dev.lock")
DEV_TOOLS = ("pytest", "mypy", "ruff", "matplotlib", "schemathesis", "py-spy", "playwright")


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _logical_lines(lock: str) -> list[str]:
    """Join backslash continuations, drop comments: one entry per requirement or option."""
    text = (ROOT / lock).read_text()
    joined = re.sub(r"\\\n", " ", text)
    stripped = (line.strip() for line in joined.splitlines())
    return [line for line in stripped if line and not line.startswith("#")]


def _pins(lock: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in _logical_lines(lock):
        spec = line.split(" --hash", 1)[0].strip()
        name, _, version = spec.partition("==")
        pins[canonicalize_name(name)] = version.split(";", 1)[0].strip()
    return pins


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


@pytest.mark.parametrize("lock", LOCKS)
def test_lock_names_no_machine_specific_index_or_path(lock: str) -> None:
    text = (ROOT / lock).read_text()
    for forbidden in ("file://", "--find-links", "/opt/", "--extra-index-url", "--index-url"):
        assert forbidden not in text, f"{lock} mentions {forbidden!r}"


@pytest.mark.parametrize("lock", LOCKS)
def test_every_locked_requirement_is_pinned_and_hashed(lock: str) -> None:
    lines = _logical_lines(lock)
    assert len(lines) > 20
    for line in lines:
        assert not line.startswith("-"), f"{lock} carries an option line: {line!r}"
        assert re.match(r"^[A-Za-z0-9._-]+==\S+", line), f"{lock}: not an exact pin: {line!r}"
        assert "--hash=sha256:" in line, f"{lock}: no hash on {line.split()[0]}"


def test_serving_lock_has_the_project_dependencies_and_no_dev_tools() -> None:
    pins = _pins("requirements.lock")
    project = _pyproject()["project"]
    assert _names(project["dependencies"]) <= pins.keys()
    for tool in DEV_TOOLS:
        assert canonicalize_name(tool) not in pins, f"{tool} is in the serving lock"


def test_dev_lock_is_the_serving_lock_plus_the_dev_extra_at_the_same_versions() -> None:
    serving, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    extra = _pyproject()["project"]["optional-dependencies"]["dev"]
    assert _names(extra) <= dev.keys()
    differing = {name: (v, dev.get(name)) for name, v in serving.items() if dev.get(name) != v}
    assert not differing, f"pins that differ between the locks: {differing}"


def test_locks_pin_the_build_backend_of_pyproject() -> None:
    """The project is installed with --no-build-isolation, so the lock must carry that backend."""
    (backend,) = _pyproject()["build-system"]["requires"]
    name, _, version = backend.partition("==")
    for lock in LOCKS:
        assert _pins(lock)[canonicalize_name(name)] == version, lock


def test_locks_keep_dependencies_behind_markers_of_older_pythons() -> None:
    """redis needs async-timeout below Python 3.11.3; pip-compile on a newer 3.11 drops it."""
    for lock in LOCKS:
        assert "async-timeout" in _pins(lock), lock


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_install_uses_only_the_serving_lock_with_hashes() -> None:
    dry_run = subprocess.run(
        ["make", "--always-make", "--dry-run", "install"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--require-hashes -r requirements.lock" in dry_run
    assert "requirements-dev.lock" not in dry_run
    assert "--no-deps --no-build-isolation -e ." in dry_run


def _dockerfile_final_stage() -> list[str]:
    lines = [
        line.strip()
        for line in re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text()).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    starts = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert len(starts) >= 2, "the Dockerfile is expected to be multi-stage"
    return lines[starts[-1] :]


def test_image_runs_as_a_user_that_is_not_root() -> None:
    users = [line.split()[1] for line in _dockerfile_final_stage() if line.startswith("USER ")]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_image_health_check_probes_livez_and_cmd_serves_two_workers() -> None:
    final = _dockerfile_final_stage()
    checks = [line for line in final if line.startswith("HEALTHCHECK ")]
    assert len(checks) == 1 and "/livez" in checks[0] and "urllib" in checks[0]
    assert 'CMD ["game-api", "serve", "--host", "0.0.0.0", "--workers", "2"]' in final
    assert not any(re.search(r"\b(gcc|build-essential|apt-get)\b", line) for line in final)


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def test_compose_has_the_four_services_with_health_checks() -> None:
    services = _compose()["services"]
    assert set(services) == {"db", "redis", "migrate", "app"}
    for name in ("db", "redis", "app"):
        check = services[name]["healthcheck"]
        assert check["test"] and not check.get("disable", False), name
    assert "/livez" in " ".join(services["app"]["healthcheck"]["test"])


def test_compose_app_runs_two_replicas_after_the_migration() -> None:
    services = _compose()["services"]
    app, migrate = services["app"], services["migrate"]
    assert app["deploy"]["replicas"] == 2
    assert migrate["command"] == ["game-api", "db", "upgrade"]
    assert app["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "db": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert migrate["depends_on"]["db"] == {"condition": "service_healthy"}


@pytest.mark.parametrize("service", ["app", "migrate"])
def test_compose_points_the_service_at_postgres_and_the_tiered_cache(service: str) -> None:
    env = _compose()["services"][service]["environment"]
    assert env["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert "@db:5432/" in env["DATABASE_URL"]
    assert env["APIKEY_CACHE_BACKEND"] == "tiered"
    assert env["REDIS_URL"] == "redis://redis:6379/0"


def test_the_compose_app_sets_every_setting_its_backend_requires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tiered backend refuses to start without the HMAC secret for its Redis records."""
    monkeypatch.delenv("APIKEY_CACHE_HMAC_SECRET", raising=False)  # only the file may supply it
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    environment = compose["x-game-api"]["environment"]
    settings = Settings(
        **{
            name: value.split(":-", 1)[-1].rstrip("}") if value.startswith("${") else value
            for name, value in environment.items()
            if name in Settings.model_fields
        }
    )
    assert settings.APIKEY_CACHE_BACKEND == "tiered"
    assert settings.APIKEY_CACHE_HMAC_SECRET is not None
