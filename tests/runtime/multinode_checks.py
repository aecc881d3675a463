"""What the two real multi-node tests (local processes, Docker containers) both check through the
leader: chat with the official ``openai`` client, and readiness after a worker is lost."""

from __future__ import annotations

import time

import httpx

from tests.images import image_question

MODEL = "tiny-vlm"
MAX_TOKENS = 6


def client(url: str, key: str):  # type: ignore[no-untyped-def]
    from openai import OpenAI

    return OpenAI(base_url=url + "/v1", api_key=key, timeout=300, max_retries=0)


def check_chat(url: str, key: str) -> None:
    """Non-streaming, streaming and an image, each exactly MAX_TOKENS long (ignore_eos): the
    random-weight model's words mean nothing, so the answer's structure is what is checked."""
    openai = client(url, key)
    text = [{"role": "user", "content": "Count to ten."}]
    reply = openai.chat.completions.create(
        model=MODEL,
        messages=text,
        max_tokens=MAX_TOKENS,
        extra_body={"ignore_eos": True},  # type: ignore[arg-type]
    )
    assert reply.usage is not None and reply.usage.completion_tokens == MAX_TOKENS
    assert reply.choices[0].finish_reason == "length" and reply.choices[0].message.content

    stream = openai.chat.completions.create(
        model=MODEL, messages=text, max_tokens=MAX_TOKENS, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )  # fmt: skip
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert pieces, "no content streamed"
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage and usage[-1].completion_tokens == MAX_TOKENS
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "length"
    ]

    pictured = openai.chat.completions.create(
        model=MODEL,
        messages=image_question(),
        max_tokens=MAX_TOKENS,
        extra_body={"ignore_eos": True},  # type: ignore[arg-type]
    )
    assert pictured.usage is not None and pictured.usage.completion_tokens == MAX_TOKENS
    # The image's tokens are in the prompt: far more than the question's few words.
    assert pictured.usage.prompt_tokens > reply.usage.prompt_tokens + 20


def seconds_until_not_ready(url: str, within: float) -> float:
    """How long the leader's /v1/health/ready took to stop answering 200 (fails after ``within``)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        try:
            if httpx.get(url + "/v1/health/ready", timeout=2).status_code != 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            return time.monotonic() - start  # gone already counts: it is not ready
        time.sleep(0.25)
    raise AssertionError(f"{url} still ready {within:.0f}s after its worker was killed")


def ready_body(url: str) -> tuple[int, str]:
    try:
        response = httpx.get(url + "/v1/health/ready", timeout=2)
    except httpx.HTTPError as exc:
        return 0, str(exc)
    return response.status_code, response.text
