"""Shared fixtures: nimctl's demo LoRA adapters for tiny-llm, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from nimctl.lora.demo import ensure_demo_adapters


@pytest.fixture(scope="session")
def demo_adapters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<tmp>/tiny-llm-loras``: one sub-folder per demo adapter (r8, r16, broken), as
    ``nimctl.lora.demo`` makes it; ready for NIM_PEFT_SOURCE or ``--lora-dir``. Do not write into it."""
    return ensure_demo_adapters("tiny-llm", tmp_path_factory.mktemp("lora-demo"))
