"""LoRA adapters on the real engine: served at start, rescanned, removed after their requests end,
loaded and unloaded at run time, and broken ones skipped with the reason.

One nim-serve for the module: tiny-llm with the demo adapters plus three broken ones of our own,
rescanned every second, runtime updates on. Outputs are compared by structure (logprobs of the same
greedy tokens differ when an adapter is applied), never by what random weights say.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.server_process import ServerProcess

pytestmark = pytest.mark.engine

REFRESH_S = 1.0
# Tokens in a stream that must still be running when the front notices a removal: an adapter on
# tiny-llm makes about 130 a second here (benchmarks/lora.py), and the client does not read while it
# waits, so the whole stream must outlast a rescan and the socket buffers (about 15 s).
LONG_STREAM = 2000
# A scan that finds a folder loads it into the engine: well under a second here, a few on a busy CI.
LOAD_SLACK_S = 10.0
BASE = "tiny-llm"
R8, R16, BROKEN = "tiny-llm-lora-r8", "tiny-llm-lora-r16", "tiny-llm-lora-broken"


def _config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "adapter_config.json").read_text())


def _broken_copies(demo: Path, folder: Path) -> None:
    """Four more ways to be broken: a config that is not JSON, a rank above the server's largest
    (NIM_MAX_LORA_RANK=32), an adapter made for another base model, and a good adapter in a folder
    named like the base model (requests naming it must stay the base model's)."""
    shutil.copytree(demo / R8, folder / "bad-config")
    (folder / "bad-config" / "adapter_config.json").write_text("{not json")
    shutil.copytree(demo / R16, folder / "rank-too-high")
    (folder / "rank-too-high" / "adapter_config.json").write_text(
        json.dumps({**_config(demo / R16), "r": 64})
    )
    shutil.copytree(demo / R8, folder / "wrong-base")
    config = {**_config(demo / R8), "base_model_name_or_path": "meta-llama/Llama-3.1-8B-Instruct"}
    (folder / "wrong-base" / "adapter_config.json").write_text(json.dumps(config))
    shutil.copytree(demo / R8, folder / BASE)


@pytest.fixture(scope="module")
def lora_dir(demo_adapters: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("served") / "loras"
    shutil.copytree(demo_adapters, folder, ignore=shutil.ignore_patterns(".*"))
    _broken_copies(demo_adapters, folder)
    return folder


@pytest.fixture(scope="module")
def lora_server(
    lora_dir: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {
        "NIM_PEFT_SOURCE": str(lora_dir),
        "NIM_PEFT_REFRESH_INTERVAL": str(REFRESH_S),
        "NIM_MAX_LORA_RANK": "32",
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true",
        "NIM_LOG_LEVEL": "INFO",
    }
    log = tmp_path_factory.mktemp("lora-logs") / "nim-serve.log"
    with ServerProcess(f"builtin://{BASE}", model_cache, log, env=env).running() as server:
        yield server


@pytest.fixture(scope="module")
def client(lora_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=lora_server.url + "/v1", api_key="none", max_retries=0, timeout=60)


def lora_state(server: ServerProcess) -> dict[str, Any]:
    return httpx.get(server.url + "/v1/metadata", timeout=10).json()["loraAdapters"]


def served(client: openai.OpenAI) -> dict[str, str | None]:
    return {model.id: getattr(model, "parent", None) for model in client.models.list().data}


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until it holds; how long it took. A readiness check, not a sleep."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - start


def logprobs(client: openai.OpenAI, model: str) -> list[float]:
    answer = client.completions.create(
        model=model,
        prompt="The adapter under test",
        max_tokens=6,
        temperature=0,
        seed=7,
        logprobs=1,
        extra_body={"ignore_eos": True},
    )
    assert answer.usage is not None and answer.usage.completion_tokens == 6
    return [round(p, 4) for p in answer.choices[0].logprobs.token_logprobs]


def long_stream(client: openai.OpenAI, model: str) -> Iterator[Any]:
    """A LONG_STREAM-token stream on ``model``, its first chunk read: the engine is generating for it."""
    chunks = iter(
        client.completions.create(
            model=model,
            prompt="go on",
            max_tokens=LONG_STREAM,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    next(chunks)
    return chunks


def put(source: Path, folder: Path, name: str) -> None:
    """Copy an adapter in as a tool would: into a hidden folder (left out of scans), then renamed."""
    staging = folder / f".{name}.copying"
    shutil.copytree(source, staging)
    staging.rename(folder / name)


def test_adapters_found_at_start_are_served_under_their_folder_names(client: openai.OpenAI) -> None:
    models = served(client)
    assert models == {BASE: None, R8: BASE, R16: BASE}  # listed from the first ready second


def test_each_adapter_changes_the_output(client: openai.OpenAI) -> None:
    base, r8, r16 = (logprobs(client, m) for m in (BASE, R8, R16))
    assert base != r8 and base != r16 and r8 != r16
    assert logprobs(client, R8) == r8  # and the same adapter answers the same way again


def test_chat_answers_under_an_adapter_name(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=R16, messages=[{"role": "user", "content": "hi"}], max_tokens=4, extra_body={"ignore_eos": True}
    )
    assert answer.model == R16 and answer.choices[0].finish_reason == "length"


def test_broken_adapters_are_skipped_with_their_reasons(
    lora_server: ServerProcess, client: openai.OpenAI
) -> None:
    state = lora_state(lora_server)
    reasons = {item["name"]: item["reason"] for item in state["skipped"]}
    assert set(reasons) == {BROKEN, "bad-config", "rank-too-high", "wrong-base", BASE}
    assert "the base model's" in reasons[BASE]
    assert "weights are missing" in reasons[BROKEN]
    assert "not valid JSON" in reasons["bad-config"]
    assert "rank 64 is above the server's largest, 32" in reasons["rank-too-high"]
    assert "made for base model 'meta-llama/Llama-3.1-8B-Instruct'" in reasons["wrong-base"]
    loaded = {item["name"]: item for item in state["loaded"]}
    assert loaded[R8]["rank"] == 8 and loaded[R8]["target_modules"] == ["q_proj", "v_proj"]
    assert loaded[R16]["rank"] == 16 and len(loaded[R16]["target_modules"]) == 7
    assert state["maxLoraRank"] == 32 and state["refreshInterval"] == REFRESH_S
    with pytest.raises(openai.NotFoundError, match="was skipped"):
        client.completions.create(model=BROKEN, prompt="x", max_tokens=1)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-adapter", prompt="x", max_tokens=1)
    manifest = httpx.get(lora_server.url + "/v1/manifest", timeout=10).json()
    assert {R8, R16} <= set(manifest["lora_adapters"]) and BROKEN not in manifest["lora_adapters"]


def test_an_added_folder_is_served_and_a_removed_one_goes(
    lora_server: ServerProcess, client: openai.OpenAI, lora_dir: Path, demo_adapters: Path
) -> None:
    put(demo_adapters / R16, lora_dir, "added")
    took = wait_for(lambda: "added" in served(client), 2 * REFRESH_S + LOAD_SLACK_S, "added adapter listed")
    assert logprobs(client, "added") == logprobs(client, R16)  # the same weights under a new name
    shutil.rmtree(lora_dir / "added")
    wait_for(lambda: "added" not in served(client), 2 * REFRESH_S + LOAD_SLACK_S, "removed adapter gone")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="added", prompt="x", max_tokens=1)
    print(f"added adapter listed {took:.1f} s after its folder appeared")


def test_a_request_in_flight_on_a_removed_adapter_finishes_first(
    lora_server: ServerProcess, client: openai.OpenAI, lora_dir: Path, demo_adapters: Path
) -> None:
    put(demo_adapters / R8, lora_dir, "leaving")
    wait_for(lambda: "leaving" in served(client), 2 * REFRESH_S + LOAD_SLACK_S, "adapter listed")
    chunks = long_stream(client, "leaving")
    shutil.rmtree(lora_dir / "leaving")

    def unloading() -> bool:
        return any(
            item["name"] == "leaving" and item["unloading"] for item in lora_state(lora_server)["loaded"]
        )

    wait_for(unloading, 2 * REFRESH_S + LOAD_SLACK_S, "removal noticed")
    with pytest.raises(openai.NotFoundError, match="being removed"):  # no new work on it meanwhile
        client.completions.create(model="leaving", prompt="x", max_tokens=1)
    rest = list(chunks)
    finish = [c.choices[0].finish_reason for c in rest if c.choices and c.choices[0].finish_reason]
    usage = [c.usage for c in rest if c.usage is not None]
    assert finish == ["length"] and usage[-1].completion_tokens == LONG_STREAM
    wait_for(lambda: "leaving" not in served(client), LOAD_SLACK_S, "unloaded after the stream ended")


def test_runtime_load_and_unload(
    lora_server: ServerProcess, client: openai.OpenAI, demo_adapters: Path, tmp_path: Path
) -> None:
    url = lora_server.url
    outside = tmp_path / "elsewhere"
    shutil.copytree(demo_adapters / R8, outside)
    loaded = httpx.post(
        url + "/v1/load_lora_adapter", json={"lora_name": "rt", "lora_path": str(outside)}, timeout=60
    )
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["rank"] == 8 and loaded.json()["origin"] == "runtime"
    assert served(client)["rt"] == BASE
    assert logprobs(client, "rt") == logprobs(client, R8)
    again = httpx.post(
        url + "/v1/load_lora_adapter", json={"lora_name": "rt", "lora_path": str(outside)}, timeout=60
    )
    assert again.status_code == 409
    scans = lora_state(lora_server)["scans"]
    wait_for(
        lambda: lora_state(lora_server)["scans"] >= scans + 2, 2 * REFRESH_S + LOAD_SLACK_S, "two rescans"
    )
    assert "rt" in served(client)  # a rescan leaves what was loaded at run time alone
    broken = httpx.post(
        url + "/v1/load_lora_adapter",
        json={"lora_name": "b", "lora_path": str(demo_adapters / BROKEN)},
        timeout=60,
    )
    assert broken.status_code == 400 and "weights are missing" in broken.json()["error"]["message"]
    folder_one = httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": R8}, timeout=60)
    assert (
        folder_one.status_code == 409 and "remove its folder instead" in folder_one.json()["error"]["message"]
    )
    unloaded = httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": "rt"}, timeout=60)
    assert unloaded.status_code == 200 and unloaded.json()["unloaded"] is True  # nothing in flight
    assert "rt" not in served(client)
    missing = httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": "rt"}, timeout=60)
    assert missing.status_code == 404
    bad = httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": "", "lora_path": 3}, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "lora_name"
    relative = httpx.post(
        url + "/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "a/b"}, timeout=60
    )
    assert relative.status_code == 400 and "not an absolute path" in relative.json()["error"]["message"]
    base = httpx.post(
        url + "/v1/load_lora_adapter", json={"lora_name": BASE, "lora_path": str(outside)}, timeout=60
    )
    assert base.status_code == 409


def test_a_runtime_unload_lets_the_requests_in_flight_finish(
    lora_server: ServerProcess, client: openai.OpenAI, demo_adapters: Path, tmp_path: Path
) -> None:
    url = lora_server.url
    shutil.copytree(demo_adapters / R16, tmp_path / "rt-leaving")
    body = {"lora_name": "rt-leaving", "lora_path": str(tmp_path / "rt-leaving")}
    assert httpx.post(url + "/v1/load_lora_adapter", json=body, timeout=60).status_code == 200
    chunks = long_stream(client, "rt-leaving")
    answer = httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": "rt-leaving"}, timeout=60)
    assert answer.status_code == 200 and answer.json()["unloading"] is True  # answered at once
    with pytest.raises(openai.NotFoundError, match="being removed"):
        client.completions.create(model="rt-leaving", prompt="x", max_tokens=1)
    rest = list(chunks)
    usage = [c.usage for c in rest if c.usage is not None]
    assert usage[-1].completion_tokens == LONG_STREAM
    wait_for(lambda: "rt-leaving" not in served(client), LOAD_SLACK_S, "unloaded after the stream ended")
    assert logprobs(client, BASE)  # the base model is untouched throughout


def _serve_and_fail(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """nim-serve with ``env``: it must refuse to start, before any engine."""
    command = [sys.executable, "-m", "nimctl", "serve"]
    ours = {k: v for k, v in os.environ.items() if not k.startswith(("NIM_", "VLLM_"))}
    full = {**ours, "NIM_MODEL_PATH": f"builtin://{BASE}", "NIM_CACHE_PATH": str(tmp_path), **env}
    return subprocess.run(command, env=full, capture_output=True, text=True, timeout=120, check=False)


def test_start_up_errors(demo_adapters: Path, tmp_path: Path) -> None:
    missing = _serve_and_fail({"NIM_PEFT_SOURCE": str(tmp_path / "nope")}, tmp_path)
    assert missing.returncode == 2
    assert f"Error: NIM_PEFT_SOURCE={tmp_path / 'nope'} does not exist" in missing.stderr
    pinned = _serve_and_fail(
        {"NIM_PEFT_SOURCE": str(demo_adapters), "NIM_MODEL_PROFILE": "vllm-fp32-tp1-pp1-cpu"}, tmp_path
    )
    assert pinned.returncode == 8
    assert "has no LoRA support" in pinned.stderr and "vllm-fp32-tp1-pp1-cpu-lora" in pinned.stderr
