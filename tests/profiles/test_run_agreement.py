"""`nimctl run --dry-run` pins the profile `nim-serve --dry-run` selects in the container it describes.

Each case is a `nimctl run` command line (`-e NIM_*`, `--profile`, `--lora`, `--max-model-len`,
`--gpus`, `--prefer`, engine arguments after `--`) on a simulated GPU set. The test reads the
environment and the arguments the dry run would give the server (the `-e` values and the
command after the image, or the `env ... nim-serve ...` line of a host process), then runs
`nim-serve --dry-run` with exactly those, on the GPUs the instance would see, twice:

- without the `NIM_MODEL_PROFILE` nimctl pins: the server's own automatic choice must be the
  profile `run` pinned (the agreement);
- with it: the server must accept the pin and select the same profile.

Where `run` refuses (exit 8), the server must refuse too.
"""

from __future__ import annotations

import itertools
import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nimctl.cli.main import app
from nimctl.profiles import find_manifest
from nimctl.profiles.loader import REPO_PROFILES_DIR

SELECTION_VARIABLES = (
    "NIM_MODEL_PATH",
    "NIM_MODEL_PROFILE",
    "NIM_PEFT_SOURCE",
    "NIM_MAX_MODEL_LEN",
    "NIM_PASSTHROUGH_ARGS",
    "NIMCTL_PROFILE_PREFERENCE",
)
# Nothing from the caller's environment may reach either side.
BASE = {
    "NO_COLOR": "1",
    "TERM": "dumb",
    "NIMCTL_PROFILES_DIR": str(REPO_PROFILES_DIR),  # the image's /opt/nim/profiles
    "NIMCTL_ENGINE_PORT": "",
    "VLLM_API_KEY": "",
    "HF_TOKEN": "",
    "NGC_API_KEY": "",
    **dict.fromkeys(SELECTION_VARIABLES, ""),
}
QWEN7B = "qwen2.5-vl-7b-instruct"
QWEN72B = "qwen2.5-vl-72b-instruct"
REFUSED = None  # run exits 8, and so does nim-serve
LORA = "<lora-folder>"  # replaced by a real folder: --lora checks that it exists


class Case:
    def __init__(
        self, argv: list[str], gpus: str, expected: str | None, *, seen: str | None = None
    ) -> None:
        self.argv = argv  # after `nimctl run`; the model, if any, first
        self.gpus = gpus  # the machine, as NIMCTL_ASSUME_GPUS describes it
        self.seen = gpus if seen is None else seen  # the GPUs the instance is given (--gpus)
        self.expected = expected  # profile name, or REFUSED


CASES: dict[str, Case] = {
    "default-model-cpu": Case([], "none", "vllm-fp32-tp1-pp1-cpu"),
    "default-model-gpu-machine": Case([], "L4", "vllm-fp32-tp1-pp1-cpu"),
    "tiny-llm": Case(["tiny-llm"], "none", "vllm-fp32-tp1-pp1-cpu"),
    "qwen7b-a100": Case([QWEN7B], "A100-80GB", "vllm-bf16-tp1-pp1"),
    # The example: a -e NIM_PEFT_SOURCE used to leave a non-LoRA profile pinned.
    "qwen7b-e-peft-source": Case(
        [QWEN7B, "-e", "NIM_PEFT_SOURCE=/adapters"], "A100-80GB", "vllm-bf16-tp1-pp1-lora"
    ),
    "qwen7b-lora-flag": Case([QWEN7B, "--lora", LORA], "A100-80GB", "vllm-bf16-tp1-pp1-lora"),
    "qwen7b-pinned-without-lora-but-lora": Case(
        [QWEN7B, "--profile", "vllm-bf16-tp1-pp1", "--lora", LORA], "A100-80GB", REFUSED
    ),
    "qwen7b-e-pinned-without-lora-e-peft": Case(
        [QWEN7B, "-e", "NIM_MODEL_PROFILE=vllm-bf16-tp1-pp1", "-e", "NIM_PEFT_SOURCE=/adapters"],
        "A100-80GB",
        REFUSED,
    ),
    "qwen7b-pinned-lora-profile": Case(
        [QWEN7B, "--profile", "vllm-bf16-tp1-pp1-lora", "--lora", LORA], "A100-80GB", "vllm-bf16-tp1-pp1-lora"
    ),
    "qwen7b-profile-flag-beats-e": Case(
        [QWEN7B, "--profile", "vllm-bf16-tp1-pp1", "-e", "NIM_MODEL_PROFILE=vllm-bf16-tp1-pp1-lora"],
        "A100-80GB",
        "vllm-bf16-tp1-pp1",
    ),
    "qwen7b-a10g-full-context": Case([QWEN7B], "A10G", REFUSED),
    "qwen7b-a10g-max-model-len-flag": Case([QWEN7B, "--max-model-len", "32768"], "A10G", "vllm-bf16-tp1-pp1"),
    "qwen7b-a10g-e-nim-max-model-len": Case(
        [QWEN7B, "-e", "NIM_MAX_MODEL_LEN=32768"], "A10G", "vllm-bf16-tp1-pp1"
    ),
    "qwen7b-a10g-engine-arg": Case([QWEN7B, "--", "--max-model-len", "32768"], "A10G", "vllm-bf16-tp1-pp1"),
    "qwen7b-a10g-e-passthrough": Case(
        [QWEN7B, "-e", "NIM_PASSTHROUGH_ARGS=--max-num-seqs 4 --max-model-len=32k"], "A10G", "vllm-bf16-tp1-pp1"
    ),
    # Arguments after nim-serve win over NIM_MAX_MODEL_LEN in the engine, so in the choice too.
    "qwen7b-a10g-engine-arg-beats-flag": Case(
        [QWEN7B, "--max-model-len", "32768", "--", "--max-model-len", "128000"], "A10G", REFUSED
    ),
    "qwen7b-pinned-too-long-context": Case(
        [QWEN7B, "--profile", "vllm-bf16-tp1-pp1", "--max-model-len", "200000"], "A100-80GB", REFUSED
    ),
    "tiny-vlm-context-past-the-model": Case(["tiny-vlm", "--max-model-len", "8192"], "none", REFUSED),
    "qwen7b-one-of-two-h100": Case([QWEN7B, "--gpus", "1"], "H100-80GB:2", "vllm-fp8-tp1-pp1-h100", seen="H100-80GB"),
    "qwen72b-throughput": Case([QWEN72B], "H100-80GB:8", "vllm-fp8-tp2-pp1-h100"),
    "qwen72b-prefer-latency": Case([QWEN72B, "--prefer", "latency"], "H100-80GB:8", "vllm-fp8-tp4-pp1-h100"),
    "qwen72b-e-preference": Case(
        [QWEN72B, "-e", "NIMCTL_PROFILE_PREFERENCE=latency"], "H100-80GB:8", "vllm-fp8-tp4-pp1-h100"
    ),
    "qwen72b-prefer-flag-beats-e": Case(
        [QWEN72B, "--prefer", "throughput", "-e", "NIMCTL_PROFILE_PREFERENCE=latency"],
        "H100-80GB:8",
        "vllm-fp8-tp2-pp1-h100",
    ),
    "qwen72b-four-ids-latency": Case(
        [QWEN72B, "--gpus", "0,1,2,3", "--prefer", "latency"], "H100-80GB:8", "vllm-fp8-tp4-pp1-h100", seen="H100-80GB:4"
    ),
    "qwen72b-count-of-two": Case([QWEN72B, "--gpus", "2"], "H100-80GB:8", "vllm-fp8-tp2-pp1-h100", seen="H100-80GB:2"),
    "gemma-two-l40s": Case(["gemma-3-27b-it"], "L40S:2", "vllm-fp8-tp2-pp1-l40s"),
    "phi-gpus-none": Case(["phi-3.5-vision-instruct", "--gpus", "none"], "L4", REFUSED, seen="none"),
}


def _profile_id(model: str, name: str) -> str:
    profile = find_manifest(model, profiles_dir=REPO_PROFILES_DIR).profile_by_id_or_name(name)
    assert profile is not None, name
    return profile.id


def _server_side(line: str, runtime: str) -> tuple[dict[str, str], list[str]]:
    """The environment and the arguments the dry run's command line gives the server."""
    words = shlex.split(line)
    env: dict[str, str] = {}
    if runtime == "local":  # env K=V ... nim-serve ARGS
        start = words.index("nim-serve")
        env.update(word.split("=", 1) for word in words[1:start])  # type: ignore[arg-type]
        return env, words[start + 1 :]
    image = next(i for i, word in enumerate(words) if word.startswith("nimctl/nim-"))
    for flag, value in itertools.pairwise(words[: image + 1]):
        if flag == "-e":
            key, _, val = value.partition("=")
            env[key] = val
    return env, words[image + 1 :]


def _run_choice(case: Case, runtime: str, lora: Path, tmp: Path) -> tuple[str | None, str | None]:
    argv = [lora.as_posix() if word == LORA else word for word in case.argv]
    env = {**BASE, "NIMCTL_ASSUME_GPUS": case.gpus, "NIMCTL_STATE_DIR": str(tmp / "state")}
    result = CliRunner().invoke(app, ["run", "--dry-run", "--runtime", runtime, *argv], env=env)
    if result.exit_code == 8:
        return None, None
    assert result.exit_code == 0, result.output
    return result.stdout.strip(), _server_side(result.stdout.strip(), runtime)[0].get("NIM_MODEL_PROFILE")


def _serve_choice(case: Case, env: dict[str, str], args: list[str], tmp: Path) -> str | None:
    server_env = {**BASE, **env, "NIMCTL_ASSUME_GPUS": case.seen, "NIM_CACHE_PATH": str(tmp / "cache")}
    if server_env.get("NIM_PEFT_SOURCE"):
        # The server checks that the adapters folder exists; here it stands in for the one the
        # container would see mounted (/opt/nim/loras) or that `-e` named.
        (tmp / "server-adapters").mkdir(exist_ok=True)
        server_env["NIM_PEFT_SOURCE"] = str(tmp / "server-adapters")
    result = CliRunner().invoke(app, ["serve", "--dry-run", *args], env=server_env)
    if result.exit_code == 8:
        assert result.stderr.startswith(("Error: no runnable ", "Error: pinned profile ")), result.stderr
        return None
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["profile_id"]


@pytest.mark.parametrize("runtime", ["docker", "local"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_run_pins_what_nim_serve_would_choose(case: Case, runtime: str, tmp_path: Path) -> None:
    lora = tmp_path / "adapters"
    lora.mkdir()
    line, pinned = _run_choice(case, runtime, lora, tmp_path)
    model = next((word for word in case.argv[:1] if not word.startswith("-")), "tiny-vlm")
    assert pinned == (None if case.expected is REFUSED else _profile_id(model, case.expected))
    if line is None:
        # run refused: the server, given the user's own inputs, refuses too.
        argv = [lora.as_posix() if word == LORA else word for word in case.argv]
        env, args = _user_server_inputs(argv)
        assert _serve_choice(case, env, args, tmp_path) is None
        return
    env, args = _server_side(line, runtime)
    unpinned = {key: value for key, value in env.items() if key != "NIM_MODEL_PROFILE"}
    user_pin = _user_server_inputs(case.argv)[0].get("NIM_MODEL_PROFILE")
    if user_pin:  # the user pinned it: the server must be told the same pin
        unpinned["NIM_MODEL_PROFILE"] = user_pin
    assert _serve_choice(case, unpinned, args, tmp_path) == pinned
    assert _serve_choice(case, env, args, tmp_path) == pinned


def _user_server_inputs(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """What the user asked of the server, as nim-serve's variables and arguments (for refused runs,
    which print no command line): the model, -e values, and the flags' variables."""
    env: dict[str, str] = {}
    args: list[str] = []
    words = list(argv)
    if words and not words[0].startswith("-"):
        env["NIM_MODEL_PATH"] = find_manifest(words.pop(0), profiles_dir=REPO_PROFILES_DIR).model.source
    flags = {
        "--profile": "NIM_MODEL_PROFILE",
        "--lora": "NIM_PEFT_SOURCE",
        "--max-model-len": "NIM_MAX_MODEL_LEN",
        "--prefer": "NIMCTL_PROFILE_PREFERENCE",
    }
    options: dict[str, str] = {}
    while words:
        word = words.pop(0)
        if word == "--":
            args = words
            break
        if word == "-e":
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        elif word in flags:
            options[flags[word]] = words.pop(0)
        elif word == "--gpus":
            words.pop(0)
    return {**env, **options}, args


def test_the_matrix_covers_every_input() -> None:
    argv = [word for case in CASES.values() for word in case.argv]
    for flag in ("--profile", "--lora", "--max-model-len", "--gpus", "--prefer", "-e", "--"):
        assert flag in argv, flag
    assert len({case.gpus for case in CASES.values()}) >= 5
    assert len(CASES) >= 20
