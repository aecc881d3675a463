"""`nimctl profiles select` and `list-model-profiles` choose what `nim-serve --dry-run` chooses.

Both read nim-serve's variables (NIM_MODEL_PATH and its default model, NIM_MODEL_PROFILE,
NIM_PEFT_SOURCE, NIM_MAX_MODEL_LEN, NIM_PASSTHROUGH_ARGS, NIMCTL_PROFILE_PREFERENCE); the GPUs are described by
NIMCTL_ASSUME_GPUS, which both read too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nimctl.cli.main import app
from nimctl.errors import ConfigError
from nimctl.profiles import find_manifest
from nimctl.profiles.loader import REPO_PROFILES_DIR
from nimctl.server.selection_inputs import selection_inputs

BASE = {
    "NO_COLOR": "1",
    "TERM": "dumb",
    "NIMCTL_PROFILES_DIR": str(REPO_PROFILES_DIR),
    "NIMCTL_ASSUME_GPUS": "",
    "NIMCTL_ENGINE_PORT": "",
    "VLLM_API_KEY": "",
    "NIM_MODEL_PATH": "",
    "NIM_MODEL_PROFILE": "",
    "NIM_PEFT_SOURCE": "",
    "NIM_MAX_MODEL_LEN": "",
    "NIM_PASSTHROUGH_ARGS": "",
    "NIMCTL_PROFILE_PREFERENCE": "",
}
QWEN7B = "hf://Qwen/Qwen2.5-VL-7B-Instruct"
NO_PROFILE = None  # nothing runnable: nim-serve and select both exit 8

# name -> (environment, expected profile name or NO_PROFILE)
CASES: dict[str, tuple[dict[str, str], str | None]] = {
    "lora-not-asked": ({"NIM_MODEL_PATH": QWEN7B, "NIMCTL_ASSUME_GPUS": "A100-80GB"}, "vllm-bf16-tp1-pp1"),
    "nim-peft-source": (
        {"NIM_MODEL_PATH": QWEN7B, "NIMCTL_ASSUME_GPUS": "A100-80GB", "NIM_PEFT_SOURCE": "/adapters"},
        "vllm-bf16-tp1-pp1-lora",
    ),
    "no-model-gpu": ({"NIMCTL_ASSUME_GPUS": "L4"}, "vllm-fp32-tp1-pp1-cpu"),  # builtin://tiny-vlm
    "no-model-cpu": ({"NIMCTL_ASSUME_GPUS": "none"}, "vllm-fp32-tp1-pp1-cpu"),
    # bf16 does not fit an A10G at the model's 128k context, at 32k it does
    "full-context": ({"NIM_MODEL_PATH": QWEN7B, "NIMCTL_ASSUME_GPUS": "A10G"}, NO_PROFILE),
    "passthrough-max-model-len": (
        {
            "NIM_MODEL_PATH": QWEN7B,
            "NIMCTL_ASSUME_GPUS": "A10G",
            "NIM_PASSTHROUGH_ARGS": "--max-num-seqs 4 --max-model-len 32768",
        },
        "vllm-bf16-tp1-pp1",
    ),
    "passthrough-max-model-len=": (
        {
            "NIM_MODEL_PATH": QWEN7B,
            "NIMCTL_ASSUME_GPUS": "A10G",
            "NIM_PASSTHROUGH_ARGS": "--max-model-len=32k",
        },
        "vllm-bf16-tp1-pp1",
    ),
    # the engine gets --max-model-len from NIM_MAX_MODEL_LEN first, then the passthrough one: it wins
    "passthrough-beats-nim-max-model-len": (
        {
            "NIM_MODEL_PATH": QWEN7B,
            "NIMCTL_ASSUME_GPUS": "A10G",
            "NIM_MAX_MODEL_LEN": "32768",
            "NIM_PASSTHROUGH_ARGS": "--max-model-len 128000",
        },
        NO_PROFILE,
    ),
    "throughput-by-default": (
        {"NIM_MODEL_PATH": "hf://Qwen/Qwen2.5-VL-72B-Instruct", "NIMCTL_ASSUME_GPUS": "H100-80GB:8"},
        "vllm-fp8-tp2-pp1-h100",
    ),
    "latency-preferred": (
        {
            "NIM_MODEL_PATH": "hf://Qwen/Qwen2.5-VL-72B-Instruct",
            "NIMCTL_ASSUME_GPUS": "H100-80GB:8",
            "NIMCTL_PROFILE_PREFERENCE": "Latency",
        },
        "vllm-fp8-tp4-pp1-h100",
    ),
    "pinned-with-lora": (
        {
            "NIM_MODEL_PATH": QWEN7B,
            "NIMCTL_ASSUME_GPUS": "A100-80GB",
            "NIM_PEFT_SOURCE": "/adapters",
            "NIM_MODEL_PROFILE": "vllm-bf16-tp1-pp1",
        },
        NO_PROFILE,  # a pinned profile without LoRA contradicts NIM_PEFT_SOURCE: both exit 8
    ),
    "pinned-with-lora-profile": (
        {
            "NIM_MODEL_PATH": QWEN7B,
            "NIMCTL_ASSUME_GPUS": "A100-80GB",
            "NIM_PEFT_SOURCE": "/adapters",
            "NIM_MODEL_PROFILE": "vllm-bf16-tp1-pp1-lora",
        },
        "vllm-bf16-tp1-pp1-lora",
    ),
    "context-past-the-model": (
        {"NIM_MODEL_PATH": "builtin://tiny-llm", "NIM_MAX_MODEL_LEN": "8192", "NIMCTL_ASSUME_GPUS": "none"},
        NO_PROFILE,  # tiny-llm's context is 4096 tokens: no profile can run 8192
    ),
}
# How each side words an exit 8: nothing runnable, or a pinned profile that cannot run or contradicts
# the request.
NO_PROFILE_ERRORS = ("Error: no runnable ", "Error: pinned profile ")


def _id(model: str, name: str) -> str:
    profile = find_manifest(model, profiles_dir=REPO_PROFILES_DIR).profile_by_id_or_name(name)
    assert profile is not None
    return profile.id


def serve_choice(env: dict[str, str], cache: Path) -> str | None:
    """The profile id `nim-serve --dry-run` (the same command as `nimctl serve`) resolves."""
    if env.get("NIM_PEFT_SOURCE"):  # nim-serve checks that the folder exists; the host side does not
        (cache / "adapters").mkdir(exist_ok=True)
        env = {**env, "NIM_PEFT_SOURCE": str(cache / "adapters")}
    result = CliRunner().invoke(
        app, ["serve", "--dry-run"], env={**BASE, "NIM_CACHE_PATH": str(cache), **env}
    )
    if result.exit_code == 8:
        assert result.stderr.startswith(NO_PROFILE_ERRORS)
        return None
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["profile_id"]


def select_choice(env: dict[str, str], *args: str) -> str | None:
    result = CliRunner().invoke(app, ["profiles", "select", *args], env={**BASE, **env})
    if result.exit_code == 8:
        assert (result.stdout, result.stderr.startswith(NO_PROFILE_ERRORS)) == ("", True)
        return None
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    return result.stdout.strip()


@pytest.mark.parametrize(("env", "expected"), CASES.values(), ids=CASES.keys())
def test_select_agrees_with_nim_serve(tmp_path: Path, env: dict[str, str], expected: str | None) -> None:
    model = env.get("NIM_MODEL_PATH") or "builtin://tiny-vlm"
    wanted = None if expected is None else _id(model, expected)
    assert serve_choice(env, tmp_path) == wanted
    assert select_choice(env) == wanted


@pytest.mark.parametrize(("env", "expected"), CASES.values(), ids=CASES.keys())
def test_list_model_profiles_agrees_with_nim_serve(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    expected: str | None,
) -> None:
    from nimctl.cli.profiles import list_model_profiles_main

    for key, value in {**BASE, **env}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["list-model-profiles"])
    with pytest.raises(SystemExit) as done:
        list_model_profiles_main()
    assert done.value.code == 0
    selected = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("SELECTED: "))
    wanted = serve_choice(env, tmp_path)
    assert selected.startswith("SELECTED: <None>" if wanted is None else f"SELECTED: {wanted} ")


def test_what_is_given_on_the_command_line_wins() -> None:
    env = {"NIM_MODEL_PATH": QWEN7B, "NIMCTL_ASSUME_GPUS": "A10G", "NIM_PEFT_SOURCE": "/adapters"}
    # As after nim-serve: --max-model-len beats NIM_PASSTHROUGH_ARGS; --no-lora beats NIM_PEFT_SOURCE.
    env["NIM_PASSTHROUGH_ARGS"] = "--max-model-len 128000"
    assert select_choice(env, "--max-model-len", "32768", "--no-lora") == _id(QWEN7B, "vllm-bf16-tp1-pp1")
    assert select_choice(env, "--max-model-len", "32768") == _id(QWEN7B, "vllm-bf16-tp1-pp1-lora")
    assert select_choice(env, "tiny-llm", "--max-model-len", "4096") == _id(
        "tiny-llm", "vllm-fp32-tp1-pp1-cpu-lora"
    )
    assert select_choice(env, "tiny-llm", "--max-model-len", "4096", "--no-lora") == _id(
        "tiny-llm", "vllm-fp32-tp1-pp1-cpu"
    )
    assert select_choice(env, "tiny-llm", "--no-lora") is None  # 128000 tokens: past tiny-llm's 4096


def test_a_given_preference_wins_over_the_variable_even_a_broken_one() -> None:
    env = {"NIM_MODEL_PATH": "hf://Qwen/Qwen2.5-VL-72B-Instruct", "NIMCTL_ASSUME_GPUS": "H100-80GB:8"}
    latency = _id("qwen2.5-vl-72b-instruct", "vllm-fp8-tp4-pp1-h100")
    assert select_choice({**env, "NIMCTL_PROFILE_PREFERENCE": "bogus"}, "--prefer", "Latency") == latency
    result = CliRunner().invoke(app, ["profiles", "select"], env={**BASE, **env, "NIMCTL_PROFILE_PREFERENCE": "bogus"})
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: invalid NIMCTL_PROFILE_PREFERENCE='bogus'")


def test_selection_inputs_reads_only_the_selection_variables() -> None:
    inputs = selection_inputs({"NIM_SERVER_PORT": "eighty", "NIM_PASSTHROUGH_ARGS": "--max-model-len=4k"})
    assert (inputs.model, inputs.profile, inputs.lora, inputs.max_model_len) == (
        "builtin://tiny-vlm",
        None,
        False,
        4000,
    )
    with pytest.raises(ConfigError, match="NIM_MAX_MODEL_LEN"):
        selection_inputs({"NIM_MAX_MODEL_LEN": "zero"})
    with pytest.raises(ConfigError, match="NIMCTL_PROFILE_PREFERENCE"):
        selection_inputs({"NIMCTL_PROFILE_PREFERENCE": "fastest"})
