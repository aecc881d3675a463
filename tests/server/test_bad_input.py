"""Bad input gets a 4xx in OpenAI's error shape from the front, never a 5xx."""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import zlib
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nimctl import contract
from nimctl.media import image_size
from nimctl.server.config import ServerConfig
from nimctl.server.plan import build_plan, engine_environment
from nimctl.server.request_checks import BadRequestError, check_body
from tests.server_process import ServerProcess

MODEL = "tiny-vlm"


def post(server: ServerProcess, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(server.url + path, timeout=60, **kwargs)  # type: ignore[arg-type]


def assert_openai_error(response: httpx.Response, status: int | None = None) -> dict[str, object]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    error = response.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    assert error["message"]
    return error


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize"])
def test_malformed_json(nim_server: ServerProcess, path: str) -> None:
    response = post(nim_server, path, content=b'{"model": "tiny-vlm", "messages": [', headers={
        "content-type": "application/json"
    })
    assert_openai_error(response, 400)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        # Found by the fuzz gate: a UTF-8-encoded lone surrogate, and its JSON escape, in `stop`.
        # vLLM answered both with an empty 500.
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "stop": "\xed\xa0\x80"}', "not valid UTF-8"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "stop": "\\ud800"}', "lone UTF-16 surrogate"),
    ],
)
def test_text_that_is_not_unicode_is_a_400(nim_server: ServerProcess, body: bytes, fragment: str) -> None:
    response = post(nim_server, "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert fragment in assert_openai_error(response, 400)["message"]


def test_body_not_an_object(nim_server: ServerProcess) -> None:
    assert_openai_error(post(nim_server, "/v1/chat/completions", json=["not", "an", "object"]), 400)


def test_wrong_types(nim_server: ServerProcess) -> None:
    response = post(
        nim_server,
        "/v1/chat/completions",
        json={"model": MODEL, "messages": "hello", "max_tokens": "many"},
    )
    assert_openai_error(response, 400)


def test_unknown_model(nim_server: ServerProcess) -> None:
    response = post(
        nim_server,
        "/v1/chat/completions",
        json={"model": "gpt-17", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    error = assert_openai_error(response, 404)
    assert "gpt-17" in str(error["message"])


def test_prompt_longer_than_context(nim_server: ServerProcess) -> None:
    limit = httpx.get(nim_server.url + "/v1/metadata", timeout=10).json()["modelInfo"][0]["maxModelLen"]
    response = post(
        nim_server,
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "word " * (limit * 2)}], "max_tokens": 4},
    )
    assert_openai_error(response, 400)


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,!!!not-base64!!!",
        "data:image/png;base64,aGVsbG8gd29ybGQ=",  # valid base64, not an image
        "data:text/plain;base64,aGVsbG8=",
        "data:image/png,rawbytes",
        "data:,hello",
        "file:///etc/passwd",
        "ftp://example.invalid/cat.png",
    ],
)
def test_broken_data_image(nim_server: ServerProcess, url: str) -> None:
    response = post(
        nim_server,
        "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
            "max_tokens": 4,
        },
    )
    assert_openai_error(response, 400)


def test_truncated_png_is_rejected_by_the_engine_as_4xx(nim_server: ServerProcess) -> None:
    from tests.images import png_bytes

    truncated = base64.b64encode(png_bytes()[:40]).decode()
    response = post(
        nim_server,
        "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{truncated}"}}],
                }
            ],
            "max_tokens": 4,
        },
    )
    assert_openai_error(response)


def test_unknown_path(nim_server: ServerProcess) -> None:
    assert_openai_error(httpx.get(nim_server.url + "/v2/everything", timeout=10), 404)


def test_wrong_method(nim_server: ServerProcess) -> None:
    assert_openai_error(httpx.get(nim_server.url + "/v1/chat/completions", timeout=10), 405)


@pytest.mark.parametrize("path", ["/v1/health/live/", "/v1/models/", "/v1/chat/completions/"])
def test_a_trailing_slash_is_a_404_not_a_redirect(nim_server: ServerProcess, path: str) -> None:
    response = httpx.request("POST" if "chat" in path else "GET", nim_server.url + path, timeout=10)
    assert_openai_error(response, 404)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/chat/completions/render", "/tokenize"])
def test_json_nested_too_deeply(nim_server: ServerProcess, path: str) -> None:
    response = post(nim_server, path, content=b"[" * 100_000, headers={"content-type": "application/json"})
    assert_openai_error(response, 400)


# --- Item: shapes the engine answered with a 500 ------------------------------------------------


def chat_body(content: object, **fields: object) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 2, **fields}


CHAT_PATHS = ["/v1/chat/completions", "/tokenize", "/v1/chat/completions/render"]


@pytest.mark.parametrize("path", CHAT_PATHS)
@pytest.mark.parametrize(
    ("part", "fragment"),
    [
        # The engine took the string for a URL and tried to read a local file (500).
        # The media fetcher sees every URL first (docs/security.md): refused before any shape check.
        ({"type": "image_url", "image_url": "file:///etc/passwd", "uuid": "x"}, "file:// URLs are refused"),
        ({"type": "image_url", "image_url": "https://127.0.0.1:9/a.png", "uuid": "x"}, "loopback address"),
        ({"image_url": "file:///etc/passwd", "uuid": "x"}, "has no 'type'"),
        ({"image_url": {"url": "file:///etc/passwd"}, "uuid": "x"}, "has no 'type'"),
        ({"image_url": "https://127.0.0.1:9/a.png"}, "has no 'type'"),
        ({"type": "image_url", "image_url": {"url": "file:///etc/passwd"}, "uuid": "x"}, "file:// URLs are refused"),
        ({"type": "video_url", "video_url": {"url": "file:///etc/passwd"}}, "file:// URLs are refused"),
    ],
)
def test_content_parts_the_engine_answered_with_500(
    nim_server: ServerProcess, path: str, part: dict[str, object], fragment: str
) -> None:
    error = assert_openai_error(post(nim_server, path, json=chat_body([part])), 400)
    assert fragment in str(error["message"])
    assert str(error["param"]).startswith("messages[0].content[0]")


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("value", [7, "json", ["a"], True])
def test_structured_outputs_must_be_an_object(nim_server: ServerProcess, path: str, value: object) -> None:
    body = chat_body("hi") if "chat" in path else {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    error = assert_openai_error(post(nim_server, path, json={**body, "structured_outputs": value}), 400)
    assert "structured_outputs must be an object" in str(error["message"])


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("top_k", 2**63),
        ("top_k", 2**64),
        ("top_k", -(2**63) - 1),
        ("seed", 10**30),
        ("stop_token_ids", [1, 2**64]),
        ("logit_bias", {"1": 2**64}),
    ],
)
def test_integers_beyond_64_bits(nim_server: ServerProcess, path: str, field: str, value: object) -> None:
    body = chat_body("hi") if "chat" in path else {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    error = assert_openai_error(post(nim_server, path, json={**body, field: value}), 400)
    assert error["param"] == field
    assert "integers must lie between" in str(error["message"])


def test_the_largest_64_bit_integer_passes_the_front(nim_server: ServerProcess) -> None:
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 2, "seed": 2**63 - 1}
    assert post(nim_server, "/v1/completions", json=body).status_code == 200


# --- Item: tools without a function name (the engine answered 500, the front 502) -------------------

NAMED_CHOICE = {"type": "function", "function": {"name": "get_weather"}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("tools", "tool_choice", "param"),
    [
        ([{"type": "function"}], NAMED_CHOICE, "tools[0]"),
        ([{"type": "function", "function": "get_weather"}], NAMED_CHOICE, "tools[0]"),
        ([{"type": "function", "function": {"name": 7}}], "auto", "tools[0]"),
        ([{"type": "retrieval", "function": {"name": "x"}}], "auto", "tools[0]"),
        (["get_weather"], "auto", "tools[0]"),
        ([WEATHER], {"type": "function"}, "tool_choice"),
        ([WEATHER], {"type": "function", "function": {}}, "tool_choice"),
        ([WEATHER], {"type": "function", "function": {"name": "other"}}, "tool_choice"),
    ],
)
def test_tools_and_tool_choice_without_a_function_name(
    nim_server: ServerProcess, tools: object, tool_choice: object, param: str
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_choice": tool_choice}
    error = assert_openai_error(post(nim_server, "/v1/chat/completions", json=body), 400)
    assert error["param"] == param


def test_a_named_tool_choice_passes_the_front(nim_server: ServerProcess) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [WEATHER],
        "tool_choice": NAMED_CHOICE,
        "max_tokens": 4,
    }
    assert post(nim_server, "/v1/chat/completions", json=body).status_code == 200


# --- Item: images with more pixels than the cap -------------------------------------------------

HUGE = (30000, 30000)  # 900 megapixels: the header of a file of a few hundred bytes


def encoded(image_format: str, size: tuple[int, int], **options: object) -> bytes:
    from PIL import Image

    mode = "RGBA" if options.pop("alpha", False) else "RGB"
    buffer = io.BytesIO()
    Image.new(mode, size, (90, 30, 200)).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def declaring(image_format: str, size: tuple[int, int]) -> bytes:
    """A small image whose header is rewritten to declare ``size``: what a decompression bomb looks like."""
    width, height = size
    data = bytearray(encoded(image_format, (3, 2)))
    if image_format == "PNG":
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR's CRC
    elif image_format == "JPEG":
        start_of_frame = data.index(b"\xff\xc0")
        data[start_of_frame + 5 : start_of_frame + 9] = struct.pack(">HH", height, width)
    elif image_format == "GIF":
        data[6:10] = struct.pack("<HH", width, height)
    elif image_format == "BMP":
        data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "GIF", "BMP"])
def test_image_size_reads_a_huge_header_as_pillow_does(image_format: str) -> None:
    from PIL import Image

    data = declaring(image_format, HUGE)
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # read the header, decode nothing
    try:
        assert Image.open(io.BytesIO(data)).size == HUGE
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    assert image_size(data) == HUGE


@settings(max_examples=40, deadline=None, database=None)
@given(
    variant=st.sampled_from(
        [("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}), ("GIF", {}), ("BMP", {}),
         ("WEBP", {}), ("WEBP", {"lossless": True}), ("WEBP", {"alpha": True, "exif": b"Exif\x00\x00"})]
    ),
    width=st.integers(1, 400),
    height=st.integers(1, 400),
)
def test_image_size_agrees_with_pillow(variant: tuple[str, dict[str, object]], width: int, height: int) -> None:
    image_format, options = variant
    assert image_size(encoded(image_format, (width, height), **dict(options))) == (width, height)


@settings(max_examples=60, deadline=None, database=None)
@given(image_format=st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "WEBP"]), cut=st.integers(0, 120))
def test_image_size_of_a_cut_header_is_none_or_right(image_format: str, cut: int) -> None:
    data = encoded(image_format, (33, 21))
    assert image_size(data[:cut]) in (None, (33, 21))


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "GIF", "BMP"])
def test_an_image_over_the_pixel_cap_is_refused_before_the_engine(nim_server: ServerProcess, image_format: str) -> None:
    url = f"data:image/{image_format.lower()};base64," + base64.b64encode(declaring(image_format, HUGE)).decode()
    for path in CHAT_PATHS:
        started = time.monotonic()
        error = assert_openai_error(post(nim_server, path, json=chat_body([{"type": "image_url", "image_url": {"url": url}}])), 400)
        assert "30000x30000" in str(error["message"]) and "NIMCTL_MAX_IMAGE_PIXELS" in str(error["message"])
        assert time.monotonic() - started < 5


# --- Item: images by URL -------------------------------------------------------------------------
# The front fetches them itself, under its checks: tests/server/test_media_fetch.py.


def test_the_pixel_cap_is_the_configured_one() -> None:
    url = "data:image/png;base64," + base64.b64encode(encoded("PNG", (100, 100))).decode()
    body = json.dumps(chat_body([{"type": "image_url", "image_url": {"url": url}}])).encode()
    assert check_body(body, max_image_pixels=10_000).payload
    with pytest.raises(BadRequestError, match="100x100"):
        check_body(body, max_image_pixels=9_999)


def test_the_engine_fetches_media_once_briefly_without_redirects(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = ServerConfig.from_env({contract.MAX_IMAGE_PIXELS: "1234"}, model_path="builtin://tiny-llm", cache_path=tmp_path)
    monkeypatch.delenv("VLLM_IMAGE_FETCH_TIMEOUT", raising=False)
    monkeypatch.setenv("VLLM_MEDIA_FETCH_MAX_RETRIES", "3")  # the operator's own setting wins
    env = engine_environment(build_plan(config))
    assert env["VLLM_IMAGE_FETCH_TIMEOUT"] == "5"
    assert env["VLLM_MEDIA_FETCH_MAX_RETRIES"] == "3"
    assert env["VLLM_MEDIA_URL_ALLOW_REDIRECTS"] == "0"
    assert env["VLLM_MAX_IMAGE_PIXELS"] == "1234"
