"""``nimctl cache ls|du|verify|rm|prune`` on a cache filled from the hub emulation."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nimctl.errors import EXIT_INTEGRITY, EXIT_MODEL_UNAVAILABLE, EXIT_USAGE, ModelUnavailableError
from nimctl.store import layout
from nimctl.store.pull import require_cached
from tests.cli.conftest import error_line, nimctl
from tests.hub_emulation import HubEmulation
from tests.store.conftest import FIXTURES, REPO

if TYPE_CHECKING:
    from nimctl.store.inventory import CachedModel

WEIGHTS = "model.safetensors"


@pytest.fixture
def pulled(hf_env: HubEmulation, host_cache: Path) -> Path:
    """The tiny VLM pulled at main and at v1; the main snapshot folder."""
    for revision in ("v1", "main"):
        result = nimctl("pull", f"hf://{REPO}", "--revision", revision, "--format", "json")
        assert result.exit_code == 0, result.stderr
    return layout.repo_dir(host_cache, REPO) / "snapshots" / hf_env.tiny_vlm_main


def test_ls_and_du_show_what_is_on_disk(pulled: Path, hf_env: HubEmulation, host_cache: Path) -> None:
    listed = json.loads(nimctl("cache", "ls", "--format", "json").stdout)
    assert listed["cache"] == str(host_cache.resolve())
    (model,) = [m for m in listed["models"] if m["model"] == f"hf://{REPO}"]
    assert model["source"] == "hf" and model["manifests"] == ["tiny-vlm-hub"]
    assert model["profiles"] == ["tiny-vlm-hub/vllm-fp32-tp1-pp1-cpu"]
    assert {r["commit"]: r["refs"] for r in model["revisions"]} == {
        hf_env.tiny_vlm_main: ["main"],
        hf_env.tiny_vlm_v1: ["v1"],
    }
    blobs = layout.repo_dir(host_cache, REPO) / "blobs"
    assert model["size_bytes"] == sum(p.stat().st_size for p in blobs.iterdir())  # shared blobs once
    assert model["last_used"] is not None

    table = nimctl("cache", "ls")
    assert f"hf://{REPO}" in table.stdout and "main (" in table.stdout and "v1 (" in table.stdout
    usage = json.loads(nimctl("cache", "du", "--format", "json").stdout)
    assert usage["total_bytes"] >= model["size_bytes"]
    assert "total" in nimctl("cache", "du").stdout


def test_verify_passes_a_whole_model_and_names_truncated_corrupt_and_missing_files(pulled: Path) -> None:
    clean = nimctl("cache", "verify", f"hf://{REPO}", "--format", "json")
    assert clean.exit_code == 0, clean.stderr
    assert json.loads(clean.stdout)["ok"] is True

    weights = (pulled / WEIGHTS).resolve()  # the blob, named by its sha256
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    config = (pulled / "config.json").resolve()  # a regular git file: its blob id is checked
    config.write_bytes(config.read_bytes().replace(b"{", b"[", 1))
    (pulled / "LICENSE").unlink()

    broken = nimctl("cache", "verify", f"hf://{REPO}", "--format", "json")
    assert broken.exit_code == EXIT_INTEGRITY
    assert "failed verification" in error_line(broken) and "nimctl pull" in broken.stderr
    verdicts = {v["commit"]: v for v in json.loads(broken.stdout)["models"]}
    problems = {p["path"]: p["problem"] for p in verdicts[pulled.name]["problems"]}
    assert problems == {WEIGHTS: "truncated", "config.json": "corrupt", "LICENSE": "missing"}
    # v1 shares the weights blob: it is caught there too
    assert any(
        p["path"] == WEIGHTS for p in verdicts[next(c for c in verdicts if c != pulled.name)]["problems"]
    )

    human = nimctl("cache", "verify")
    assert human.exit_code == EXIT_INTEGRITY and "truncated" in human.stdout and "corrupt" in human.stdout
    assert "nimctl cache verify --fix" in human.stderr

    fixed = nimctl("cache", "verify", "--fix", "--format", "json")  # the bad blobs go...
    assert fixed.exit_code == EXIT_INTEGRITY and sorted(json.loads(fixed.stdout)["removed"]) == sorted(
        [str(weights), str(config)]
    )
    assert nimctl("pull", f"hf://{REPO}").exit_code == 0  # ...and the pull fetches them again
    assert nimctl("cache", "verify").exit_code == 0  # both revisions whole: they share those blobs


def test_verify_without_the_file_list_goes_by_the_blob_names(pulled: Path, host_cache: Path) -> None:
    """A cache filled by an older client has no trees/COMMIT.json: each blob is named by its etag."""
    shutil.rmtree(layout.repo_dir(host_cache, REPO) / "trees")
    assert nimctl("cache", "verify", f"hf://{REPO}").exit_code == 0
    weights = (pulled / WEIGHTS).resolve()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    result = nimctl("cache", "verify", f"hf://{REPO}", "--format", "json")
    assert result.exit_code == EXIT_INTEGRITY
    problems = {p["path"]: p["problem"] for v in json.loads(result.stdout)["models"] for p in v["problems"]}
    assert problems == {WEIGHTS: "corrupt"}


def test_a_corrupt_download_is_caught_by_verify(hf_env: HubEmulation, host_cache: Path) -> None:
    hf_env.corrupt(REPO, WEIGHTS)  # right size, wrong bytes: huggingface_hub checks only the size
    assert nimctl("pull", f"hf://{REPO}").exit_code == 0
    result = nimctl("cache", "verify", f"hf://{REPO}")
    assert result.exit_code == EXIT_INTEGRITY
    assert f"{WEIGHTS}: sha256" in result.stdout


def test_rm_asks_first_and_removes_the_whole_model(pulled: Path, host_cache: Path) -> None:
    refused = nimctl("cache", "rm", f"hf://{REPO}")  # stdin is no terminal and no --yes
    assert refused.exit_code == EXIT_USAGE and "without confirmation" in error_line(refused)
    assert pulled.is_dir()

    removed = nimctl("cache", "rm", "tiny-vlm-hub", "--yes", "--format", "json")
    assert removed.exit_code == 0, removed.stderr
    assert json.loads(removed.stdout)["removed"] == [f"hf://{REPO}"]
    assert not layout.repo_dir(host_cache, REPO).exists()
    missing = nimctl("cache", "rm", f"hf://{REPO}", "--yes")
    assert missing.exit_code == EXIT_USAGE and "not in the cache" in error_line(missing)


def test_an_interrupted_rm_leaves_no_model_to_serve_and_prune_finishes_it(
    pulled: Path, host_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nimctl.store import removal

    real_rmtree = shutil.rmtree

    def interrupted_rmtree(path: str | os.PathLike[str], **kwargs: object) -> None:
        for child in list(Path(path).rglob("*"))[:3]:  # a few files gone, then Ctrl-C
            if child.is_file():
                child.unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(removal.shutil, "rmtree", interrupted_rmtree)
    with pytest.raises(KeyboardInterrupt):
        removal.carry_out(removal.Removal((_entry(host_cache),)))
    monkeypatch.setattr(removal.shutil, "rmtree", real_rmtree)

    with pytest.raises(ModelUnavailableError, match="not in the cache"):
        require_cached(REPO, host_cache)  # what run --offline and the server check: nothing half there
    assert json.loads(nimctl("cache", "ls", "--format", "json").stdout)["models"] == []
    pruned = nimctl("cache", "prune", "--yes", "--format", "json")
    assert pruned.exit_code == 0, pruned.stderr
    assert len(json.loads(pruned.stdout)["leftovers"]) == 1
    assert not [p for p in layout.hub_dir(host_cache).iterdir() if p.name.startswith(("models--", ".nimctl"))]


def test_prune_removes_what_no_manifest_lists(
    pulled: Path, host_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = nimctl("cache", "prune", "--yes", "--format", "json")
    assert kept.exit_code == 0 and json.loads(kept.stdout)["removed"] == []  # tiny-vlm-hub lists it
    monkeypatch.setenv("NIMCTL_PROFILES_DIR", str(host_cache / "no-manifests-here"))
    imported = layout.manifests_dir(host_cache) / "tiny-vlm-hub.yaml"  # as bundle import leaves it
    imported.parent.mkdir(parents=True)
    shutil.copy(FIXTURES / "tiny-vlm-hub.yaml", imported)
    assert json.loads(nimctl("cache", "prune", "--yes", "--format", "json").stdout)["removed"] == []
    imported.unlink()
    killed_import = host_cache / f"{layout.IMPORT_PREFIX}99999999-x"  # its process is gone (past pid_max)
    (killed_import / "blobs").mkdir(parents=True)
    running_import = host_cache / f"{layout.IMPORT_PREFIX}{os.getpid()}-y"  # its process runs: kept
    running_import.mkdir()
    refused = nimctl("cache", "prune")
    assert refused.exit_code == EXIT_USAGE and pulled.is_dir()
    pruned = json.loads(nimctl("cache", "prune", "--yes", "--format", "json").stdout)
    assert pruned["removed"] == [f"hf://{REPO}"] and pruned["leftovers"] == [str(killed_import)]
    assert not pulled.exists() and not killed_import.exists() and running_import.is_dir()


def test_prune_removes_stale_partial_downloads(pulled: Path, host_cache: Path) -> None:
    from nimctl.store.removal import STALE_PARTIAL_S

    blobs = layout.repo_dir(host_cache, REPO) / "blobs"
    stale, fresh = blobs / "aaaa.1234abcd.incomplete", blobs / "bbbb.5678abcd.incomplete"
    stale.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"y" * 10)  # a download writing now
    old = time.time() - STALE_PARTIAL_S - 60
    os.utime(stale, (old, old))
    pruned = json.loads(nimctl("cache", "prune", "--yes", "--format", "json").stdout)
    assert pruned["removed"] == [] and pruned["leftovers"] == [str(stale)] and pruned["size_bytes"] == 1000
    assert fresh.exists() and pulled.is_dir()


def test_offline_check_names_the_missing_files(pulled: Path, host_cache: Path) -> None:
    assert require_cached(REPO, host_cache) == pulled
    (pulled / WEIGHTS).unlink()
    with pytest.raises(ModelUnavailableError) as caught:
        require_cached(REPO, host_cache)
    assert caught.value.exit_code == EXIT_MODEL_UNAVAILABLE
    assert "1 of 9 files missing (model.safetensors)" in caught.value.message
    assert "nimctl pull" in (caught.value.hint or "")


def _entry(cache: Path) -> CachedModel:
    from nimctl.store.inventory import find_cached

    entry = find_cached(cache, f"hf://{REPO}")
    assert entry is not None
    return entry
