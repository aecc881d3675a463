"""The OpenAI routes through the front, with the official ``openai`` client and NIM's request shapes."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.images import png_data_url
from tests.server_process import ServerProcess, engine_metric

MODEL = "tiny-vlm"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def client(nim_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=nim_server.url + "/v1", api_key="not-used", max_retries=0, timeout=120)


def test_chat_with_max_tokens(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8, temperature=0
    )
    assert reply.object == "chat.completion"
    assert reply.model == MODEL
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage is not None
    assert 0 < reply.usage.completion_tokens <= 8


def test_streaming_chunks_arrive_while_the_engine_generates(client: openai.OpenAI, nim_server: ServerProcess) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a story."}],
        max_tokens=2000,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        # All 2000 tokens: several seconds of generation, far longer than this process may be kept
        # off the CPU (with 400, the engine once finished before the first chunk was read).
        extra_body={"ignore_eos": True},
    )
    chunks = []
    texts = 0
    running_while_reading: list[float] = []
    for chunk in stream:
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            texts += 1
            # A few samples early in the reply: the engine's gauge can lag its first steps.
            if texts in {1, 10, 50, 100, 200}:
                running_while_reading.append(engine_metric(nim_server.url, "vllm:num_requests_running"))
    # Relayed as generated, not buffered to the end: words reached the client while the engine
    # was still working on the request. (Arrival times would say the same only when this
    # process is not kept off the CPU while the chunks pile up in its socket.)
    assert max(running_while_reading) >= 1, running_while_reading
    assert len(chunks) > 100
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2000
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)


def test_tools_auto_returns_a_valid_response(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        max_tokens=32,
    )
    message = reply.choices[0].message
    assert message.role == "assistant"
    assert message.content is not None or message.tool_calls


UNIT_TOOL = {
    "type": "function",
    "function": {
        "name": "set_unit",
        "description": "Choose the temperature unit",
        "parameters": {
            "type": "object",
            "properties": {"unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["unit"],
        },
    },
}


@pytest.mark.parametrize(
    "tool_choice",
    ["required", {"type": "function", "function": {"name": "set_unit"}}],
    ids=["required", "named"],
)
def test_forced_tool_choice_returns_a_tool_call(client: openai.OpenAI, tool_choice: object) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Use Celsius please."}],
        tools=[UNIT_TOOL],
        tool_choice=tool_choice,  # type: ignore[arg-type]
        # A random-weight model wanders inside free text and chains calls, and greedy decoding
        # can loop on the whitespace the grammar allows; an enum argument, a single call and
        # seeded sampling make the grammar-constrained answer finish.
        parallel_tool_calls=False,
        max_tokens=128,
        seed=7,
    )
    calls = reply.choices[0].message.tool_calls
    assert calls, reply
    assert calls[0].type == "function"
    assert calls[0].function.name == "set_unit"
    assert json.loads(calls[0].function.arguments)["unit"] in {"celsius", "fahrenheit"}


def test_image_chat(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": png_data_url()}},
                ],
            }
        ],
        max_tokens=8,
    )
    assert reply.choices[0].message.content is not None
    assert reply.usage is not None and reply.usage.prompt_tokens > 20  # the image's tokens are in the prompt


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_completions(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5)
    assert reply.choices[0].text is not None


def test_tokenize_and_detokenize_round_trip(nim_server: ServerProcess) -> None:
    tokens = httpx.post(
        nim_server.url + "/tokenize", json={"model": MODEL, "prompt": "hello world"}, timeout=30
    ).json()
    assert tokens["count"] == len(tokens["tokens"]) > 0
    assert tokens["max_model_len"] > 0
    text = httpx.post(
        nim_server.url + "/detokenize", json={"model": MODEL, "tokens": tokens["tokens"]}, timeout=30
    ).json()
    assert text["prompt"].strip() == "hello world"


def test_render_returns_the_prompt_text(nim_server: ServerProcess) -> None:
    response = httpx.post(
        nim_server.url + "/v1/chat/completions/render",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Say something nice"}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "Say something nice" in body["prompt"]
    assert body["token_ids"]


def test_client_disconnect_mid_stream_aborts_upstream(nim_server: ServerProcess) -> None:
    max_tokens = 1500
    generated_before = engine_metric(nim_server.url, "vllm:generation_tokens_total")
    payload = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Go on forever."}],
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
    }
    with httpx.stream("POST", nim_server.url + "/v1/chat/completions", json=payload, timeout=60) as response:
        for _ in zip(range(3), response.iter_lines(), strict=False):
            pass
    # Settled: nothing running and the token count standing still (the gauges can lag a step).
    deadline = time.monotonic() + 60
    previous = -1.0
    while True:
        generated = engine_metric(nim_server.url, "vllm:generation_tokens_total") - generated_before
        running = engine_metric(nim_server.url, "vllm:num_requests_running")
        if running == 0 and generated == previous:
            break
        assert time.monotonic() < deadline, "the request is still running in the engine"
        previous = generated
        time.sleep(0.5)  # polling the engine's counters until they settle or the deadline passes
    # Had the front kept reading, the engine would have generated all max_tokens tokens.
    assert generated < max_tokens / 2
