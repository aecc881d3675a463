"""NIM's ``download-to-cache`` and ``create-model-store``, run as the console scripts they are,
against the hub emulation (the real huggingface_hub client) and with the built-in tiny VLM."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nimctl.errors import EXIT_MODEL_UNAVAILABLE, EXIT_NO_PROFILE, EXIT_USAGE, DiskFullError
from nimctl.store import layout
from tests.hub_emulation import HubEmulation
from tests.hub_repos import tiny_vlm_folder
from tests.store.conftest import FIXTURES, REPO

WEIGHTS = "model.safetensors"
HUB_PROFILE = (
    "fa7a0ef328fc15cc357fa229c0b858b3b89bfeb4ac3bab3629fb9269e803dc85"  # tests/fixtures/tiny-vlm-hub.yaml
)
BUILTIN_PROFILE = "6a451bce28f32fc874a074b68f802abc7f810bbba8316ba70b8584af5eb48ea5"  # tiny-vlm's
ENTRIES = {
    "download-to-cache": "nimctl.cli.nim_utilities:download_to_cache_main",
    "create-model-store": "nimctl.cli.nim_utilities:create_model_store_main",
}


def utility(name: str, *args: str, cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The console script ``name`` (the installed one, else its entry point) with NIM_CACHE_PATH=cache."""
    script = Path(sys.executable).with_name(name)
    if script.exists():
        command = [str(script), *args]
    else:
        module, function = ENTRIES[name].split(":")
        code = f"import sys; sys.argv = {[name, *args]!r}; from {module} import {function}; {function}()"
        command = [sys.executable, "-c", code]
    environ = {
        **os.environ,
        "NO_COLOR": "1",
        "NIM_CACHE_PATH": str(cache),
        "NIMCTL_PROFILES_DIR": str(FIXTURES),
        "NIMCTL_ASSUME_GPUS": "none",
        **env,
    }
    for variable in ("NIM_MODEL_PATH", "NIM_MODEL_PROFILE", "NIM_DISABLE_MODEL_DOWNLOAD"):
        if variable not in env:
            environ.pop(variable, None)
    return subprocess.run(command, capture_output=True, text=True, env=environ, timeout=120, check=False)


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    assert done.returncode == code, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("Error: ") and message in lines[0], done.stderr
    assert lines[1].startswith("Hint: ") and "Traceback" not in done.stderr


def test_download_to_cache_fills_the_cache_once(hf_env: HubEmulation, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    done = utility("download-to-cache", "--model", "tiny-vlm-hub", "--format", "json", cache=cache)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # not a terminal: no bar
    summary = json.loads(done.stdout)
    # The profile nim-serve would select here (one CPU profile), and the source's files.
    assert summary["profiles"] == [{"id": HUB_PROFILE, "name": "vllm-fp32-tp1-pp1-cpu"}]
    assert summary["cache"] == str(cache) and summary["commit"] == hf_env.tiny_vlm_main
    folder = Path(summary["folder"])
    assert folder == layout.repo_dir(cache, REPO) / "snapshots" / hf_env.tiny_vlm_main
    assert {"config.json", WEIGHTS, "README.md"} <= set(files_of(folder))
    assert summary["fetched_bytes"] == summary["size_bytes"] > 0
    served = hf_env.bytes_served(REPO, WEIGHTS)
    assert served == (folder / WEIGHTS).stat().st_size

    # The default model is $NIM_MODEL_PATH, as in the container: all there, nothing fetched again.
    again = utility("download-to-cache", cache=cache, NIM_MODEL_PATH=f"hf://{REPO}")
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines[0].startswith(f"hf://{REPO}@main ({hf_env.tiny_vlm_main[:12]}): ")
    assert lines[0].endswith("all in the cache") and lines[1] == f"folder:   {folder}"
    assert lines[2] == f"profiles: vllm-fp32-tp1-pp1-cpu ({HUB_PROFILE[:12]})"
    assert hf_env.bytes_served(REPO, WEIGHTS) == served


def test_all_profiles_and_nims_list_of_ids(hf_env: HubEmulation, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    everything = utility("download-to-cache", "--all", "--model", "tiny-vlm-hub", "-f", "json", cache=cache)
    assert everything.returncode == 0, everything.stderr
    assert [p["id"] for p in json.loads(everything.stdout)["profiles"]] == [HUB_PROFILE]
    # NIM's `-p ID ID`: the id, a prefix and the name of one profile count once.
    listed = utility(
        "download-to-cache", "--model", "tiny-vlm-hub", "-p", HUB_PROFILE, HUB_PROFILE[:8],
        "--profile", "vllm-fp32-tp1-pp1-cpu", "-f", "json", cache=cache,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["profiles"] == [{"id": HUB_PROFILE, "name": "vllm-fp32-tp1-pp1-cpu"}]
    assert json.loads(listed.stdout)["fetched_bytes"] == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-p", "nope"], EXIT_NO_PROFILE, "profile 'nope' is not in the tiny-vlm-hub manifest"),
        (["--all", "-p", HUB_PROFILE], EXIT_USAGE, "give it or --profiles, not both"),
        (["--lora", "--all"], EXIT_USAGE, "--lora chooses the default LoRA profile"),
        (["--bogus"], EXIT_USAGE, "No such option: --bogus"),
    ],
)
def test_download_to_cache_refuses_with_one_line(
    hf_env: HubEmulation, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    done = utility("download-to-cache", "--model", "tiny-vlm-hub", *args, cache=tmp_path / "cache")
    assert_one_line_error(done, code, message)
    assert hf_env.requests() == []  # refused before any request


def test_offline_only_checks_the_cache(hf_env: HubEmulation, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    offline = {"NIM_DISABLE_MODEL_DOWNLOAD": "1"}
    refused = utility("download-to-cache", "--model", "tiny-vlm-hub", cache=cache, **offline)
    assert_one_line_error(refused, EXIT_MODEL_UNAVAILABLE, f"hf://{REPO} is not in the cache")
    assert hf_env.requests() == []
    assert utility("download-to-cache", "--model", "tiny-vlm-hub", cache=cache).returncode == 0
    snapshot = layout.repo_dir(cache, REPO) / "snapshots" / hf_env.tiny_vlm_main
    (snapshot / WEIGHTS).unlink()
    hf_env.reset_counters()
    incomplete = utility("download-to-cache", "--model", "tiny-vlm-hub", cache=cache, **offline)
    assert_one_line_error(incomplete, EXIT_MODEL_UNAVAILABLE, f"files missing ({WEIGHTS})")
    assert hf_env.requests() == []


def test_create_model_store_copies_real_files(hf_env: HubEmulation, tmp_path: Path) -> None:
    cache, store = tmp_path / "cache", tmp_path / "store" / "tiny"
    args = ["-p", HUB_PROFILE[:12], "-m", str(store), "--model", "tiny-vlm-hub"]
    done = utility("create-model-store", *args, "-f", "json", cache=cache)  # not cached yet: fetched
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    snapshot = layout.repo_dir(cache, REPO) / "snapshots" / hf_env.tiny_vlm_main
    assert summary["model_store"] == str(store) and summary["profile"]["id"] == HUB_PROFILE
    assert summary["fetched_bytes"] > 0 and summary["commit"] == hf_env.tiny_vlm_main
    assert files_of(store) == files_of(snapshot) and "config.json" in files_of(store)
    assert summary["files"] == len(files_of(store)) and summary["size_bytes"] == sum(
        len(data) for data in files_of(store).values()
    )
    assert not [p for p in store.rglob("*") if p.is_symlink()]  # real files, nothing points into the cache

    again = utility("create-model-store", *args, cache=cache)
    assert_one_line_error(again, EXIT_USAGE, "is not empty")
    missing = utility("create-model-store", "-m", str(tmp_path / "other"), cache=cache)
    assert_one_line_error(missing, EXIT_USAGE, "Missing option '--profile'")
    wrong = utility(
        "create-model-store", "-p", "nope", "-m", str(tmp_path / "x"), "--model", "tiny-vlm-hub", cache=cache
    )
    assert_one_line_error(wrong, EXIT_NO_PROFILE, "profile 'nope'")
    assert not (tmp_path / "x").exists()


def test_the_built_in_model(model_cache: Path, tmp_path: Path) -> None:
    cache, store = tmp_path / "cache", tmp_path / "store"
    # The session's generated model, so that no test generates it again (ensure_builtin sees it whole).
    shutil.copytree(tiny_vlm_folder(model_cache), layout.builtin_dir(cache) / "tiny-vlm")
    done = utility("download-to-cache", "--model", "tiny-vlm", "-f", "json", cache=cache)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["model"] == "builtin://tiny-vlm" and summary["profiles"][0]["id"] == BUILTIN_PROFILE
    assert Path(summary["folder"]) == (layout.builtin_dir(cache) / "tiny-vlm").resolve()
    made = utility(
        "create-model-store", "-p", BUILTIN_PROFILE, "-m", str(store), cache=cache
    )  # nim-serve's default model
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[-1] == f"use it:  NIM_MODEL_PATH={store.resolve()}"
    assert files_of(store) == files_of(Path(summary["folder"])) and (store / "config.json").is_file()


def test_a_failed_copy_leaves_no_model_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nimctl.store import model_store

    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "a.bin", "b.bin"):
        (model / name).write_text(name)
    copied: list[str] = []

    def copy_then_fill_the_disk(source: Path, target: Path) -> None:
        if copied:
            raise OSError(errno.ENOSPC, "No space left on device")
        copied.append(Path(source).name)
        target.write_bytes(Path(source).read_bytes())

    monkeypatch.setattr(model_store.shutil, "copyfile", copy_then_fill_the_disk)
    with pytest.raises(DiskFullError, match="filled up"):
        model_store.create_model_store(model, tmp_path / "new")
    assert copied == ["a.bin"] and not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()  # an empty folder given (a mount point, say) stays, emptied again
    copied.clear()
    with pytest.raises(DiskFullError):
        model_store.create_model_store(model, tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []
    monkeypatch.undo()
    made = model_store.create_model_store(model, tmp_path / "empty")
    assert (made.files, made.size_bytes) == (3, len("config.json") + 2 * len("a.bin"))
