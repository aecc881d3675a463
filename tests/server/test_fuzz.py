"""The fuzz gate: generated requests against the live server, none of which may get a 5xx.

Two fuzzers, each bounded in examples and in time:

* schemathesis, driven by the server's own ``/openapi.json``: every route, with its checks for
  server errors and for answers the document does not describe (status, content type, schema);
* a structure-aware generator of chat bodies (hypothesis): nested content parts, images in every
  form, structured-output fields of every JSON type, integers beyond 64 bits, unicode, deep nesting.

The gate: no answer >= 500, ``/v1/health/ready`` still 200 after, and the front's RSS back within
20 % of where it started. Each test reports its counts and figures on the terminal, ``-s`` or not.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from tests.server_process import ServerProcess

pytestmark = [pytest.mark.fuzz, pytest.mark.engine]

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "unsupported_method",
        "allow_header_conformance",
    ]
)
SCHEMATHESIS_BUDGET_S = 90  # schemathesis' own --max-time; the process is killed at twice that
CHAT_EXAMPLES = int(os.environ.get("NIMCTL_FUZZ_EXAMPLES", "1000"))
CHAT_BUDGET_S = 90  # examples left when this runs out are not sent
RSS_GROWTH_LIMIT = 0.20


# --- Chat bodies ---------------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago): image fetches there fail fast."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG header declaring ``width`` x ``height``, with a few bytes of pixels: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _encoded(image_format: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (12, 9), (10, 200, 90)).save(buffer, format=image_format)
    return buffer.getvalue()


def _data_urls() -> st.SearchStrategy[str]:
    images = [_encoded(kind) for kind in ("PNG", "JPEG", "GIF", "WEBP", "BMP")]
    valid = st.sampled_from(images).map(lambda raw: "data:image/png;base64," + base64.b64encode(raw).decode())
    broken = st.sampled_from(
        [
            "data:image/png;base64,!!!not-base64!!!",
            "data:image/png;base64," + base64.b64encode(images[0][:40]).decode(),  # cut short
            "data:image/png;base64," + base64.b64encode(_png_declaring(30000, 30000)).decode(),
            "data:image/png;base64," + base64.b64encode(_png_declaring(9000, 9000)).decode(),
            "data:image/png;base64," + base64.b64encode(_png_declaring(0, 0)).decode(),
            "data:text/plain;base64,aGVsbG8=",
            "data:image/png,rawbytes",
            "data:,",
            "data:image/jpeg;base64,",
        ]
    )
    random_bytes = st.binary(max_size=64).map(lambda raw: "data:image/png;base64," + base64.b64encode(raw).decode())
    return valid | broken | random_bytes


def mostly(plausible: st.SearchStrategy[Any], wild: st.SearchStrategy[Any], odds: int = 6) -> st.SearchStrategy[Any]:
    """``plausible`` ``odds`` times out of ``odds + 1``, else ``wild``: most of a body stays readable,
    so that the wild part of it reaches the code that reads it."""
    return st.integers(0, odds).flatmap(lambda pick: wild if pick == 0 else plausible)


_INT64_EDGES = [2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, 10**40]
# Unicode of every plane, and now and then lone surrogates (which are not UTF-8).
texts = mostly(st.text(max_size=30), st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3), odds=10)
numbers = (
    st.integers(-5, 50)
    | st.sampled_from(_INT64_EDGES)
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=10,
)


def _media(refused_port: int) -> st.SearchStrategy[Any]:
    urls = _data_urls() | st.sampled_from(
        [
            f"http://127.0.0.1:{refused_port}/cat.png",
            "file:///etc/passwd",
            "ftp://127.0.0.1/cat.png",
            "https://",
            "http://[::1",
            "",
            "cat.png",
        ]
    )
    detail = st.sampled_from(["auto", "low", "high", "huge"]) | json_values
    as_object = st.fixed_dictionaries({"url": mostly(urls, json_values)}, optional={"detail": detail, "uuid": texts})
    return mostly(as_object, urls | json_values)


def _parts(refused_port: int) -> st.SearchStrategy[Any]:
    media = _media(refused_port)
    uuids = texts | json_values
    text_part = st.fixed_dictionaries({"type": st.just("text"), "text": texts | json_values})
    image_part = st.fixed_dictionaries({"type": st.just("image_url"), "image_url": media}, optional={"uuid": uuids})
    anything = st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["text", "image_url", "video_url", "audio_url", "input_audio", "image_embeds",
                                     "image_pil", "input_image", "refusal", "thinking"]) | texts | json_values,
            "text": texts,
            "image_url": media,
            "video_url": media,
            "audio_url": media,
            "input_audio": json_values,
            "uuid": uuids,
        },
    )
    return mostly(text_part | image_part, anything | json_values, odds=10)


def _messages(refused_port: int) -> st.SearchStrategy[Any]:
    content = mostly(texts | st.lists(_parts(refused_port), max_size=3), json_values, odds=10)
    role = mostly(st.sampled_from(["user", "system", "assistant", "developer", "tool"]), texts, odds=10)
    message = st.fixed_dictionaries(
        {"role": role, "content": content},
        optional={"name": texts, "tool_call_id": texts, "tool_calls": json_values},
    )
    return mostly(st.lists(message, min_size=1, max_size=3), json_values, odds=20)


def _structured(refused_port: int) -> dict[str, st.SearchStrategy[Any]]:
    schema_like = json_values | st.just({"type": "object", "properties": {"a": {"type": "integer"}}})
    structured_outputs = st.fixed_dictionaries(
        {},
        optional={
            "json": schema_like,
            "regex": texts | json_values,
            "choice": st.lists(texts, max_size=3) | json_values,
            "grammar": texts | json_values,
            "json_object": st.booleans() | json_values,
            "structural_tag": texts | json_values,
            "disable_any_whitespace": json_values,
            "whitespace_pattern": texts | json_values,
        },
    )
    response_format = st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "json_object", "json_schema", "structural_tag"]) | texts | json_values},
        optional={"json_schema": st.fixed_dictionaries({"name": texts, "schema": schema_like}) | json_values},
    )
    return {
        "structured_outputs": mostly(structured_outputs, json_values),
        "response_format": mostly(response_format, json_values),
    }


def _sampling() -> dict[str, st.SearchStrategy[Any]]:
    fields = [
        "temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty",
        "repetition_penalty", "min_tokens", "logprobs", "top_logprobs", "prompt_logprobs",
        "truncate_prompt_tokens", "priority", "length_penalty",
    ]  # fmt: skip
    plausible = st.integers(0, 5) | st.floats(0, 2)
    values: dict[str, st.SearchStrategy[Any]] = {name: mostly(plausible, numbers | json_values) for name in fields}
    values |= {
        "stop": texts | st.lists(texts, max_size=3) | json_values,
        "stop_token_ids": st.lists(numbers, max_size=3) | json_values,
        "logit_bias": st.dictionaries(st.integers(-5, 600).map(str) | texts, numbers, max_size=3) | json_values,
        "stream": st.booleans() | json_values,
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans() | json_values}) | json_values,
        "ignore_eos": st.booleans() | json_values,
        "add_generation_prompt": st.booleans() | json_values,
        "continue_final_message": st.booleans() | json_values,
        "chat_template_kwargs": json_values,
        "tool_choice": st.sampled_from(["none", "auto", "required"]) | json_values,
        "model": st.just("tiny-vlm") | texts | json_values,
    }
    return values


@st.composite
def chat_bodies(draw: st.DrawFn, refused_port: int) -> bytes:
    """A chat request body, as bytes: mostly well-formed, with one or more fields fuzzed."""
    body: dict[str, Any] = {
        "messages": draw(_messages(refused_port)),
        # Always small when valid: generation is the expensive part and proves nothing here.
        "max_tokens": draw(mostly(st.sampled_from([1, 2, 4]), st.sampled_from([0, -1, "4", 1.5, *_INT64_EDGES]), odds=10)),
    }
    optional = {**_sampling(), **_structured(refused_port), "n": st.sampled_from([1, 2, 10**6, -1, *_INT64_EDGES])}
    for name in draw(st.lists(st.sampled_from(sorted(optional)), max_size=4, unique=True)):
        body[name] = draw(optional[name])
    depth = draw(mostly(st.just(0), st.sampled_from([50, 900, 5000]), odds=20))
    if depth:
        body["deep"] = "\0DEEP\0"  # replaced below: too deep for json.dumps to write
    text = json.dumps(body, allow_nan=True, ensure_ascii=draw(st.booleans()))
    text = text.replace('"\\u0000DEEP\\u0000"', "[" * depth + "]" * depth)
    return text.encode("utf-8", errors="surrogatepass")


# --- The gate ------------------------------------------------------------------------------------


def front_process(server: ServerProcess) -> psutil.Process:
    if server.process is not None:
        return psutil.Process(server.process.pid)
    # NIMCTL_TEST_SERVER_PORT: a server started elsewhere, found by the port it listens on. The engine
    # may hold the front's listening socket too (and be the one psutil names): the front is its parent.
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == "LISTEN" and connection.laddr and connection.laddr.port == server.port:
            listener = psutil.Process(connection.pid)
            for process in [listener, *listener.parents()]:
                if "vllm" not in " ".join(process.cmdline()):
                    return process
    pytest.skip(f"no process found listening on port {server.port}")


def report(capsys: pytest.CaptureFixture[str], title: str, lines: list[str]) -> None:
    with capsys.disabled():
        print(f"\n{title}")
        for line in lines:
            print(f"  {line}")


@dataclass
class Aftermath:
    """How the server came out of a fuzz run."""

    ready_status: int
    rss_before: int
    rss_after: int

    @classmethod
    def of(cls, server: ServerProcess, front: psutil.Process, rss_before: int) -> Aftermath:
        ready = httpx.get(server.url + "/v1/health/ready", timeout=30).status_code
        return cls(ready, rss_before, front.memory_info().rss)

    def line(self) -> str:
        mib = 2**20
        growth = self.rss_after / self.rss_before - 1
        return (
            f"ready {self.ready_status} after; front RSS {self.rss_before / mib:.0f} MiB -> "
            f"{self.rss_after / mib:.0f} MiB ({growth:+.0%}, limit +{RSS_GROWTH_LIMIT:.0%})"
        )

    def check(self) -> None:
        assert self.ready_status == 200
        assert self.rss_after <= self.rss_before * (1 + RSS_GROWTH_LIMIT), self.line()


# CI replays the same cases every run, so a red gate means the code changed, not the dice;
# NIMCTL_FUZZ_SEED=random explores new ground, NIMCTL_FUZZ_SEED=N replays run N.
DEFAULT_FUZZ_SEED = 20261203


def fuzz_seed() -> int:
    wanted = os.environ.get("NIMCTL_FUZZ_SEED", "")
    if wanted == "random":
        return random.randrange(2**31)
    return int(wanted) if wanted else DEFAULT_FUZZ_SEED


def test_schemathesis_finds_no_failures(
    nim_server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    front = front_process(nim_server)
    rss_before = front.memory_info().rss
    seed = str(fuzz_seed())
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{nim_server.url}/openapi.json",
        f"--checks={CHECKS}",
        "--phases=examples,coverage,fuzzing",
        "--max-examples=100",
        f"--max-time={SCHEMATHESIS_BUDGET_S}",
        "--workers=2",
        f"--seed={seed}",
        "--request-timeout=60",
        "--generation-database=none",
        "--no-color",
        "--report=json",
        f"--report-json-path={tmp_path / 'report.json'}",
    ]
    started = time.monotonic()
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=2 * SCHEMATHESIS_BUDGET_S + 60
    )
    elapsed = time.monotonic() - started
    result = json.loads((tmp_path / "report.json").read_text())
    after = Aftermath.of(nim_server, front, rss_before)
    cases = result["test_cases"]
    report(
        capsys,
        "schemathesis fuzz gate",
        [
            f"seed {seed} (NIMCTL_FUZZ_SEED), {elapsed:.0f} s, {result['operations']['tested']} operations",
            f"{cases['generated']} cases, {cases['with_failures']} with failures, {cases['errored']} errored",
            after.line(),
        ],
    )
    after.check()
    assert run.returncode == 0 and not result["failures"] and not result["errors"], run.stdout[-6000:]
    assert cases["generated"] > 0


@dataclass
class ChatFuzzTally:
    statuses: Counter[int] = field(default_factory=Counter)
    sent: int = 0
    unsent: int = 0  # generated after the time budget ran out
    server_errors: list[str] = field(default_factory=list)  # what was sent, and what came back
    # Streams that vLLM ended with its retryable error after they began as a 200 (its multimodal
    # caches drifted): not the client's input, and past the point where the front could resend.
    resendable_stream_errors: int = 0

    def record(self, body: bytes, status: int, answer: str) -> None:
        self.sent += 1
        self.statuses[status] += 1
        if status >= 500:
            self.server_errors.append(f"{status} {answer[:300]!r} for {body[:600]!r}")


def _stream_errors(text: str) -> list[dict[str, Any]]:
    """Error objects (code >= 500) inside an event stream that started as a 200."""
    found = []
    for line in text.splitlines():
        if line.startswith("data: {") and '"error"' in line:
            error = json.loads(line.removeprefix("data: ")).get("error")
            if isinstance(error, dict) and isinstance(error.get("code"), int) and error["code"] >= 500:
                found.append(error)
    return found


def test_structured_chat_bodies_get_no_5xx(nim_server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    front = front_process(nim_server)
    refused_port = closed_port()
    paths = ["/v1/chat/completions", "/v1/chat/completions", "/tokenize", "/v1/chat/completions/render"]
    tally = ChatFuzzTally()
    run_seed = fuzz_seed()
    with httpx.Client(base_url=nim_server.url, timeout=60) as client:
        # Warm the front up (first image, first stream) so the RSS baseline is not its cold start.
        client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
        rss_before = front.memory_info().rss
        deadline = time.monotonic() + CHAT_BUDGET_S

        @hypothesis_seed(run_seed)
        @settings(
            max_examples=CHAT_EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.generate],  # failures are collected and shown, not shrunk against the server
            suppress_health_check=list(HealthCheck),
        )
        @given(body=chat_bodies(refused_port), path_index=st.integers(0, len(paths) - 1))
        def send(body: bytes, path_index: int) -> None:
            if time.monotonic() > deadline:
                tally.unsent += 1
                return
            response = client.post(paths[path_index], content=body, headers={"content-type": "application/json"})
            tally.record(body, response.status_code, response.text)
            if response.status_code == 200 and response.headers.get("content-type", "").startswith("text/event-stream"):
                for error in _stream_errors(response.text):
                    if error.get("message") == "Internal server error":  # vLLM's retryable one
                        tally.resendable_stream_errors += 1
                    else:
                        tally.server_errors.append(f"stream error event {error} for {body[:600]!r}")

        started = time.monotonic()
        send()
        elapsed = time.monotonic() - started
    after = Aftermath.of(nim_server, front, rss_before)
    statuses = ", ".join(f"{status}: {count}" for status, count in sorted(tally.statuses.items()))
    report(
        capsys,
        "chat body fuzz gate",
        [
            f"seed {run_seed} (NIMCTL_FUZZ_SEED), {elapsed:.0f} s",
            f"{tally.sent} bodies sent ({tally.unsent} generated after the {CHAT_BUDGET_S} s budget, not sent)",
            f"statuses {statuses}; streams ended by vLLM's retryable error: {tally.resendable_stream_errors}",
            after.line(),
        ],
    )
    after.check()
    assert not tally.server_errors, "\n".join(tally.server_errors[:10])
    assert tally.sent >= min(50, CHAT_EXAMPLES)

