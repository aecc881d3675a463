"""`nimctl run MODEL --offline`: the cache only, never the network.

A hub model missing from the host cache fails before anything starts (exit 11, naming what is
missing); a cached one serves with the hub emulation out of reach.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import Result

from nimctl.errors import EXIT_MODEL_UNAVAILABLE, EXIT_USAGE
from nimctl.store import layout
from tests.cli.conftest import nimctl
from tests.hub_emulation import HubEmulation
from tests.images import image_question
from tests.server_process import free_port

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MANIFEST = str(FIXTURES / "tiny-vlm-hub.yaml")
REPO = "nimctl-test/tiny-vlm"
NAME = "nimctl-offline-test"


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's host cache (``XDG_CACHE_HOME``) and instance state; returns the cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("NIMCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NIMCTL_ASSUME_GPUS", "none")
    return tmp_path / "xdg" / "nimctl"


def error_of(result: Result) -> str:
    """The Error line (after run's profile line on stderr)."""
    return next(line for line in result.stderr.splitlines() if line.startswith("Error: "))


def nothing_runs(since: float) -> None:
    """No instance called NAME, and no server process started since ``since`` (a time.time()): the
    session's shared servers, started earlier by other tests, are this process's children too."""
    listed = nimctl("ps", "--all", "--format", "json")
    assert listed.exit_code == 0 and [row for row in json.loads(listed.stdout) if row["name"] == NAME] == []
    assert not [c for c in _children(since) if "nim-serve" in c or "nimctl.server" in c]


def _children(since: float) -> list[str]:
    """The command lines of this process's live descendants started since ``since`` (a launcher
    that ended is a zombie until reaped)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.create_time() >= since - 1:
                found.append(" ".join(process.cmdline()))
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
    return found


@pytest.mark.parametrize("switch", [["--offline"], ["-e", "NIM_DISABLE_MODEL_DOWNLOAD=1"]])
def test_an_uncached_model_fails_at_once(hf_env: HubEmulation, host: Path, switch: list[str]) -> None:
    started = time.time()
    result = nimctl(
        "run", MANIFEST, *switch, "--runtime", "local", "--name", NAME, "--port", str(free_port())
    )
    assert result.exit_code == EXIT_MODEL_UNAVAILABLE, result.stderr
    assert error_of(result) == f"Error: hf://{REPO} is not in the cache at {layout.hub_dir(host)}"
    assert "nimctl pull hf://nimctl-test/tiny-vlm" in result.stderr
    assert hf_env.requests() == []
    nothing_runs(started)


def test_a_missing_file_is_named(hf_env: HubEmulation, host: Path) -> None:
    from nimctl.store.pull import pull

    folder = pull(REPO, host).folder
    (folder / "model.safetensors").unlink()
    hf_env.reset_counters()
    started = time.time()
    result = nimctl("run", MANIFEST, "--offline", "--runtime", "local", "--name", NAME)
    assert result.exit_code == EXIT_MODEL_UNAVAILABLE, result.stderr
    assert "incomplete in the cache" in error_of(result) and "(model.safetensors)" in error_of(result)
    assert hf_env.requests() == []
    nothing_runs(started)


@pytest.mark.parametrize("runtime", ["local", "docker"])
def test_the_server_is_told_to_stay_offline(
    host: Path, runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_not_for_offline")
    for switch in (["--offline"], ["-e", "NIM_DISABLE_MODEL_DOWNLOAD=true"]):
        result = nimctl("run", MANIFEST, *switch, "--runtime", runtime, "--dry-run")
        assert result.exit_code == 0, result.stderr
        assert "NIM_DISABLE_MODEL_DOWNLOAD=" in result.stdout and "HF_HUB_OFFLINE=1" in result.stdout
        assert "HF_TOKEN" not in result.stdout  # nothing to fetch, so no credentials go with it
    online = nimctl("run", MANIFEST, "--runtime", runtime, "--dry-run")
    assert "NIM_DISABLE_MODEL_DOWNLOAD" not in online.stdout and "HF_HUB_OFFLINE" not in online.stdout
    assert "HF_TOKEN" in online.stdout
    # --offline wins over a -e that says otherwise, as every flag wins over its variable.
    both = nimctl(
        "run", MANIFEST, "--offline", "-e", "NIM_DISABLE_MODEL_DOWNLOAD=0", "--runtime", runtime, "--dry-run"
    )
    assert "NIM_DISABLE_MODEL_DOWNLOAD=1" in both.stdout


def test_a_bad_switch_value_is_refused_on_the_host(host: Path) -> None:
    result = nimctl("run", MANIFEST, "-e", "NIM_DISABLE_MODEL_DOWNLOAD=maybe", "--runtime", "local")
    assert result.exit_code == 2 and "NIM_DISABLE_MODEL_DOWNLOAD" in error_of(result)


@pytest.mark.engine
def test_a_cached_model_serves_with_the_hub_out_of_reach(
    hf_env: HubEmulation, host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from openai import OpenAI

    from nimctl.store.pull import pull

    pull(REPO, host)
    # nim-serve and the engine (children, reading the environment) are pointed at the emulation,
    # which counts every request: an offline run must make none, not merely survive a failed one.
    monkeypatch.setenv("HF_ENDPOINT", hf_env.url)
    hf_env.reset_counters()
    port = free_port()
    since = time.time()
    started = nimctl(
        "run", MANIFEST, "--offline", "--runtime", "local", "-d", "--name", NAME, "--port", str(port),
        "--timeout", "900",
    )  # fmt: skip
    try:
        assert started.exit_code == 0, started.stderr
        key = (host.parent.parent / "state" / "credentials" / NAME / "api-keys").read_text().strip()
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, timeout=300)
        reply = client.chat.completions.create(model="tiny-vlm-hub", max_tokens=4, messages=image_question())  # type: ignore[arg-type]
        assert reply.usage is not None and reply.usage.completion_tokens > 0

        # The model this instance serves cannot be removed from under it.
        in_use = nimctl("cache", "rm", f"hf://{REPO}", "--yes")
        assert in_use.exit_code == EXIT_USAGE, in_use.stderr
        assert (
            f"in use by the running instance {NAME}" in in_use.stderr
            and f"nimctl stop {NAME}" in in_use.stderr
        )
        assert layout.repo_dir(host, REPO).is_dir()
    finally:
        stopped = nimctl("stop", NAME)
    assert stopped.exit_code == 0, stopped.stderr
    assert hf_env.requests() == []
    nothing_runs(since)
    removed = nimctl("cache", "rm", f"hf://{REPO}", "--yes")  # stopped: now it may go
    assert removed.exit_code == 0, removed.stderr
    assert not layout.repo_dir(host, REPO).exists()
