"""Configuration from NIM's variables, model sources and the engine command line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nimctl.errors import ConfigError, ModelUnavailableError
from nimctl.server.config import ServerConfig
from nimctl.server.plan import build_plan
from nimctl.store.source import parse_model_source


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"NIM_SERVER_PORT": "eighty"}, "NIM_SERVER_PORT"),
        ({"NIM_SERVER_PORT": "70000"}, "NIM_SERVER_PORT"),
        ({"NIM_LOG_LEVEL": "LOUD"}, "NIM_LOG_LEVEL"),
        ({"NIM_JSONL_LOGGING": "maybe"}, "NIM_JSONL_LOGGING"),
        ({"NIM_MAX_MODEL_LEN": "-1"}, "NIM_MAX_MODEL_LEN"),
        ({"NIM_TENSOR_PARALLEL_SIZE": "0"}, "NIM_TENSOR_PARALLEL_SIZE"),
        ({"NIM_PASSTHROUGH_ARGS": "--foo 'unterminated"}, "NIM_PASSTHROUGH_ARGS"),
        ({"NIMCTL_PROFILE_PREFERENCE": "fastest"}, "NIMCTL_PROFILE_PREFERENCE"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ServerConfig.from_env(env)
    assert caught.value.message.startswith(f"invalid {variable}=")
    assert "\n" not in caught.value.message


def test_values_and_defaults() -> None:
    config = ServerConfig.from_env(
        {
            "NIM_SERVER_PORT": "9000",
            "NIM_LOG_LEVEL": "debug",
            "NIM_JSONL_LOGGING": "true",
            "NIM_MODEL_PATH": "",
        }
    )
    assert config.server_port == 9000
    assert config.log_level == "DEBUG"
    assert config.jsonl_logging is True
    assert config.model_path == "builtin://tiny-vlm"
    assert config.profile_preference == "throughput"
    assert ServerConfig.from_env({"NIMCTL_PROFILE_PREFERENCE": " Latency"}).profile_preference == "latency"


@pytest.mark.parametrize(
    ("uri", "kind", "name", "revision"),
    [
        ("builtin://tiny-llm", "builtin", "tiny-llm", None),
        ("hf://org/model", "hf", "org/model", None),
        ("hf://org/model@v1.0", "hf", "org/model", "v1.0"),
        ("/models/x", "local", "/models/x", None),
    ],
)
def test_model_sources(uri: str, kind: str, name: str, revision: str | None) -> None:
    source = parse_model_source(uri)
    assert (source.kind, source.name, source.revision) == (kind, name, revision)


@pytest.mark.parametrize("uri", ["hf://justname", "s3://bucket/x", "builtin://", "hf://a/b/c"])
def test_bad_model_sources(uri: str) -> None:
    with pytest.raises(ConfigError, match="NIM_MODEL_PATH"):
        parse_model_source(uri)


def test_local_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config.json"):
        parse_model_source(str(tmp_path)).fetch(tmp_path)


def test_unknown_builtin_model_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_model_source("builtin://typo")
    message = caught.value.message
    assert message.startswith("invalid NIM_MODEL_PATH='builtin://typo'")
    assert "builtin://tiny-llm" in message and "builtin://tiny-vlm" in message


@pytest.mark.parametrize("make", ["missing", "no-config"])
def test_unusable_local_folder_is_refused_at_plan_time(tmp_path: Path, make: str) -> None:
    folder = tmp_path / "model"
    if make == "no-config":
        folder.mkdir()
    config = ServerConfig.from_env({"NIM_MODEL_PATH": str(folder), "NIM_CACHE_PATH": str(tmp_path)})
    with pytest.raises(ConfigError) as caught:
        build_plan(config, environ={})
    assert caught.value.message.startswith(f"invalid NIM_MODEL_PATH={str(folder)!r}")
    assert ("no such folder" if make == "missing" else "config.json") in caught.value.message


def test_hf_source_reads_the_offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import: the variable alone is too late
    commit = "a" * 40
    repo = tmp_path / "huggingface" / "models--org--model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    folder = parse_model_source("hf://org/model").fetch(tmp_path)
    assert (folder / "config.json").is_file()
    with pytest.raises(ModelUnavailableError, match="not in the cache"):
        parse_model_source("hf://org/missing").fetch(tmp_path)


def test_engine_arguments_in_precedence_order(tmp_path: Path) -> None:
    config = ServerConfig.from_env(
        {
            "NIM_MODEL_PATH": "builtin://tiny-llm",
            "NIM_MAX_MODEL_LEN": "1024",
            "NIM_PASSTHROUGH_ARGS": "--max-model-len 512 --max-num-seqs 8",
            "NIM_CACHE_PATH": str(tmp_path),
        }
    )
    plan = build_plan(config, ["--max-model-len", "256"])
    args = plan.engine_args
    lengths = [args[i + 1] for i, arg in enumerate(args) if arg == "--max-model-len"]
    assert lengths[-3:] == ["1024", "512", "256"]  # the last one wins in vLLM's argparse
    assert "--enable-scale-out" in args
    assert args[args.index("--tool-call-parser") + 1] == "hermes"
    command = plan.command(tmp_path / "model", 1234)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "1234"
    assert plan.profile_id and len(plan.profile_id) == 64
    assert plan.engine_port is None  # chosen at launch, after the model fetch


def test_model_without_manifest_runs_on_engine_defaults(tmp_path: Path) -> None:
    shutil.copy(__file__, tmp_path / "config.json")
    plan = build_plan(ServerConfig.from_env({"NIM_MODEL_PATH": str(tmp_path)}))
    assert plan.manifest is None and plan.profile is None
    assert plan.served_name == tmp_path.name
