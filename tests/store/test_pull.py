"""``nimctl pull`` against the hub emulation, through the real huggingface_hub client."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from nimctl.errors import EXIT_DISK_FULL, EXIT_INTERRUPTED, EXIT_MODEL_UNAVAILABLE, EXIT_UNREACHABLE
from nimctl.store import layout
from tests.cli.conftest import error_line, nimctl
from tests.hub_emulation import HubEmulation
from tests.store.conftest import REPO, nimctl_process

WEIGHTS = "model.safetensors"


def snapshot(cache: Path, commit: str) -> Path:
    return layout.repo_dir(cache, REPO) / "snapshots" / commit


def test_pull_fetches_every_file_and_says_where(hf_env: HubEmulation, host_cache: Path) -> None:
    result = nimctl("pull", f"hf://{REPO}", "--format", "json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["commit"] == hf_env.tiny_vlm_main and summary["revision"] == "main"
    assert summary["profile"] == "vllm-fp32-tp1-pp1-cpu"  # chosen as run would, from the manifest
    folder = Path(summary["folder"])
    assert folder == snapshot(host_cache, hf_env.tiny_vlm_main)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert len(files) == summary["files"] and "README.md" in files and WEIGHTS in files
    assert (
        summary["size_bytes"] == summary["fetched_bytes"] == sum((folder / f).stat().st_size for f in files)
    )
    assert result.stderr == ""  # not a terminal: no bar, nothing but the summary

    again = nimctl("pull", "tiny-vlm-hub", "--format", "json")  # by manifest name: the same model
    assert again.exit_code == 0 and json.loads(again.stdout)["fetched_bytes"] == 0
    assert hf_env.bytes_served(REPO, WEIGHTS) == (folder / WEIGHTS).stat().st_size  # fetched once


def test_pull_an_older_revision_and_the_human_summary(hf_env: HubEmulation, host_cache: Path) -> None:
    result = nimctl("pull", f"hf://{REPO}", "--revision", "v1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"hf://{REPO}@v1 ({hf_env.tiny_vlm_v1[:12]}): ")
    assert "folder:" in result.stdout and "profile: vllm-fp32-tp1-pp1-cpu" in result.stdout
    assert not (snapshot(host_cache, hf_env.tiny_vlm_v1) / "README.md").exists()
    ref = layout.repo_dir(host_cache, REPO) / "refs" / "v1"
    assert ref.read_text() == hf_env.tiny_vlm_v1  # an offline run finds @v1 by its name

    newer = nimctl("pull", f"hf://{REPO}", "--format", "json")  # main: v1's files plus a README
    assert newer.exit_code == 0, newer.stderr
    readme = snapshot(host_cache, hf_env.tiny_vlm_main) / "README.md"
    assert json.loads(newer.stdout)["fetched_bytes"] == readme.stat().st_size  # shared blobs are not counted


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["hf://nimctl-test/missing"], EXIT_MODEL_UNAVAILABLE, "does not exist on"),
        ([f"hf://{REPO}", "--revision", "nope"], EXIT_MODEL_UNAVAILABLE, "has no revision 'nope'"),
        ([f"hf://{REPO}@v1", "--revision", "main"], 2, "names revision v1"),
        (["tiny-vlm-hub", "--profile", "nope"], 8, "nope"),
    ],
)
def test_pull_errors_are_one_line_with_a_hint(
    hf_env: HubEmulation, host_cache: Path, argv: list[str], code: int, message: str
) -> None:
    result = nimctl("pull", *argv)
    assert result.exit_code == code, result.stderr
    assert message in error_line(result)
    assert (
        result.stderr.count("Error:") == 1 and "Hint:" in result.stderr and "Traceback" not in result.stderr
    )


def test_a_gated_model_wants_a_token_which_is_never_printed(
    hf_env: HubEmulation, host_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf_env.require_token(REPO, "hf_secret_token")
    refused = nimctl("pull", f"hf://{REPO}")
    assert refused.exit_code == EXIT_MODEL_UNAVAILABLE
    assert "gated" in error_line(refused) and "HF_TOKEN" in refused.stderr
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    allowed = nimctl("pull", f"hf://{REPO}", "--format", "json")
    assert allowed.exit_code == 0, allowed.stderr
    assert "hf_secret_token" not in allowed.stdout + allowed.stderr


def test_a_truncated_file_is_fetched_again(hf_env: HubEmulation, host_cache: Path) -> None:
    assert nimctl("pull", f"hf://{REPO}").exit_code == 0
    blob = (snapshot(host_cache, hf_env.tiny_vlm_main) / WEIGHTS).resolve()
    size = blob.stat().st_size
    with blob.open("r+b") as handle:
        handle.truncate(size // 3)
    again = nimctl("pull", f"hf://{REPO}", "--format", "json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["fetched_bytes"] == size and blob.stat().st_size == size


def test_a_connection_that_keeps_breaking_is_one_line(hf_env: HubEmulation, host_cache: Path) -> None:
    hf_env.fail_after(REPO, WEIGHTS, 1000, times=50)  # more cuts than huggingface_hub's retries
    result = nimctl("pull", f"hf://{REPO}")
    assert result.exit_code == EXIT_UNREACHABLE, result.stderr
    assert "broke while fetching" in error_line(result) and "pull again" in result.stderr
    assert "Traceback" not in result.stderr


def test_too_little_disk_is_refused_before_any_byte(hf_env: HubEmulation, host_cache: Path) -> None:
    hf_env.declare_size(REPO, WEIGHTS, 1 << 50)  # a petabyte: more than any test disk holds
    result = nimctl("pull", f"hf://{REPO}")
    assert result.exit_code == EXIT_DISK_FULL
    assert "needs" in error_line(result) and "free" in error_line(result)
    assert hf_env.bytes_served(REPO, WEIGHTS) == 0


def test_no_network_and_offline(
    hf_env: HubEmulation, host_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    unreachable = nimctl("pull", f"hf://{REPO}")
    assert unreachable.exit_code == EXIT_UNREACHABLE, unreachable.stderr
    assert "cannot reach the hub" in error_line(unreachable)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    offline = nimctl("pull", f"hf://{REPO}")
    assert offline.exit_code == EXIT_MODEL_UNAVAILABLE
    assert "not in the cache" in error_line(offline)


def test_ctrl_c_keeps_the_finished_files_and_the_next_pull_fetches_only_the_rest(
    hf_env: HubEmulation, host_cache: Path
) -> None:
    """huggingface_hub 2.4 never reuses a partial file (its PR #4228): a pull resumes file by file."""
    others = [path for path in _repo_files(hf_env) if path != WEIGHTS]
    release = hf_env.stall_after(REPO, WEIGHTS, 400_000)
    process = nimctl_process("pull", f"hf://{REPO}", hub=hf_env)
    folder = snapshot(host_cache, hf_env.tiny_vlm_main)
    deadline = time.monotonic() + 60
    # Every other file finished, the weights half sent and the rest held back.
    while hf_env.bytes_served(REPO, WEIGHTS) < 400_000 or not all((folder / p).is_file() for p in others):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == EXIT_INTERRUPTED, stderr
    assert "interrupted" in stderr and "run the same command again" in stderr
    blobs = layout.repo_dir(host_cache, REPO) / "blobs"
    assert not list(blobs.glob("*.incomplete"))  # nothing half-written left behind
    served = {path: hf_env.bytes_served(REPO, path) for path in others}

    resumed = nimctl("pull", f"hf://{REPO}", "--format", "json")
    release.set()
    assert resumed.exit_code == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["fetched_bytes"] == (folder / WEIGHTS).stat().st_size  # only what was missing
    for path in others:  # finished before the interruption: not one byte fetched again
        assert hf_env.bytes_served(REPO, path) == served[path] == (folder / path).stat().st_size


def _repo_files(hub: HubEmulation) -> list[str]:
    from huggingface_hub import HfApi

    return [entry.path for entry in HfApi().list_repo_tree(REPO, recursive=True) if hasattr(entry, "lfs")]
