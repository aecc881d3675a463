"""Design "in-vllm" (issue #11, candidate 3): NIM's routes inside vLLM's API server, no hop.

vLLM's own API server is started with the engine arguments nim-serve would give it, plus
``--middleware in_vllm_middleware.NimRoutesMiddleware`` (this folder on PYTHONPATH). Clients talk
to vLLM's port; the middleware does the front's per-request work in vLLM's process. The direct
path is the same port with the benchmark's bypass header, so the CPU difference between the two
paths in that one process is the middleware's cost (``cpu_shared_with_engine``).

vLLM v1 runs the EngineCore in a child process; the pid started here is the API server (HTTP,
tokenising, detokenising, the middleware), which is what ``front_pids`` measures.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _designs import Deployment  # the benchmarks' folder is on sys.path
from _nim_serve import free_port

from nimctl.server.config import ServerConfig
from nimctl.server.plan import build_plan, engine_environment

BENCHMARKS = Path(__file__).resolve().parent
MIDDLEWARE = "in_vllm_middleware.NimRoutesMiddleware"
READY_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 60.0

GAPS = [
    "live before the engine is loaded: vLLM binds its port at start but listens only after the model"
    " loads, so /v1/health/live is refused (not 200) for the whole load",
    "ready is vLLM's /health, a flag check: 200 while the engine is stopped (SIGSTOP) and requests"
    " hang; no hung-engine detection, no restart; an engine death ends the process with exit code 0",
    "orphans: the EngineCore outlives a SIGKILLed API server (no PR_SET_PDEATHSIG, no watchdog)",
    "drain on SIGTERM is vLLM's (engine-client shutdown, then uvicorn cancelled): no 503 for new work"
    " while draining, no OpenAI-shaped end for requests cut by the drain deadline",
    "engine 500s are not judged (client's fault -> 400, else 502) and the retryable 500 is not resent",
    "limits: no concurrency/queue limit (429), no rate limit, no body timeout (408) or header cap (431);"
    " only the body-size cap (413)",
    "management routes (/v1/version, /v1/license, /v1/metadata, /v1/manifest) and /v1/models/{model}"
    " are 404; /v1/chat/completions/render is vLLM's own answer (no prompt text)",
    "TLS/mTLS would be vLLM's --ssl-* flags, not NIM_SSL_MODE; CORS is vLLM's --allowed-origins and"
    " runs inside the key check (a browser preflight gets 401)",
    "/v1/metrics is vLLM's /metrics document with the nimctl_ families in it: no nimctl_ready or"
    " nimctl_engine_state",
]


def _model_dir(uri: str, cache: Path) -> str:
    """nim-serve's own fetch child (nimctl.server.fetch): a builtin model is generated into
    ``cache`` once, and torch stays out of the benchmark's process."""
    done = subprocess.run(
        [sys.executable, "-m", "nimctl.server.fetch", str(os.getpid()), uri, str(cache)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    answer = json.loads(lines[-1]) if lines else {}
    if "folder" not in answer:
        raise RuntimeError(f"fetching {uri} failed: {answer.get('error') or done.returncode}")
    return str(answer["folder"])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the API server's group (it takes the EngineCore with it), SIGKILL what is left."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the EngineCore child, should it outlive its parent
    process.wait(30)


def start(model: str, key: str | None, workdir: Path) -> Deployment:
    """vLLM's API server with the middleware, ready on a free port; exits the script if not."""
    env = {k: v for k, v in os.environ.items() if k not in ("NIMCTL_API_KEY", "NIMCTL_API_KEY_FILE")}
    env["NIM_MODEL_PATH"] = model
    config = ServerConfig.from_env(env)
    plan = build_plan(config, environ=env)
    port = free_port()
    command = [*plan.command(_model_dir(model, config.cache_path), port), "--middleware", MIDDLEWARE]
    # The engine's environment as nim-serve builds it (caches, media caps), plus the middleware's.
    engine_env = {**engine_environment(plan), **env}
    engine_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCHMARKS), env.get("PYTHONPATH")]))
    if key:
        engine_env["NIMCTL_API_KEY"] = key
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "in-vllm-server.log"
    process = subprocess.Popen(
        command,
        env=engine_env,
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: stop() reaches the EngineCore child too
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            _stop(process)
            sys.exit(f"vLLM exited with {process.returncode}; see {log}")
        try:
            if httpx.get(url + "/v1/health/ready", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            _stop(process)
            sys.exit(f"vLLM not ready after {READY_TIMEOUT_S:.0f} s; see {log}")
        time.sleep(0.5)
    return Deployment(
        name="in-vllm",
        url=url,
        direct_url=url,
        key=key,
        front_pids=[process.pid],
        stop=lambda: _stop(process),
        direct_headers={"x-nimctl-bench-direct": "1"},
        cpu_shared_with_engine=True,
        gaps=list(GAPS),
    )
