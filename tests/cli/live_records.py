"""Local instance records for the ps/top tests: a state folder entry pointing at a server that
runs already (the session's real engine, or a socket that never answers), the way
``nimctl run --runtime local`` records an instance, without starting another engine."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from nimctl.runtime.processes import process_identity


def record_instance(state: Path, name: str, url: str, pid: int, model: str = "tiny-vlm") -> Path:
    """``state/instances/NAME/instance.json`` for the process ``pid`` serving at ``url``.

    Only ps and top may be used on it: ``nimctl stop`` would signal ``pid``.
    """
    folder = state / "instances" / name
    folder.mkdir(parents=True)
    record = {
        "name": name,
        "model": model,
        "source": f"builtin://{model}",
        "profile_id": None,
        "profile_name": "test",
        "url": url,
        "host": "127.0.0.1",
        "port": int(url.rsplit(":", 1)[1]),
        "started_at": datetime.now(UTC).isoformat(),
        "pid": pid,
        "pid_identity": process_identity(pid),
    }
    (folder / "instance.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


def isolated_env(state: Path) -> dict[str, str]:
    """A state folder of the test's own, and no Docker daemon to ask (a socket that is not there)."""
    return {
        "NIMCTL_STATE_DIR": str(state),
        "DOCKER_HOST": f"unix://{state}/no-docker.sock",
        "NO_COLOR": "1",
        "COLUMNS": "250",
    }
