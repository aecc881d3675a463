"""Finding a manifest by path, name, served name, source URI, and along the search path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nimctl.errors import UsageError
from nimctl.profiles import find_manifest, search_path
from nimctl.profiles.loader import REPO_PROFILES_DIR


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("tiny-vlm", "tiny-vlm"),
        ("builtin://tiny-vlm", "tiny-vlm"),
        ("hf://Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5-vl-7b-instruct"),
        ("hf://Qwen/Qwen2.5-VL-7B-Instruct@main", "qwen2.5-vl-7b-instruct"),  # a revision is still the model
        ("Qwen2.5-VL-7B-Instruct", "qwen2.5-vl-7b-instruct"),  # the repo's own name, any case
        ("qwen/qwen2.5-vl-7b-instruct", "qwen2.5-vl-7b-instruct"),  # the served name
        ("google/gemma-3-27b-it", "gemma-3-27b-it"),
        (str(REPO_PROFILES_DIR / "tiny-llm.yaml"), "tiny-llm"),
    ],
)
def test_find_by(ref: str, name: str) -> None:
    assert find_manifest(ref).model.name == name


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(UsageError) as caught:
        find_manifest("hf://nobody/nothing")
    assert caught.value.message.startswith("no manifest for 'hf://nobody/nothing' (known models: ")
    assert "tiny-vlm" in caught.value.message
    assert caught.value.hint and "NIMCTL_PROFILES_DIR" in caught.value.hint


def test_missing_manifest_file() -> None:
    with pytest.raises(UsageError, match="manifest file not found: nowhere/x.yaml"):
        find_manifest("nowhere/x.yaml")


def test_env_folder_comes_first_and_shadows_by_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (
        (REPO_PROFILES_DIR / "tiny-llm.yaml")
        .read_text()
        .replace("served_name: tiny-llm", "served_name: mine")
    )
    (tmp_path / "tiny-llm.yaml").write_text(text)
    monkeypatch.setenv("NIMCTL_PROFILES_DIR", str(tmp_path))
    assert search_path()[0] == tmp_path
    assert find_manifest("tiny-llm").model.served_name == "mine"
    assert (
        find_manifest("tiny-vlm").path.parent.resolve() == REPO_PROFILES_DIR.resolve()
    )  # the rest still found


def test_profiles_dir_argument_searches_only_there(tmp_path: Path) -> None:
    shutil.copy(REPO_PROFILES_DIR / "tiny-llm.yaml", tmp_path / "tiny-llm.yaml")
    assert find_manifest("builtin://tiny-llm", profiles_dir=tmp_path).path == tmp_path / "tiny-llm.yaml"
    with pytest.raises(UsageError, match=r"known models: tiny-llm\)"):
        find_manifest("tiny-vlm", profiles_dir=tmp_path)


def test_profiles_dir_argument_may_name_several_folders(tmp_path: Path) -> None:
    """As nimctl run gives a container a manifest of the user's: NIMCTL_PROFILES_DIR=user:image."""
    mine, image = tmp_path / "user", tmp_path / "image"
    mine.mkdir()
    image.mkdir()
    shutil.copy(REPO_PROFILES_DIR / "tiny-llm.yaml", mine / "tiny-llm.yaml")
    shutil.copy(REPO_PROFILES_DIR / "tiny-vlm.yaml", image / "tiny-vlm.yaml")
    both = f"{mine}:{tmp_path / 'absent'}:{image}"
    assert search_path(both) == [mine, image]
    assert find_manifest("tiny-llm", profiles_dir=both).path == mine / "tiny-llm.yaml"
    assert find_manifest("tiny-vlm", profiles_dir=both).path == image / "tiny-vlm.yaml"


def test_a_broken_neighbour_does_not_hide_a_good_manifest(tmp_path: Path) -> None:
    shutil.copy(REPO_PROFILES_DIR / "tiny-llm.yaml", tmp_path / "good.yaml")
    (tmp_path / "broken.yaml").write_text("model: [unclosed\n")
    assert find_manifest("builtin://tiny-llm", profiles_dir=tmp_path).model.name == "tiny-llm"


@pytest.mark.parametrize(
    "folder",
    ["/models/Qwen2.5-VL-7B-Instruct", "/models/qwen2.5-vl-7b-instruct/", "~/models/Qwen2.5-VL-7B-Instruct"],
)
def test_a_local_model_folder_is_found_by_its_name(folder: str) -> None:
    # As NIM_MODEL_PATH gives it: the folder need not exist yet for its name to count.
    assert find_manifest(folder).model.name == "qwen2.5-vl-7b-instruct"


def test_an_existing_relative_folder_counts_by_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "weights" / "gemma-3-27b-it").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert find_manifest("weights/gemma-3-27b-it").model.name == "gemma-3-27b-it"
    # Not a folder: "org/name" is a served name, and no manifest serves this one.
    with pytest.raises(UsageError, match="no manifest for 'someorg/gemma-3-27b-it'"):
        find_manifest("someorg/gemma-3-27b-it")


def test_a_renamed_folder_is_found_by_its_config(tmp_path: Path) -> None:
    folder = tmp_path / "my-checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text('{"_name_or_path": "google/gemma-3-27b-it"}', encoding="utf-8")
    assert find_manifest(str(folder)).model.name == "gemma-3-27b-it"
    (folder / "config.json").write_text('{"_name_or_path": "/home/me/ckpt"}', encoding="utf-8")
    with pytest.raises(UsageError, match="no manifest for"):
        find_manifest(str(folder))
    (folder / "config.json").write_text("[not json", encoding="utf-8")
    with pytest.raises(UsageError, match="no manifest for"):
        find_manifest(str(folder))
