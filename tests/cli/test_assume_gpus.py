"""``--assume-gpus SPEC`` describes hardware (``H100-80GB:8``); ``nimctl run --gpus`` picks devices.

The commands that describe hardware (``gpus``, ``profiles list|show|select``,
``list-model-profiles``) still read their old spelling ``--gpus SPEC``: hidden, the same answer,
and a one-line note on stderr. ``nimctl run --assume-gpus`` plans on described hardware as
``NIMCTL_ASSUME_GPUS`` does, and its ``--gpus`` then picks among those GPUs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nimctl._entry import ErrorHandlingCommand
from nimctl.cli.main import app
from nimctl.cli.profiles import list_model_profiles
from nimctl.errors import EXIT_USAGE
from nimctl.profiles.loader import REPO_PROFILES_DIR

ENV = {
    "COLUMNS": "120",
    "NO_COLOR": "1",
    "TERM": "dumb",
    "NIMCTL_ASSUME_GPUS": "",
    "NIM_MODEL_PROFILE": "",
    "NIM_MAX_MODEL_LEN": "",
    "NIM_MODEL_PATH": "",
    "NIM_PEFT_SOURCE": "",
    "NIM_PASSTHROUGH_ARGS": "",
    "HF_TOKEN": "",
    "NGC_API_KEY": "",
}
QWEN = "qwen2.5-vl-7b-instruct"
DIR = ["--profiles-dir", str(REPO_PROFILES_DIR)]
# Each command that describes hardware, with the rest of its arguments.
DESCRIBING = {
    "gpus": ["gpus"],
    "profiles-list": ["profiles", "list", QWEN, *DIR],
    "profiles-list-all": ["profiles", "list", *DIR],
    "profiles-show": ["profiles", "show", "vllm-bf16-tp1-pp1", "--model", QWEN, *DIR],
    "profiles-select": ["profiles", "select", QWEN, *DIR],
    "list-model-profiles": ["list-model-profiles", QWEN, *DIR],
}


def nimctl(*argv: str, **env: str) -> tuple[int, str, str]:
    if argv[0] == "list-model-profiles":  # the container's own console script, as nimctl._entry runs it
        standalone = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        standalone.command(cls=ErrorHandlingCommand)(list_model_profiles)
        result = CliRunner().invoke(standalone, list(argv[1:]), env={**ENV, **env})
    else:
        result = CliRunner().invoke(app, list(argv), env={**ENV, **env})
    return result.exit_code, result.stdout, result.stderr


def note(spec: str) -> str:
    return f"Note: --gpus {spec} describes hardware; it is now spelled --assume-gpus"


@pytest.mark.parametrize("command", list(DESCRIBING))
@pytest.mark.parametrize("spec", ["L40S:2", "none"])
def test_the_old_spelling_answers_the_same_with_a_note(command: str, spec: str) -> None:
    argv = DESCRIBING[command]
    code, out, err = nimctl(*argv, "--assume-gpus", spec)
    old_code, old_out, old_err = nimctl(*argv, "--gpus", spec)
    assert (old_code, old_out) == (code, out)
    assert note(spec) not in err
    assert old_err.splitlines()[0] == note(spec)
    assert old_err.splitlines()[1:] == err.splitlines()
    # The same as the variable says it.
    assert nimctl(*argv, NIMCTL_ASSUME_GPUS=spec)[:2] == (code, out)


@pytest.mark.parametrize("command", list(DESCRIBING))
def test_the_help_shows_only_the_new_spelling(command: str) -> None:
    code, out, _ = nimctl(*DESCRIBING[command][:2] if command != "gpus" else ["gpus"], "--help")
    assert code == 0
    assert "--assume-gpus" in out
    assert "--gpus " not in out.replace("--assume-gpus", "")


def test_both_spellings_at_once_is_a_usage_error() -> None:
    code, out, err = nimctl("gpus", "--gpus", "L4", "--assume-gpus", "L4")
    assert (code, out) == (EXIT_USAGE, "")
    assert err.startswith("Error: --gpus SPEC is the old spelling of --assume-gpus: give one of them")


def test_a_bad_spec_in_the_old_spelling_is_its_error_alone() -> None:
    code, _, err = nimctl("gpus", "--gpus", "L4:0")
    assert code == EXIT_USAGE
    assert err.startswith("Error: bad GPU count in 'L4:0'") and "Note:" not in err


def _dry_run(tmp_path: Path, *argv: str, **env: str) -> tuple[str, str]:
    code, out, err = nimctl(
        "run", QWEN, "--runtime", "docker", "--dry-run", "--cache", str(tmp_path / "cache"), *argv,
        NIMCTL_STATE_DIR=str(tmp_path / "state"), **env,
    )  # fmt: skip
    assert code == 0, err
    return out, err


def test_run_plans_on_assumed_gpus_as_the_variable_does(tmp_path: Path) -> None:
    pin = ["--profile", "vllm-bf16-tp2-pp1"]
    out, err = _dry_run(tmp_path, "--assume-gpus", "H100-80GB:2", *pin)
    assert (out, err) == _dry_run(tmp_path, *pin, NIMCTL_ASSUME_GPUS="H100-80GB:2")
    assert "nimctl/nim-cuda:" in out and "--shm-size 16g" in out and "--gpus all" in out
    # Given, it wins over the variable.
    given = _dry_run(tmp_path, "--assume-gpus", "L40S:2", NIMCTL_ASSUME_GPUS="H100-80GB:2")
    assert given == _dry_run(tmp_path, NIMCTL_ASSUME_GPUS="L40S:2")
    assert given != _dry_run(tmp_path, NIMCTL_ASSUME_GPUS="H100-80GB:2")


def test_run_picks_devices_among_the_assumed_gpus(tmp_path: Path) -> None:
    out, err = _dry_run(tmp_path, "--assume-gpus", "H100-80GB:2", "--gpus", "device=1")
    assert """--gpus '"device=1"'""" in out and "--shm-size 1g" in out
    assert "tp1" in err
    code, _, err = nimctl("run", QWEN, "--dry-run", "--assume-gpus", "H100-80GB:2", "--gpus", "3")
    assert code == EXIT_USAGE and "--gpus 3: only 2 GPU(s) visible" in err
