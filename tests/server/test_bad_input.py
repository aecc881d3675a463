"""Bad input gets a 4xx in OpenAI's error shape from the front, never a 5xx."""

from __future__ import annotations

import httpx
import pytest

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
    import base64

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
