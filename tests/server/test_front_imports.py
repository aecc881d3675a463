"""The front imports no vLLM code: building and serving it loads no vllm, torch or transformers.

The front is meant to be light and testable on its own (issue 2); the engine is a child process.
This builds the app as tests/server/test_front.py does, runs its lifespan and answers a few
requests, all in a fresh interpreter, so that nothing this test process imported counts.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("vllm", "torch", "transformers")

PROBE = """
import json, sys
from fastapi.testclient import TestClient

import nimctl.server.runner  # what nim-serve runs the front with
from nimctl.server.app import create_app
from nimctl.server.config import ServerConfig
from nimctl.server.plan import build_plan
from nimctl.server.state import ServerState

config = ServerConfig.from_env(
    {}, model_path="builtin://tiny-vlm", cache_path=sys.argv[1], engine_port=9
)
with TestClient(create_app(ServerState(build_plan(config)), supervise=False)) as client:
    codes = [client.get(path).status_code for path in ("/v1/health/live", "/v1/health/ready", "/openapi.json")]
print(json.dumps({"codes": codes, "modules": sorted(sys.modules)}))
"""


def test_building_and_serving_the_front_loads_no_engine_code(tmp_path: Path) -> None:
    # The check means something only where the heavy packages could be imported at all.
    missing = [name for name in HEAVY if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"not installed here, so not importable by accident either: {missing}")
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["codes"] == [200, 503, 200]  # the app was built and served, not just imported
    assert "nimctl.server.app" in report["modules"]
    heavy = [name for name in report["modules"] if name.split(".")[0] in HEAVY]
    assert heavy == []
