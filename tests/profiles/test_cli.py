"""`nimctl profiles ...`, `nimctl gpus` and `list-model-profiles` through Typer's CliRunner, with golden files.

Regenerate the golden files after an intended change with NIMCTL_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nimctl.cli.main import app
from nimctl.profiles import find_manifest
from nimctl.profiles.loader import REPO_PROFILES_DIR

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
REPO = str(REPO_PROFILES_DIR.parent)
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
}


def run(*args: str, **env: str) -> tuple[int, str, str]:
    """Invoke nimctl; profiles commands read only the repository's manifests, so the output is the same
    wherever the tests run (a container's /opt/nim/profiles or $NIMCTL_PROFILES_DIR would add models)."""
    argv = list(args)
    if argv[:1] == ["profiles"] and argv[1:2] != ["select"]:
        argv += ["--profiles-dir", str(REPO_PROFILES_DIR)]
    result = CliRunner().invoke(app, argv, env={**ENV, **env})
    return result.exit_code, result.stdout, result.stderr


def _normalised(text: str) -> str:
    # Rich pads table cells to the widest one, and the checkout's path (replaced by <repo>) sets
    # that width: trailing blanks depend on where the repository lies, not on the output.
    return "\n".join(line.rstrip() for line in text.replace(REPO, "<repo>").splitlines()) + "\n"


def check_golden(name: str, text: str) -> None:
    text = _normalised(text)
    path = GOLDEN / name
    if os.environ.get("NIMCTL_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}: run with NIMCTL_UPDATE_GOLDEN=1"
    assert text == _normalised(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("golden", "args"),
    [
        ("profiles_list_qwen7b_2xL40S.txt", ["qwen2.5-vl-7b-instruct", "--assume-gpus", "L40S:2"]),
        (
            "profiles_list_qwen72b_2xL40S.txt",
            ["hf://Qwen/Qwen2.5-VL-72B-Instruct", "--assume-gpus", "L40S:2"],
        ),
        ("profiles_list_gemma_busy_A100.txt", ["gemma-3-27b-it", "--assume-gpus", "A100-80GB@30GiB"]),
        ("profiles_list_tiny_vlm_none.txt", ["tiny-vlm", "--assume-gpus", "none"]),
        ("profiles_list_all_8xH100.txt", ["--assume-gpus", "H100-80GB:8"]),
    ],
)
def test_profiles_list_table(golden: str, args: list[str]) -> None:
    code, out, err = run("profiles", "list", *args)
    assert (code, err) == (0, "")
    check_golden(golden, out)


@pytest.mark.parametrize(
    ("golden", "args"),
    [
        ("profiles_list_qwen7b_2xL40S.json", ["qwen2.5-vl-7b-instruct", "--gpus", "L40S:2"]),
        ("profiles_list_all_8xH100.json", ["--gpus", "H100-80GB:8"]),
    ],
)
def test_profiles_list_json(golden: str, args: list[str]) -> None:
    code, out, _ = run("profiles", "list", *args, "--format", "json")
    assert code == 0
    json.loads(out)
    check_golden(golden, out)


def test_profiles_list_json_keys_are_stable() -> None:
    _, out, _ = run("profiles", "list", "tiny-llm", "--gpus", "none", "-f", "json")
    data = json.loads(out)
    assert set(data) == {"model", "system", "nodes", "selected", "error", "profiles"}
    assert [p["name"] for p in data["profiles"]] == [
        "vllm-fp32-tp1-pp1-cpu",
        "vllm-fp32-tp1-pp1-cpu-lora",
        "vllm-fp32-tp2-pp1-cpu-2node",
    ]
    keys = {"id", "name", "status", "group", "selected", "reason", "fix", "memory", "tags", "gpus", "nodes"}
    for profile in data["profiles"]:
        assert keys <= set(profile)
        assert set(profile["memory"]) >= {
            "weights_gib",
            "kv_cache_gib",
            "overhead_gib",
            "total_gib",
            "context_tokens",
        }


def test_profiles_show() -> None:
    code, out, err = run(
        "profiles", "show", "vllm-bf16-tp1-pp1", "--model", "qwen2.5-vl-7b-instruct", "--assume-gpus", "A10G"
    )
    assert (code, err) == (0, "")
    check_golden("profiles_show_qwen7b_bf16_A10G.txt", out)


def test_profiles_show_by_id_prefix_json() -> None:
    code, out, _ = run("profiles", "show", "b33567e9fad1", "--gpus", "H100:1", "-f", "json")
    assert code == 0
    data = json.loads(out)
    assert data["name"] == "vllm-fp8-tp1-pp1-h100" and data["model"] == "qwen2.5-vl-7b-instruct"
    assert data["classification"]["status"] == "runnable"
    assert data["engine_args"][:4] == ["--dtype", "bfloat16", "--quantization", "fp8"]


def test_profiles_show_ambiguous_name_asks_for_the_model() -> None:
    code, out, err = run("profiles", "show", "vllm-fp8-tp1-pp1-h100")
    assert (code, out) == (2, "")
    assert err.startswith("Error: 'vllm-fp8-tp1-pp1-h100' is a profile of several models (")
    assert "Hint: add --model MODEL" in err


def test_select_prints_only_the_id() -> None:
    code, out, err = run("profiles", "select", "builtin://tiny-vlm")
    assert (code, err) == (0, "")
    assert out == "6a451bce28f32fc874a074b68f802abc7f810bbba8316ba70b8584af5eb48ea5\n"


def test_select_honours_nim_model_profile_and_path() -> None:
    code, out, _ = run(
        "profiles", "select", "--gpus", "L40S:2",
        NIM_MODEL_PATH="hf://Qwen/Qwen2.5-VL-7B-Instruct", NIM_MODEL_PROFILE="vllm-bf16-tp2-pp1",
    )  # fmt: skip
    pinned = find_manifest("qwen2.5-vl-7b-instruct").profile_by_id_or_name("vllm-bf16-tp2-pp1")
    assert pinned is not None
    assert (code, out) == (0, pinned.id + "\n")


def test_select_with_nothing_runnable_exits_8_with_the_reason() -> None:
    code, out, err = run("profiles", "select", "qwen2.5-vl-7b-instruct", "--assume-gpus", "V100")
    assert (code, out) == (8, "")
    lines = err.splitlines()
    assert (
        lines[0]
        == "Error: no runnable profile for qwen2.5-vl-7b-instruct on 1 x Tesla V100-SXM2-32GB (32 GiB) [assumed]"
    )
    assert lines[1].startswith("Hint: closest: vllm-fp8-tp1-pp1: a GPU with compute capability >= 8.9")


def test_select_pinned_and_not_runnable_exits_8() -> None:
    code, _, err = run(
        "profiles", "select", "qwen2.5-vl-7b-instruct", "--gpus", "A100-80GB", "-p", "vllm-fp8-tp1-pp1"
    )
    assert code == 8
    assert "cannot run here (incompatible): fp8 needs compute capability 8.9" in err
    assert "Hint: runnable here: " in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["profiles", "list", "no-such-model"], "Error: no manifest for 'no-such-model' (known models: "),
        (["profiles", "list", "tiny-llm", "--gpus", "H900"], "Error: unknown GPU 'H900' in --gpus"),
        (["profiles", "select", "no-such-model"], "Error: no manifest for 'no-such-model' (known models: "),
        (["gpus", "--gpus", "L4:0"], "Error: bad GPU count in 'L4:0'"),
    ],
)
def test_bad_input_is_a_one_line_usage_error(args: list[str], message: str) -> None:
    code, out, err = run(*args)
    assert (code, out) == (2, "")
    assert err.startswith(message)


def test_broken_manifest_path(tmp_path: Path) -> None:
    broken = tmp_path / "x.yaml"
    broken.write_text(
        (REPO_PROFILES_DIR / "tiny-llm.yaml").read_text().replace("precision: fp32", "precision: fp33")
    )
    code, _, err = run("profiles", "list", str(broken))
    assert code == 2
    assert err.splitlines()[
        0
    ] == f"Error: {broken}:28: profiles[0].tags.precision: 'fp33' is not allowed: " + (
        "'nvfp4', 'mxfp4', 'int4', 'fp8', 'fp16', 'bf16' or 'fp32'"
    )


def test_gpus_assumed_table_and_json() -> None:
    code, out, _ = run("gpus", "--gpus", "L40S:2,L4@3")
    assert code == 0
    check_golden("gpus_2xL40S_busy_L4.txt", out)
    code, out, _ = run("gpus", "--gpus", "L40S:2,L4@3", "--format", "json")
    assert code == 0
    check_golden("gpus_2xL40S_busy_L4.json", out)


def test_gpus_on_this_machine() -> None:
    code, out, _ = run("gpus", "-f", "json")
    data = json.loads(out)
    assert code == 0
    assert data["source"] == "nvml"
    assert data["device"] == ("cuda" if data["gpus"] else "cpu")
    if not data["gpus"]:
        assert data["reason"]
        code, out, _ = run("gpus")
        assert out == f"No GPU: {data['reason']}. Device: cpu.\n"


def test_gpus_catalogue() -> None:
    code, out, _ = run("gpus", "--catalog", "-f", "json")
    assert code == 0
    keys = [entry["key"] for entry in json.loads(out)]
    assert {
        "H100-SXM-80GB",
        "H200-SXM-141GB",
        "B200",
        "A100-SXM-40GB",
        "L40S",
        "L4",
        "A10G",
        "RTX-4090",
    } <= set(keys)


def test_list_model_profiles_console_script() -> None:
    """The container's command, as a real process: NIM's layout for $NIM_MODEL_PATH."""
    script = Path(sys.executable).with_name("list-model-profiles")
    command = [str(script)] if script.exists() else [
        sys.executable, "-c", "from nimctl.cli.profiles import list_model_profiles_main as m; m()",
    ]  # fmt: skip
    env = {**os.environ, **ENV, "NIM_MODEL_PATH": "builtin://tiny-vlm"}
    command += ["--profiles-dir", str(REPO_PROFILES_DIR)]
    done = subprocess.run(
        [*command, "--assume-gpus", "none"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")
    check_golden("list_model_profiles_tiny_vlm.txt", done.stdout)
    done = subprocess.run(
        [*command, "gemma-3-27b-it", "--gpus", "H100:2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    check_golden("list_model_profiles_gemma_2xH100.txt", done.stdout)


@pytest.mark.parametrize("how", ["option", "env"])
def test_profiles_list_marks_a_pinned_profile(how: str) -> None:
    args = ["qwen2.5-vl-7b-instruct", "--gpus", "L40S:2", "-f", "json"]
    env = {"NIM_MODEL_PROFILE": "vllm-bf16-tp2-pp1"} if how == "env" else {}
    if how == "option":
        args += ["--profile", "vllm-bf16-tp2-pp1"]
    code, out, _ = run("profiles", "list", *args, **env)
    data = json.loads(out)
    assert code == 0
    assert data["selected"]["name"] == "vllm-bf16-tp2-pp1" and data["selected"]["pinned"]
    assert [p["name"] for p in data["profiles"] if p["selected"]] == ["vllm-bf16-tp2-pp1"]


def test_profiles_list_pinned_and_not_runnable_shows_why() -> None:
    code, out, _ = run(
        "profiles", "list", "qwen2.5-vl-7b-instruct", "--gpus", "A100-80GB", "-p", "vllm-fp8-tp1-pp1"
    )
    assert code == 0  # a listing, not a selection: the error is shown, not raised
    assert "Selected: none. pinned profile vllm-fp8-tp1-pp1 (501b8b0b9a62) cannot run here" in out


def test_profiles_list_of_every_model_ignores_a_container_profile_variable() -> None:
    code, out, _ = run(
        "profiles", "list", "--gpus", "none", "-f", "json", NIM_MODEL_PROFILE="vllm-bf16-tp2-pp1"
    )
    assert code == 0
    assert {row["model"] for row in json.loads(out)["models"]} >= {"tiny-vlm", "tiny-llm"}
    code, out, err = run("profiles", "list", "--assume-gpus", "none", "--profile", "vllm-bf16-tp2-pp1")
    assert (code, out) == (2, "")
    assert err.startswith("Error: --profile needs MODEL")


@pytest.mark.parametrize(
    ("args", "env", "name"),
    [
        (["--model", "qwen2.5-vl-7b-instruct"], {}, "vllm-fp8-tp1-pp1-l40s"),  # the automatic choice
        (["--model", "qwen2.5-vl-7b-instruct", "-p", "vllm-bf16-tp2-pp1"], {}, "vllm-bf16-tp2-pp1"),
        (["--model", "qwen2.5-vl-7b-instruct"], {"NIM_MODEL_PROFILE": "a36f0c13c57e"}, "vllm-bf16-tp2-pp1"),
        (
            ["vllm-bf16-tp1-pp1", "--model", "qwen2.5-vl-7b-instruct"],
            {"NIM_MODEL_PROFILE": "x"},
            "vllm-bf16-tp1-pp1",
        ),
    ],
)
def test_profiles_show_takes_the_profile_from_the_argument_option_or_variable(
    args: list[str], env: dict[str, str], name: str
) -> None:
    code, out, _ = run("profiles", "show", *args, "--gpus", "L40S:2", "-f", "json", **env)
    assert code == 0
    data = json.loads(out)
    assert data["name"] == name
    assert data["selected"] == (name == "vllm-fp8-tp1-pp1-l40s")


def test_profiles_show_without_a_profile_or_model_is_a_usage_error() -> None:
    code, out, err = run("profiles", "show")
    assert (code, out) == (2, "")
    assert err.startswith("Error: which profile? give ID|NAME or --profile, or --model MODEL")
    code, _, err = run("profiles", "show", "--model", "qwen2.5-vl-7b-instruct", "--assume-gpus", "V100")
    assert code == 8 and err.startswith("Error: no runnable profile for qwen2.5-vl-7b-instruct")


def test_list_model_profiles_reads_nim_max_model_len(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nimctl.cli.profiles import list_model_profiles_main

    def listing(**env: str) -> str:
        for key, value in {**ENV, "NIM_MODEL_PATH": "qwen2.5-vl-7b-instruct", **env}.items():
            monkeypatch.setenv(key, value)
        argv = ["list-model-profiles", "--gpus", "A10G", "--profiles-dir", str(REPO_PROFILES_DIR)]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as done:
            list_model_profiles_main()
        assert done.value.code == 0
        return capsys.readouterr().out

    # At the model's 128k context bf16 does not fit an A10G; at 32k it does and is chosen.
    assert "SELECTED: <None>" in listing()
    assert "(vllm-bf16-tp1-pp1) (selected)" in listing(NIM_MAX_MODEL_LEN="32768")
    assert "(vllm-bf16-tp1-pp1) (selected)" in listing(
        NIM_MODEL_PROFILE="vllm-bf16-tp1-pp1", NIM_MAX_MODEL_LEN="32768"
    )


def test_select_reads_nim_max_model_len() -> None:
    code, out, _ = run("profiles", "select", "qwen2.5-vl-7b-instruct", "--gpus", "A10G")
    assert (code, out) == (8, "")
    code, out, _ = run(
        "profiles", "select", "qwen2.5-vl-7b-instruct", "--gpus", "A10G", NIM_MAX_MODEL_LEN="32768"
    )
    assert (code, out) == (0, "c55664c60675d3e564d228956a8b21996fc730d115cfe29d6526389d84836026\n")


def test_gpus_json_keeps_the_inventory_notes(monkeypatch: pytest.MonkeyPatch) -> None:
    from nimctl.gpu import nvml
    from tests.gpu.fake_nvml import FakeNvml, h100

    fake = FakeNvml(devices=[h100("GPU-a"), h100("GPU-b")])
    real = nvml.read_nvml
    monkeypatch.setattr(nvml, "read_nvml", lambda: real(fake, environ={"CUDA_VISIBLE_DEVICES": "1"}))
    code, out, _ = run("gpus", "-f", "json")
    assert code == 0
    data = json.loads(out)
    assert [gpu["uuid"] for gpu in data["gpus"]] == ["GPU-b"]
    assert data["notes"] == ["1 of 2 GPUs hidden by NVIDIA_VISIBLE_DEVICES/CUDA_VISIBLE_DEVICES"]
    code, out, _ = run("gpus")
    assert out.splitlines()[0].split() == [
        "#", "NAME", "PCI", "ID", "MEMORY", "USED", "FREE", "UTIL", "CC", "MIG", "CATALOGUE", "UUID"
    ]  # fmt: skip
    assert out.splitlines()[1].split()[6:12] == [
        "79.6",
        "GiB",
        "0.5",
        "GiB",
        "79.2",
        "GiB",
    ]  # total, used, free
    assert out.splitlines()[-1] == "1 of 2 GPUs hidden by NVIDIA_VISIBLE_DEVICES/CUDA_VISIBLE_DEVICES"
