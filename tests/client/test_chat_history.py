"""Where `nimctl chat` keeps its input history: nimctl's state folder, whichever variable sets it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nimctl.cli.chat_session import history_file


def test_history_follows_nimctl_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("NIMCTL_STATE_DIR", str(tmp_path / "nimctl-state"))
    assert history_file() == tmp_path / "nimctl-state" / "chat_history"


def test_history_falls_back_to_xdg_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NIMCTL_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert history_file() == tmp_path / "xdg" / "nimctl" / "chat_history"


def test_finding_the_history_file_does_not_import_the_docker_sdk() -> None:
    code = (
        "import sys; from nimctl.cli.chat_session import history_file; history_file(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('docker', 'requests', 'httpx')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
