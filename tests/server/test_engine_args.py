"""User engine arguments: the front's own flags are refused; the context length they ask for is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from nimctl.engine_flags import parse_context_length, requested_context_length
from nimctl.errors import ConfigError, ProfileError
from nimctl.server.config import ServerConfig
from nimctl.server.plan import build_plan

QWEN_7B = "hf://Qwen/Qwen2.5-VL-7B-Instruct"  # a shipped manifest whose profiles need GPUs


def _config(tmp_path: Path, **env: str) -> ServerConfig:
    return ServerConfig.from_env({"NIM_MODEL_PATH": "builtin://tiny-llm", "NIM_CACHE_PATH": str(tmp_path), **env})


@pytest.mark.parametrize(
    ("args", "flag", "instead"),
    [
        (["--port", "9000"], "--port", "NIM_SERVER_PORT"),
        (["--port=9000"], "--port", "NIM_SERVER_PORT"),
        (["--host", "0.0.0.0"], "--host", None),
        (["--host=0.0.0.0"], "--host", None),
        (["--served-model-name", "x"], "--served-model-name", "NIM_SERVED_MODEL_NAME"),
        (["--served_model_name=x"], "--served-model-name", "NIM_SERVED_MODEL_NAME"),
        (["--model", "/elsewhere"], "--model", "NIM_MODEL_PATH"),
        (["--model=/elsewhere"], "--model", "NIM_MODEL_PATH"),
        (["--enforce-eager", "--api-key", "secret"], "--api-key", None),
        (["--api-key=secret"], "--api-key", None),
        (["--uds", "/tmp/engine.sock"], "--uds", None),
        (["--ssl-certfile=/c.pem"], "--ssl-certfile", None),
        (["--hos", "0.0.0.0"], "--hos (vLLM reads it as --host)", None),  # argparse expands abbreviations
        (["--config", "engine.yaml"], "--config", None),
        (["--no-enable-scale-out"], "--no-enable-scale-out", None),
    ],
)
@pytest.mark.parametrize("where", ["passthrough", "cli"])
def test_the_fronts_own_engine_flags_are_refused(
    tmp_path: Path, args: list[str], flag: str, instead: str | None, where: str
) -> None:
    if where == "passthrough":
        config, cli_args, origin = _config(tmp_path, NIM_PASSTHROUGH_ARGS=" ".join(args)), [], "NIM_PASSTHROUGH_ARGS"
    else:
        config, cli_args, origin = _config(tmp_path), args, "arguments after nim-serve"
    with pytest.raises(ConfigError) as caught:
        build_plan(config, cli_args, environ={})
    message = caught.value.message
    assert message.startswith(f"{origin} may not set ")
    assert flag in message
    assert "\n" not in message
    if instead:
        assert instead in message


def test_other_engine_flags_pass(tmp_path: Path) -> None:
    config = _config(tmp_path, NIM_PASSTHROUGH_ARGS="--max-num-seqs 4 --enforce-eager --portable-x 1")
    plan = build_plan(config, ["--max_num_batched_tokens=512", "--hf-token", "t"], environ={})
    assert plan.engine_args[-2:] == ["--hf-token", "t"]


def test_engine_api_key_in_the_environment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="VLLM_API_KEY"):
        build_plan(_config(tmp_path), environ={"VLLM_API_KEY": "k"})


@pytest.mark.parametrize(
    ("value", "length"),
    [("2048", 2048), ("4k", 4000), ("4K", 4096), ("1.5k", 1500), ("auto", None), ("-1", None), ("0", None)],
)
def test_context_length_values(value: str, length: int | None) -> None:
    assert parse_context_length(value) == length


def test_the_last_context_length_wins() -> None:
    assert requested_context_length(["--max-model-len", "1024", "--max_model_len=2k"], 4096) == 2000
    assert requested_context_length(["--enforce-eager"], 4096) == 4096
    assert requested_context_length([], None) is None


@pytest.mark.parametrize(
    "env",
    [
        {"NIM_MAX_MODEL_LEN": "2048"},
        {"NIM_PASSTHROUGH_ARGS": "--max-model-len 2048"},
        {"NIM_MAX_MODEL_LEN": "131072", "NIM_PASSTHROUGH_ARGS": "--max-model-len=2k"},
    ],
)
def test_profile_is_judged_at_the_users_context_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    # On one 24 GB A10G the 7B model's bf16 profile fits only with a short context.
    monkeypatch.setenv("NIMCTL_ASSUME_GPUS", "A10G:1")
    with pytest.raises(ProfileError):
        build_plan(_config(tmp_path, NIM_MODEL_PATH=QWEN_7B), environ={})
    plan = build_plan(_config(tmp_path, NIM_MODEL_PATH=QWEN_7B, **env), environ={})
    assert plan.profile is not None
    assert plan.profile.device == "cuda"
