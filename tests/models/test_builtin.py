"""ensure_builtin: generation, determinism, completeness checks, crash and concurrency safety."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nimctl.errors import EXIT_USAGE, UsageError
from nimctl.models import builtin
from nimctl.models.builtin import BUILTIN_MODELS, MARKER_FILE, ensure_builtin, is_complete
from tests.models.hashing import file_hashes

EXPECTED_FILES = {
    "tiny-llm": {
        "LICENSE",
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        MARKER_FILE,
    },
}
EXPECTED_FILES["tiny-vlm"] = EXPECTED_FILES["tiny-llm"] | {"processor_config.json"}


def _run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nimctl.models.builtin", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_unknown_name_is_a_usage_error_listing_the_models(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        ensure_builtin("tiny-gpt", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "tiny-gpt" in message
    assert all(name in message for name in BUILTIN_MODELS)
    assert not any(tmp_path.iterdir()), "nothing is written for an unknown name"


def test_module_cli_rejects_unknown_name_and_bad_usage(tmp_path: Path) -> None:
    result = _run_module("nope", str(tmp_path))
    assert result.returncode == EXIT_USAGE
    assert result.stdout == ""
    assert result.stderr.startswith("Error: unknown built-in model 'nope'")

    result = _run_module("tiny-llm")
    assert result.returncode == EXIT_USAGE
    assert "usage: python -m nimctl.models.builtin NAME DEST_ROOT" in result.stderr


def test_importing_the_module_loads_no_torch() -> None:
    code = (
        "import sys, nimctl.models.builtin\n"
        "heavy = [m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_generated_folder_has_the_expected_files(models_root: Path, name: str) -> None:
    folder = models_root / name
    assert set(file_hashes(folder)) == EXPECTED_FILES[name]
    assert is_complete(name, folder)
    assert sum(p.stat().st_size for p in folder.iterdir()) < 3 * 1024 * 1024
    assert "Apache License, Version 2.0" in (folder / "LICENSE").read_text(encoding="utf-8")
    assert not list(models_root.glob(f".{name}.tmp-*")), "no temporary folder is left behind"


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_config_fits_vllm_cpu(models_root: Path, name: str) -> None:
    config = json.loads((models_root / name / "config.json").read_text(encoding="utf-8"))
    text = config.get("text_config", config)
    assert text["hidden_size"] // text["num_attention_heads"] >= 32, "CPU attention needs head_dim >= 32"
    assert text["max_position_embeddings"] >= 2048
    if name == "tiny-vlm":
        assert config["architectures"] == ["Idefics3ForConditionalGeneration"]
        vision = config["vision_config"]
        assert vision["hidden_size"] // vision["num_attention_heads"] >= 32
    else:
        assert config["architectures"] == ["LlamaForCausalLM"]


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_generation_is_deterministic_across_processes(models_root: Path, tmp_path: Path, name: str) -> None:
    result = _run_module(name, str(tmp_path))
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip())
    assert folder == (tmp_path / name).resolve()
    assert file_hashes(folder) == file_hashes(models_root / name)


def test_complete_model_is_returned_without_regenerating(
    models_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_build(name: str, folder: Path) -> None:
        raise AssertionError("a complete model was regenerated")

    monkeypatch.setattr(builtin, "_build", must_not_build)
    assert ensure_builtin("tiny-llm", models_root) == models_root / "tiny-llm"


def _copying_builder(source_root: Path):
    def build(name: str, folder: Path) -> None:
        for path in (source_root / name).iterdir():
            if path.name != MARKER_FILE:
                shutil.copy2(path, folder / path.name)

    return build


@pytest.mark.parametrize("damage", ["truncate-weights", "delete-marker", "old-generator"])
def test_incomplete_model_is_regenerated(
    models_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    folder = tmp_path / "tiny-llm"
    shutil.copytree(models_root / "tiny-llm", folder)
    if damage == "truncate-weights":
        (folder / "model.safetensors").write_bytes(b"half")
    elif damage == "delete-marker":
        (folder / MARKER_FILE).unlink()
    else:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
        marker["generator_version"] = 0
        (folder / MARKER_FILE).write_text(json.dumps(marker), encoding="utf-8")
    assert not is_complete("tiny-llm", folder)

    monkeypatch.setattr(builtin, "_build", _copying_builder(models_root))
    assert ensure_builtin("tiny-llm", tmp_path) == folder
    assert file_hashes(folder) == file_hashes(models_root / "tiny-llm")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny-llm.lock", "tiny-llm"]


def test_crash_during_generation_leaves_no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crashing_build(name: str, folder: Path) -> None:
        (folder / "config.json").write_text("{}", encoding="utf-8")
        raise KeyboardInterrupt

    monkeypatch.setattr(builtin, "_build", crashing_build)
    with pytest.raises(KeyboardInterrupt):
        ensure_builtin("tiny-vlm", tmp_path)
    assert not (tmp_path / "tiny-vlm").exists()
    assert not list(tmp_path.glob(".tiny-vlm.tmp-*"))


def test_leftovers_of_a_killed_generation_are_cleaned(
    models_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / ".tiny-llm.tmp-killed"
    stale.mkdir()
    (stale / "config.json").write_text("{}", encoding="utf-8")
    monkeypatch.setattr(builtin, "_build", _copying_builder(models_root))
    ensure_builtin("tiny-llm", tmp_path)
    assert not stale.exists()


def test_concurrent_callers_get_one_whole_model(models_root: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "nimctl.models.builtin", "tiny-llm", str(tmp_path)]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
        assert Path(stdout.strip()) == (tmp_path / "tiny-llm").resolve()
    assert file_hashes(tmp_path / "tiny-llm") == file_hashes(models_root / "tiny-llm")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny-llm.lock", "tiny-llm"]
