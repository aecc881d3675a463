"""nim-serve's own data paths as benchmark designs: ``lean`` (the default: the relayed routes in
one plain ASGI handler, nimctl/server/lean_relay.py) and ``framework`` (through FastAPI's routing
and middleware stack, as before issue #11), picked with NIMCTL_FRONT_DATA_PATH."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from _designs import Deployment
from _nim_serve import free_port, start_nim_serve


def start(model: str, key: str | None, workdir: Path, data_path: str = "lean") -> Deployment:
    front, engine = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("NIMCTL_API_KEY", "NIMCTL_API_KEY_FILE")},
        "NIM_MODEL_PATH": model,
        "NIM_SERVER_PORT": str(front),
        "NIMCTL_ENGINE_PORT": str(engine),
        "NIM_CACHE_PATH": os.environ.get("NIM_CACHE_PATH") or str(workdir / "cache"),
        "NIM_LOG_LEVEL": "WARNING",
        "NIMCTL_FRONT_DATA_PATH": data_path,
    }
    if key:
        env["NIMCTL_API_KEY"] = key
    process = start_nim_serve(env, workdir / f"nim-serve-{data_path}.log", front)

    def stop() -> None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)

    name = data_path if key else f"{data_path}-open"
    return Deployment(
        name=name,
        url=f"http://127.0.0.1:{front}",
        direct_url=f"http://127.0.0.1:{engine}",
        key=key,
        front_pids=[process.pid],
        stop=stop,
    )
