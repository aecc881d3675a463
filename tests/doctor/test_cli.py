"""``nimctl doctor`` through the CLI: the table, ``--format json``'s shape, and the exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nimctl.doctor import Probes
from nimctl.errors import EXIT_CHECKS_FAILED, EXIT_USAGE
from tests.cli.conftest import nimctl
from tests.gpu.fake_nvml import FakeNvml, h100

NAMES = ["driver", "toolkit", "docker", "disk", "shm", "port", "profile", "credentials", "clock", "image"]


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the CLI's probes those of a machine: ``machine(nvml=..., shm_path=...)``."""

    def use(**fields: Any) -> None:
        monkeypatch.setattr("nimctl.doctor.runner.Probes", lambda: Probes(**fields))

    use(nvml=FakeNvml(devices=[]))  # no GPU, whatever the machine running the tests has
    return use


def test_json_shape_and_exit_14_on_a_taken_port(
    env: dict[str, str], machine: Any, taken_port: int, tmp_path: Path
) -> None:
    result = nimctl(
        "doctor", "tiny-vlm", "--port", str(taken_port), "--runtime", "local", "--format", "json",
        env={"DOCKER_HOST": env["DOCKER_HOST"]},
    )  # fmt: skip
    assert result.exit_code == EXIT_CHECKS_FAILED, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"model", "runtime", "ok", "counts", "checks"}
    assert data["model"] == "tiny-vlm" and data["runtime"] == "local" and data["ok"] is False
    assert [check["name"] for check in data["checks"]] == NAMES
    for check in data["checks"]:
        assert set(check) == {"name", "title", "verdict", "detail", "hint", "data"}
        assert check["verdict"] in {"ok", "warn", "fail", "skip"}
        assert isinstance(check["data"], dict)
    assert sum(data["counts"].values()) == len(NAMES)
    port = next(check for check in data["checks"] if check["name"] == "port")
    assert port["verdict"] == "fail" and port["hint"].startswith("pass --port ")
    assert "Error: 1 of 10 checks failed: port" in result.stderr


def test_the_table_shows_each_item_and_the_fix(env: dict[str, str], machine: Any, taken_port: int) -> None:
    result = nimctl(
        "doctor", "tiny-vlm", "--port", str(taken_port), "--runtime", "local",
        env={"DOCKER_HOST": env["DOCKER_HOST"]},
    )  # fmt: skip
    assert result.exit_code == EXIT_CHECKS_FAILED
    lines = result.stdout.splitlines()
    port = next(i for i, line in enumerate(lines) if line.startswith("FAIL") and " port " in line)
    assert "-> pass --port" in lines[port + 1]
    # The profile's id in brackets is text, not Rich markup.
    assert any(line.startswith("ok") and " profile " in line and "[6a451bce28f3]" in line for line in lines)
    assert "cannot work until the failed items are fixed" in lines[-1]


def test_warnings_fail_nothing(env: dict[str, str], machine: Any, free_port: int) -> None:
    # No daemon (auto falls back to a host process: a warning) and a hub model without a token.
    result = nimctl(
        "doctor", "hf://some-org/some-model", "--port", str(free_port),
        env={"DOCKER_HOST": env["DOCKER_HOST"], "HF_TOKEN": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "WARN  docker" in result.stdout and "WARN  credentials" in result.stdout
    assert "should work" in result.stdout.splitlines()[-1]


def test_an_old_driver_exits_14(env: dict[str, str], machine: Any, free_port: int) -> None:
    machine(nvml=FakeNvml(devices=[h100()], cuda=12040))
    result = nimctl(
        "doctor", "qwen2.5-vl-7b-instruct", "--runtime", "docker", "--port", str(free_port),
        "--format", "json", env={"DOCKER_HOST": env["DOCKER_HOST"]},
    )  # fmt: skip
    assert result.exit_code == EXIT_CHECKS_FAILED
    verdicts = {c["name"]: c["verdict"] for c in json.loads(result.stdout)["checks"]}
    assert verdicts["driver"] == "fail" and verdicts["docker"] == "fail"


def test_no_runnable_profile_exits_14(env: dict[str, str], machine: Any, free_port: int) -> None:
    result = nimctl(
        "doctor", "qwen2.5-vl-72b-instruct", "--assume-gpus", "L4:1", "--runtime", "local",
        "--port", str(free_port), env={"DOCKER_HOST": env["DOCKER_HOST"]},
    )  # fmt: skip
    assert result.exit_code == EXIT_CHECKS_FAILED
    assert "FAIL  profile" in result.stdout


def test_a_full_cache_exits_14(env: dict[str, str], machine: Any, small_fs: Any, free_port: int) -> None:
    cache = small_fs("1m")
    result = nimctl(
        "doctor", "tiny-vlm", "--cache", str(cache), "--runtime", "local", "--port", str(free_port),
        "--format", "json", env={"DOCKER_HOST": env["DOCKER_HOST"]},
    )  # fmt: skip
    assert result.exit_code == EXIT_CHECKS_FAILED
    disk = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "disk")
    assert disk["verdict"] == "fail" and disk["data"]["free_bytes"] <= 2**20


def test_bad_arguments_are_usage_errors(env: dict[str, str], machine: Any) -> None:
    assert nimctl("doctor", "--runtime", "podman").exit_code == EXIT_USAGE
    unknown = nimctl("doctor", "no-such-model-anywhere", "--runtime", "local")
    assert unknown.exit_code == EXIT_USAGE, unknown.stderr


@pytest.mark.docker
def test_the_real_machine_with_docker(
    tmp_path: Path, free_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This machine as it is (real NVML, real daemon, real /dev/shm): the built-in model in Docker."""
    from nimctl.runtime.docker_client import probe_daemon

    if probe_daemon() is not None:
        pytest.skip("no Docker daemon answers (start one with scripts/ensure-docker.sh)")
    monkeypatch.setenv("NIMCTL_STATE_DIR", str(tmp_path / "state"))
    result = nimctl("doctor", "tiny-vlm", "--runtime", "docker", "--port", str(free_port), "--format", "json")
    data = json.loads(result.stdout)
    verdicts = {c["name"]: c["verdict"] for c in data["checks"]}
    assert data["runtime"] == "docker"
    assert verdicts["docker"] == "ok" and verdicts["port"] == "ok" and verdicts["clock"] == "ok"
    assert verdicts["profile"] == "ok" and verdicts["credentials"] == "ok" and verdicts["shm"] == "ok"
    clock = next(c for c in data["checks"] if c["name"] == "clock")
    assert abs(clock["data"]["daemon_skew_s"]) < 5
    assert verdicts["image"] in {"ok", "warn"}  # present, or buildable (offline or not)
    assert result.exit_code == (EXIT_CHECKS_FAILED if "fail" in verdicts.values() else 0)


def test_help_names_every_item() -> None:
    result = nimctl("doctor", "--help")
    assert result.exit_code == 0
    assert "Exit 14" in result.stdout and "/dev/shm" in result.stdout
