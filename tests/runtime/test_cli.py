"""`nimctl run --dry-run` against golden files, and the errors that need no running engine.

Regenerate the golden files after an intended change with NIMCTL_UPDATE_GOLDEN=1 and review
the diff. They hold placeholders for what differs between machines: {UID}, {GID}, {CACHE},
{VERSION}.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nimctl import __version__
from nimctl.cli.main import app
from nimctl.errors import EXIT_NO_PROFILE, EXIT_RUNTIME_UNAVAILABLE, EXIT_USAGE

GOLDEN = Path(__file__).resolve().parent / "golden"
# Nothing listens on the discard port: the daemon is unreachable at once.
NO_DAEMON = "tcp://127.0.0.1:9"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "NIMCTL_ASSUME_GPUS": "none",
        "NIMCTL_STATE_DIR": str(tmp_path / "state"),
        "NO_COLOR": "1",
        "HF_TOKEN": "",
        "NGC_API_KEY": "",
    }


def invoke(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, argv, env=env)
    return result.exit_code, result.stdout, result.stderr


def check_golden(name: str, text: str, cache: Path) -> None:
    generic = (
        text.replace(f"{os.getuid()}:{os.getgid()}", "{UID}:{GID}")
        .replace(str(cache.parent / "state"), "{STATE}")  # the env fixture's: credentials live there
        .replace(str(cache), "{CACHE}")
        .replace(f"version={__version__}", "version={VERSION}")
        .replace(f"nim-cpu:{__version__}", "nim-cpu:{VERSION}")
        .replace(f"nim-cuda:{__version__}", "nim-cuda:{VERSION}")
    )
    path = GOLDEN / name
    if os.environ.get("NIMCTL_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generic, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}: run with NIMCTL_UPDATE_GOLDEN=1"
    assert generic == path.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("golden", "argv", "gpus"),
    [
        ("run_dry_run_tiny_vlm.txt", ["--runtime", "docker", "-d"], "none"),
        (
            "run_dry_run_qwen7b_tp2.txt",
            [
                "qwen2.5-vl-7b-instruct",
                "--runtime",
                "docker",
                "--profile",
                "vllm-bf16-tp2-pp1",
                "--gpus",
                "0,1",
                "--port",
                "9000",
                "--host",
                "0.0.0.0",
                "--name",
                "qwen",
                "-e",
                "NGC_API_KEY=nvapi-secret",
                "--restart",
                "on-failure:3",
                "--",
                "--max-model-len",
                "8192",
            ],
            "H100-80GB:2",
        ),
        (
            "run_dry_run_local.txt",
            [
                "tiny-llm",
                "--runtime",
                "local",
                "--port",
                "8123",
                "-e",
                "HF_TOKEN=hf_x",
                "--",
                "--api-key",
                "sk-secret",
                "--max-model-len",
                "512",
            ],
            "none",
        ),
        (
            "run_dry_run_local_gpus.txt",
            [
                "qwen2.5-vl-7b-instruct",
                "--runtime",
                "local",
                "--gpus",
                "device=1",
                "--host",
                "::1",
                "-e",
                "NIM_PASSTHROUGH_ARGS=--api-key=sk-secret --enforce-eager",
            ],
            "H100-80GB:2",
        ),
    ],
)
def test_dry_run_matches_golden(
    golden: str, argv: list[str], gpus: str, env: dict[str, str], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    code, out, err = invoke(
        ["run", "--dry-run", "--cache", str(cache), *argv], {**env, "NIMCTL_ASSUME_GPUS": gpus}
    )
    assert code == 0, err
    assert "secret" not in out and "hf_x" not in out
    assert err.splitlines()[-1].startswith("profile: ")
    check_golden(golden, out, cache)
    assert not cache.exists(), "--dry-run created the cache folder"


def test_unknown_profile_exits_with_the_profile_code(env: dict[str, str]) -> None:
    code, _, err = invoke(["run", "--runtime", "docker", "--profile", "nope", "--dry-run"], env)
    assert code == EXIT_NO_PROFILE
    assert "Error: profile 'nope' is not in the tiny-vlm manifest" in err
    assert "Hint: runnable here: vllm-fp32-tp1-pp1-cpu" in err


def test_unknown_model_is_a_usage_error(env: dict[str, str]) -> None:
    code, _, err = invoke(["run", "no-such-model", "--dry-run"], env)
    assert code == EXIT_USAGE
    assert "Error: no manifest for 'no-such-model'" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--runtime", "podman"], "bad --runtime 'podman'"),
        (["run", "--gpus", "lots"], "bad --gpus value 'lots'"),
        (["run", "-e", "no equals"], "bad -e value"),
        (["run", "--name", "bad name"], "bad instance name"),
        (["run", "--timeout", "0"], "--timeout must be positive"),
        (["stop"], "give an instance NAME or --all"),
        (["build", "--device", "tpu"], "bad --device 'tpu'"),
    ],
)
def test_bad_input_is_one_line_usage_error(argv: list[str], message: str, env: dict[str, str]) -> None:
    code, _, err = invoke(argv, {**env, "DOCKER_HOST": NO_DAEMON})
    assert code == EXIT_USAGE, err
    assert err.splitlines()[0].startswith("Error: ") and message in err.splitlines()[0]


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_unreachable_daemon(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "DOCKER_HOST": NO_DAEMON}
    code, _, err = invoke(["run", "--runtime", "docker", "-d", "--cache", str(tmp_path / "c")], env)
    assert code == EXIT_RUNTIME_UNAVAILABLE
    assert f"Error: Docker daemon not reachable at {NO_DAEMON}" in err
    assert "--runtime local" in err
    assert not (tmp_path / "c").exists()
    code, _, err = invoke(["build"], env)
    assert code == EXIT_RUNTIME_UNAVAILABLE and "Docker daemon not reachable" in err
    # ps still lists the local instances, and says why containers are missing.
    code, out, err = invoke(["ps", "--format", "json"], env)
    assert code == 0 and out.strip() == "[]"
    assert "containers not listed" in err
    code, _, err = invoke(["logs", "nothing-here"], env)
    assert code == EXIT_USAGE and "no local instance named nothing-here" in err


def test_auto_runtime_falls_back_to_local_and_says_so(env: dict[str, str], listening: int) -> None:
    code, out, err = invoke(["run", "--port", str(listening), "--dry-run"], {**env, "DOCKER_HOST": NO_DAEMON})
    assert code == 0, err
    assert "runtime: local process (no Docker daemon answers" in err
    assert out.startswith("env NIM_MODEL_PATH=builtin://tiny-vlm")


def test_port_in_use_for_a_local_instance(env: dict[str, str], listening: int, tmp_path: Path) -> None:
    code, _, err = invoke(
        ["run", "--runtime", "local", "-d", "--port", str(listening), "--cache", str(tmp_path / "c")], env
    )
    assert code == EXIT_USAGE
    assert f"Error: port {listening} on 127.0.0.1 is already in use" in err
    assert "Hint: pass --port " in err
    assert not (tmp_path / "state" / "instances").exists()
