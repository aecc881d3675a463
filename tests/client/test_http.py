"""Unit tests of the client's own logic, with httpx.MockTransport standing in for the server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from nimctl.client.http import NimClient, Timeouts, normalize_base_url
from nimctl.errors import (
    EXIT_NOT_READY,
    EXIT_REJECTED,
    EXIT_SERVER_ERROR,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    ClientError,
    RequestRejectedError,
    ServerFailedError,
    ServerNotReadyError,
    ServerUnreachableError,
    UnreadableAnswerError,
    UsageError,
    WaitTimeoutError,
)

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler, **kwargs: object) -> NimClient:
    return NimClient("http://nim.test:8000", transport=httpx.MockTransport(handler), **kwargs)  # type: ignore[arg-type]


def openai_error(status: int, message: str, error_type: str = "BadRequestError") -> httpx.Response:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": status}}
    return httpx.Response(status, json=body)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://h:8000", "http://h:8000"),
        ("http://h:8000/", "http://h:8000"),
        ("http://h:8000/v1", "http://h:8000"),
        ("http://h:8000/v1/", "http://h:8000"),
        ("https://h/prefix", "https://h/prefix"),
    ],
)
def test_base_url_is_normalized(given: str, expected: str) -> None:
    assert normalize_base_url(given) == expected


@pytest.mark.parametrize("bad", ["localhost:8000", "ftp://h", "http://", "not a url"])
def test_bad_base_url_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError, match="invalid server URL"):
        normalize_base_url(bad)


def test_bearer_token_and_user_agent_are_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"release": "1.2.3", "api": "1.0.0"})

    with make_client(handler, api_key="sekrit") as client:
        version = client.version()
    assert (version.release, version.api) == ("1.2.3", "1.0.0")
    assert seen[0].headers["Authorization"] == "Bearer sekrit"
    assert seen[0].headers["User-Agent"].startswith("nimctl/")
    assert seen[0].url.path == "/v1/version"


def test_no_authorization_header_without_a_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"object": "health.response", "message": "ok", "status": "live"})

    make_client(handler).live()
    assert "Authorization" not in seen[0].headers


def test_results_keep_unknown_fields() -> None:
    body = {"version": "0.1", "modelInfo": [{"shortName": "m", "maxModelLen": 4096}], "newField": [1, 2]}
    meta = make_client(lambda _: httpx.Response(200, json=body)).metadata()
    assert meta.model_info[0].short_name == "m"
    assert meta.model_info[0].max_model_len == 4096
    assert meta.raw()["newField"] == [1, 2]
    assert meta.raw()["modelInfo"][0]["shortName"] == "m"


def test_health_reports_not_ready_as_a_state() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/health/live":
            return httpx.Response(200, json={"object": "health.response", "message": "up", "status": "live"})
        return openai_error(503, "model is loading", "ServiceUnavailableError")

    report = make_client(handler).health()
    assert (report.live, report.ready) == (True, False)
    assert report.message == "model is loading"


def test_ready_503_raises_not_ready_with_the_server_message() -> None:
    client = make_client(lambda _: openai_error(503, "model is loading", "ServiceUnavailableError"))
    with pytest.raises(ServerNotReadyError, match="model is loading") as info:
        client.ready()
    assert info.value.exit_code == EXIT_NOT_READY
    assert info.value.hint and "health --wait" in info.value.hint
    assert info.value.message == "the server is not ready: model is loading"
    assert info.value.server_message == "model is loading"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"error": {"message": "bad temperature", "type": "BadRequestError", "param": None, "code": 400}},
            "bad temperature",
        ),
        ({"error": "Unauthorized"}, "Unauthorized"),
        ({"detail": "Not Found"}, "Not Found"),
        ({"object": "error", "message": "old vLLM shape", "type": "x"}, "old vLLM shape"),
        ({"detail": [{"msg": "field required"}, {"msg": "wrong type"}]}, "field required; wrong type"),
    ],
)
def test_4xx_carries_the_server_message_whatever_the_shape(body: object, message: str) -> None:
    client = make_client(lambda _: httpx.Response(400, json=body))
    with pytest.raises(RequestRejectedError) as info:
        client.tokenize("hi")
    assert info.value.message == message
    assert info.value.status == 400
    assert info.value.exit_code == EXIT_REJECTED


def test_4xx_without_a_json_body_still_says_something() -> None:
    client = make_client(lambda _: httpx.Response(404, text=""))
    with pytest.raises(RequestRejectedError, match="404") as info:
        client.version()
    assert info.value.status == 404


def test_401_hints_at_the_api_key() -> None:
    client = make_client(lambda _: httpx.Response(401, json={"error": "Unauthorized"}))
    with pytest.raises(RequestRejectedError) as info:
        client.models()
    assert info.value.hint and "--api-key" in info.value.hint


def test_unknown_model_hints_at_models_command() -> None:
    client = make_client(lambda _: openai_error(404, "The model `nope` does not exist.", "NotFoundError"))
    with pytest.raises(RequestRejectedError, match="does not exist") as info:
        client.chat([{"role": "user", "content": "hi"}], model="nope")
    assert info.value.hint and "nimctl models" in info.value.hint


def test_license_404_has_its_own_hint() -> None:
    client = make_client(lambda _: openai_error(404, "no license file", "NotFoundError"))
    with pytest.raises(RequestRejectedError) as info:
        client.license()
    assert info.value.hint and "license" in info.value.hint


def test_5xx_is_server_failed() -> None:
    client = make_client(lambda _: openai_error(500, "engine crashed", "InternalServerError"))
    with pytest.raises(ServerFailedError, match="engine crashed") as info:
        client.metadata()
    assert info.value.exit_code == EXIT_SERVER_ERROR
    assert info.value.status == 500


def test_inference_503_is_not_ready() -> None:
    client = make_client(lambda _: openai_error(503, "engine is starting", "ServiceUnavailableError"))
    with pytest.raises(ServerNotReadyError):
        client.chat([{"role": "user", "content": "hi"}], model="m")


def test_connect_error_is_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(ServerUnreachableError, match="Connection refused") as info:
        make_client(handler).live()
    assert info.value.exit_code == EXIT_UNREACHABLE
    assert info.value.hint and "--url" in info.value.hint


def test_read_timeout_is_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(WaitTimeoutError) as info:
        make_client(handler).version()
    assert info.value.exit_code == EXIT_TIMEOUT


def test_timeouts_are_per_call_kind() -> None:
    seen: dict[str, dict[str, float]] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.path] = request.extensions["timeout"]
        if request.url.path == "/v1/chat/completions":
            return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": "x"}}]})
        return httpx.Response(200, json={"release": "1", "api": "1"})

    client = make_client(handler, timeouts=Timeouts(connect=1.5, management=7.0, inference=99.0))
    client.version()
    client.chat([{"role": "user", "content": "hi"}], model="m")
    assert seen["/v1/version"]["read"] == 7.0
    assert seen["/v1/version"]["connect"] == 1.5
    assert seen["/v1/chat/completions"]["read"] == 99.0


def test_non_json_answer_is_a_clear_error() -> None:
    client = make_client(lambda _: httpx.Response(200, text="<html>hello</html>"))
    with pytest.raises(ClientError, match="not JSON"):
        client.version()


def test_default_model() -> None:
    one = make_client(lambda _: httpx.Response(200, json={"object": "list", "data": [{"id": "tiny"}]}))
    assert one.default_model() == "tiny"
    two = make_client(
        lambda _: httpx.Response(200, json={"object": "list", "data": [{"id": "a"}, {"id": "b"}]})
    )
    with pytest.raises(UsageError, match="a, b"):
        two.default_model()
    none = make_client(lambda _: httpx.Response(200, json={"object": "list", "data": []}))
    with pytest.raises(ServerNotReadyError):
        none.default_model()


def test_request_bodies() -> None:
    seen: list[tuple[str, dict[str, object]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.url.path, body))
        answers = {
            "/tokenize": {"count": 2, "max_model_len": 100, "tokens": [5, 6], "token_strs": ["a", "b"]},
            "/detokenize": {"prompt": "ab"},
            "/v1/chat/completions/render": {"prompt": "<user>hi", "token_ids": [1]},
            "/v1/chat/completions": {"choices": [{"message": {"role": "assistant", "content": "yo"}}]},
        }
        return httpx.Response(200, json=answers[request.url.path])

    client = make_client(handler)
    assert client.tokenize("ab", model="m").token_strs == ["a", "b"]
    assert client.detokenize([5, 6]).prompt == "ab"
    assert client.render([{"role": "user", "content": "hi"}]).prompt == "<user>hi"
    assert client.chat([{"role": "user", "content": "hi"}], model="m", max_tokens=5, seed=None).text == "yo"
    assert seen[0] == ("/tokenize", {"prompt": "ab", "return_token_strs": True, "model": "m"})
    assert seen[1] == ("/detokenize", {"tokens": [5, 6]})
    assert seen[2][1] == {"messages": [{"role": "user", "content": "hi"}]}
    chat = seen[3][1]
    assert chat["max_tokens"] == 5 and "seed" not in chat and chat["stream"] is False


def test_wait_until_ready_polls_through_unreachable_and_loading() -> None:
    answers = iter(["refused", "loading", "loading", "ready"])
    states: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/health/live":
            state = next(answers)
            handler.state = state  # type: ignore[attr-defined]
            if state == "refused":
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(200, json={"status": "live"})
        if handler.state == "ready":  # type: ignore[attr-defined]
            return httpx.Response(200, json={"status": "ready", "message": "ok"})
        return openai_error(503, "loading")

    report = make_client(handler).wait_until_ready(30, interval=0, on_poll=lambda s, _: states.append(s))
    assert report.ready
    assert states[0] == "unreachable" and states[1].startswith("live, not ready")
    assert len(states) == 3


def test_wait_until_ready_times_out_naming_the_last_state() -> None:
    client = make_client(
        lambda r: (
            openai_error(503, "loading")
            if "ready" in r.url.path
            else httpx.Response(200, json={"status": "live"})
        )
    )
    with pytest.raises(WaitTimeoutError, match="not ready after 0 s; last state: live, not ready"):
        client.wait_until_ready(0, interval=0)


def test_answer_of_the_wrong_shape_is_one_clear_line() -> None:
    client = make_client(lambda _: httpx.Response(200, json={"count": "many", "tokens": "x"}))
    with pytest.raises(ClientError, match=r"answer to /tokenize has an unexpected shape \(count:"):
        client.tokenize("hi")


def test_unreadable_answers_are_server_errors() -> None:
    for answer in (httpx.Response(200, text="<html>hello</html>"), httpx.Response(200, json={"count": "many"})):
        with pytest.raises(UnreadableAnswerError) as info:
            make_client(lambda _, answer=answer: answer).tokenize("hi")
        assert info.value.exit_code == EXIT_SERVER_ERROR


def test_connect_timeout_is_unreachable_not_a_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with pytest.raises(ServerUnreachableError, match="no answer to the connection in time") as info:
        make_client(handler).live()
    assert info.value.exit_code == EXIT_UNREACHABLE
    assert info.value.hint and "firewall" in info.value.hint


def test_wait_until_ready_waits_through_a_503_from_the_live_probe() -> None:
    # A proxy in front of a NIM that is still starting answers the live probe with 503.
    answers = iter([openai_error(503, "upstream starting"), httpx.Response(200, json={"status": "live"})])
    states: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/health/live":
            return next(answers)
        return httpx.Response(200, json={"status": "ready", "message": "ok"})

    report = make_client(handler).wait_until_ready(30, interval=0, on_poll=lambda s, _: states.append(s))
    assert report.ready
    assert states == ["not live (upstream starting)"]


def test_plain_http_loads_no_ca_bundle_and_https_honours_ssl_cert_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import ssl

    from nimctl.client.http import _tls_context

    plain = _tls_context("http://127.0.0.1:8000")
    assert plain.verify_mode == ssl.CERT_REQUIRED and plain.cert_store_stats()["x509_ca"] == 0
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(FileNotFoundError):
        _tls_context("https://nim.example")  # the variable is read, not ignored
