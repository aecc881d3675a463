"""The store's tests: a host cache of their own, and nimctl pointed at the hub emulation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub_emulation import HubEmulation

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REPO = "nimctl-test/tiny-vlm"


@pytest.fixture
def host_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """nimctl's host cache for this test (``XDG_CACHE_HOME``), with the tests' manifests found first."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("NIMCTL_PROFILES_DIR", str(FIXTURES))
    return tmp_path / "xdg" / "nimctl"


def nimctl_process(*args: str, hub: HubEmulation | None = None, **popen: object) -> subprocess.Popen[str]:
    """``nimctl ARGS`` as its own process, in this test's environment (hf_env, host_cache)."""
    env = {**os.environ, "NO_COLOR": "1"}
    if hub is not None:
        env["HF_ENDPOINT"] = hub.url
    return subprocess.Popen(
        [sys.executable, "-m", "nimctl", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[arg-type]
    )
