"""Every client command against the real server (tiny VLM on the vLLM CPU engine), table and JSON."""

from __future__ import annotations

import json

import pytest
import yaml

from nimctl import API_VERSION, __version__
from nimctl.errors import EXIT_OK, EXIT_REJECTED
from tests.cli.conftest import error_line, nimctl
from tests.server_process import ServerProcess

pytestmark = pytest.mark.engine

MODEL = "tiny-vlm"


def ok(*args: str, input: str | None = None) -> str:
    result = nimctl(*args, input=input)
    assert result.exit_code == EXIT_OK, f"exit {result.exit_code}: {result.stderr}"
    return result.stdout


def as_json(*args: str, input: str | None = None) -> object:
    return json.loads(ok(*args, "--format", "json", input=input))


def test_health(nim_server: ServerProcess) -> None:
    out = ok("health", "--url", nim_server.url)
    assert "live:    yes" in out and "ready:   yes" in out
    report = as_json("health", "--url", nim_server.url)
    assert report == {"url": nim_server.url, "live": True, "ready": True, "message": report["message"]}


def test_health_live_and_wait(nim_server: ServerProcess) -> None:
    assert as_json("health", "--live", "--url", nim_server.url)["live"] is True  # type: ignore[index]
    assert as_json("health", "--wait", "--timeout", "30", "--url", nim_server.url)["ready"] is True  # type: ignore[index]


def test_url_from_environment_and_v1_suffix(nim_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    result = nimctl("version", env={"NIMCTL_URL": nim_server.url + "/v1/"})
    assert result.exit_code == EXIT_OK, result.stderr
    assert __version__ in result.stdout


def test_models(nim_server: ServerProcess) -> None:
    assert MODEL in ok("models", "--url", nim_server.url)
    cards = as_json("models", "--url", nim_server.url)
    assert isinstance(cards, list) and [card["id"] for card in cards] == [MODEL]
    assert isinstance(cards[0]["max_model_len"], int)


def test_tokenize_and_detokenize_round_trip(nim_server: ServerProcess) -> None:
    body = as_json("tokenize", "hello world", "--url", nim_server.url)
    assert isinstance(body, dict)
    assert set(body) == {"count", "max_model_len", "tokens", "token_strs"}
    assert body["count"] == len(body["tokens"]) > 0
    assert len(body["token_strs"]) == body["count"]
    table = ok("tokenize", "hello world", "--url", nim_server.url)
    assert f"count: {body['count']}" in table
    assert "ids: " + " ".join(map(str, body["tokens"])) in table
    with_strs = ok("tokenize", "hello world", "--strs", "--url", nim_server.url)
    assert "TOKEN" in with_strs and repr(body["token_strs"][-1]) in with_strs
    ids = [str(token) for token in body["tokens"]]
    text = as_json("detokenize", *ids, "--url", nim_server.url)
    assert "hello world" in text["prompt"]  # type: ignore[index]
    assert "hello world" in ok("detokenize", *ids, "--url", nim_server.url)


def test_tokenize_from_stdin(nim_server: ServerProcess) -> None:
    piped = as_json("tokenize", "--url", nim_server.url, input="hello world\n")
    given = as_json("tokenize", "hello world", "--url", nim_server.url)
    assert piped == given


def test_render_shows_the_chat_template_output(nim_server: ServerProcess) -> None:
    prompt = ok("render", "what colour is the sky?", "--system", "be brief", "--url", nim_server.url)
    assert "what colour is the sky?" in prompt and "be brief" in prompt
    body = as_json("render", "hi there", "--url", nim_server.url)
    assert isinstance(body, dict) and "hi there" in body["prompt"]


def test_render_messages_file(nim_server: ServerProcess, tmp_path: object) -> None:
    messages = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "second"},
                {"role": "user", "content": "third"}]
    out = ok("render", "--messages", "-", "--url", nim_server.url, input=json.dumps(messages))
    assert out.index("first") < out.index("second") < out.index("third")


def test_metadata(nim_server: ServerProcess) -> None:
    body = as_json("metadata", "--url", nim_server.url)
    assert isinstance(body, dict)
    assert {"version", "modelInfo", "assetInfo", "licenseInfo", "profile_id", "profile_name",
            "repository_override"} <= set(body)
    assert body["modelInfo"][0]["shortName"] == MODEL
    table = ok("metadata", "--url", nim_server.url)
    assert MODEL in table and body["profile_id"] in table


def test_version(nim_server: ServerProcess) -> None:
    assert as_json("version", "--url", nim_server.url) == {"release": __version__, "api": API_VERSION}
    out = ok("version", "--url", nim_server.url)
    assert f"release: {__version__}" in out and f"api:     {API_VERSION}" in out


def test_license(nim_server: ServerProcess) -> None:
    meta = as_json("license", "--url", nim_server.url)
    assert isinstance(meta, dict)
    assert set(meta) >= {"name", "path", "sha", "size", "url", "type"} and "content" not in meta
    text = ok("license", "--url", nim_server.url)
    assert len(text.rstrip("\n").encode()) <= meta["size"] <= len(text.encode())


def test_manifest(nim_server: ServerProcess) -> None:
    body = as_json("manifest", "--url", nim_server.url)
    assert isinstance(body, dict) and set(body) >= {"manifest_file", "repository_override", "profiles"}
    profile_id = body["profiles"][0]["id"]
    assert profile_id in ok("manifest", "--url", nim_server.url)
    raw = ok("manifest", "--raw", "--url", nim_server.url)
    assert yaml.safe_load(raw) == yaml.safe_load(body["manifest_file"])


def test_metrics(nim_server: ServerProcess) -> None:
    ok("chat", "hello", "--max-tokens", "4", "--url", nim_server.url)  # so that latency histograms have data
    summary = as_json("metrics", "--url", nim_server.url)
    assert isinstance(summary, dict)
    assert set(summary) >= {"requests_running", "requests_waiting", "kv_cache_usage", "prompt_tokens_total",
                            "generation_tokens_total", "requests_finished", "time_to_first_token",
                            "e2e_latency", "ready"}
    assert summary["ready"] is True
    assert summary["generation_tokens_total"] >= 1
    assert summary["time_to_first_token"]["count"] >= 1
    assert set(summary["e2e_latency"]) == {"count", "mean_s", "p50_s", "p90_s", "p99_s"}
    table = ok("metrics", "--url", nim_server.url)
    for label in ("requests running", "KV cache used", "time to first token", "end-to-end latency"):
        assert label in table
    raw = ok("metrics", "--raw", "--url", nim_server.url)
    assert "vllm:num_requests_running" in raw


def test_unknown_model_is_rejected(nim_server: ServerProcess) -> None:
    result = nimctl("chat", "hi", "--model", "no-such-model", "--url", nim_server.url)
    assert result.exit_code == EXIT_REJECTED
    assert "no-such-model" in error_line(result)
    assert "nimctl models" in result.stderr


def test_server_4xx_carries_its_message(nim_server: ServerProcess) -> None:
    # More tokens than the context holds: vLLM refuses with 400 and says why.
    result = nimctl("chat", "hi", "--max-tokens", "100000000", "--no-stream", "--url", nim_server.url)
    assert result.exit_code == EXIT_REJECTED
    assert error_line(result).startswith("Error: ") and len(error_line(result)) > len("Error: ")
    assert "Traceback" not in result.stderr


def test_wrong_url_path_is_explained(nim_server: ServerProcess) -> None:
    result = nimctl("health", "--url", nim_server.url + "/not-here")
    assert result.exit_code == EXIT_REJECTED
    assert "nimctl/NIM server" in result.stderr
