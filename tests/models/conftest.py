"""Shared fixtures: the two built-in models, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from nimctl.models.builtin import BUILTIN_MODELS, ensure_builtin


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("builtin-models")
    for name in BUILTIN_MODELS:
        ensure_builtin(name, root)
    return root


@pytest.fixture(scope="session")
def tiny_llm(models_root: Path) -> Path:
    return models_root / "tiny-llm"


@pytest.fixture(scope="session")
def tiny_vlm(models_root: Path) -> Path:
    return models_root / "tiny-vlm"
