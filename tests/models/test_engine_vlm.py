"""Smoke test on the real engine: vLLM CPU serves the generated tiny-vlm and reads images."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

pytestmark = pytest.mark.engine

# What the tiny models' CPU profiles start vLLM with (see the manifests in profiles/).
ENGINE_ARGS = [
    "--enforce-eager",
    "--dtype",
    "float32",
    "--max-model-len",
    "4096",
    "--limit-mm-per-prompt",
    '{"image": 4}',
    "--enable-auto-tool-choice",
    "--tool-call-parser",
    "hermes",
    "--tool-strict-level",
    "parameter",
]
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
START_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _png_data_url(size: tuple[int, int], colour: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def engine_url(tiny_vlm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log_path = tmp_path_factory.mktemp("engine") / "vllm.log"
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(tiny_vlm),
        "--served-model-name",
        "tiny-vlm",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *ENGINE_ARGS,
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **ENGINE_ENV},
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"vLLM exited with {proc.returncode} while starting:\n{tail}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM not ready after {START_TIMEOUT_S} s; log in {log_path}")
            time.sleep(0.5)  # polling interval between readiness probes
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_image_chat_answers(engine_url: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{engine_url}/v1", api_key="unused")
    question = {"type": "text", "text": "What is in this image?"}
    text_only = client.chat.completions.create(
        model="tiny-vlm", messages=[{"role": "user", "content": [question]}], max_tokens=8
    )
    image = {"type": "image_url", "image_url": {"url": _png_data_url((200, 100), (255, 0, 0))}}
    reply = client.chat.completions.create(
        model="tiny-vlm", messages=[{"role": "user", "content": [image, question]}], max_tokens=8
    )
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and text_only.usage is not None
    # A 200x100 image is 2 tiles plus the global view: 12 image tokens and their markers.
    assert reply.usage.prompt_tokens - text_only.usage.prompt_tokens >= 12


def test_broken_and_excess_images_are_client_errors(engine_url: str) -> None:
    def chat(parts: list[dict[str, object]]) -> httpx.Response:
        body = {"model": "tiny-vlm", "max_tokens": 4, "messages": [{"role": "user", "content": parts}]}
        return httpx.post(f"{engine_url}/v1/chat/completions", json=body, timeout=60)

    broken = chat([{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!"}}])
    assert broken.status_code == 400
    assert broken.json()["error"]["type"] == "BadRequestError"

    not_an_image = base64.b64encode(b"plain text, not a PNG").decode()
    wrong_bytes = chat([{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{not_an_image}"}}])
    assert wrong_bytes.status_code == 400
    assert "Failed to load image" in wrong_bytes.json()["error"]["message"]

    image = {"type": "image_url", "image_url": {"url": _png_data_url((64, 64), (0, 0, 255))}}
    too_many = chat([image] * 5)
    assert too_many.status_code == 400
    assert "At most 4 image(s)" in too_many.json()["error"]["message"]
