"""The ``docker run`` line ``--dry-run`` prints and the SDK call the Docker runtime makes describe
one container: the line is parsed back and compared with ``containers.create``'s arguments.

The cases are ``nimctl run`` command lines (the golden ones of test_cli.py, the host-process
ones run as containers here, and a few more); the spec each plans is caught on its way to the
dry run, so both renderings start from exactly what the CLI planned.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
from docker.types import DeviceRequest
from typer.testing import CliRunner

from nimctl import contract
from nimctl.cli.main import app
from nimctl.runtime import manage
from nimctl.runtime.container import create_arguments, describe_container, docker_run_argv
from nimctl.runtime.dry_run import MASK, masked_container
from nimctl.runtime.spec import RunSpec

MANIFEST = Path(__file__).resolve().parents[2] / "profiles" / "tiny-llm.yaml"
QWEN = "qwen2.5-vl-7b-instruct"
_WITH_VALUE = {"--name", "--user", "--cap-drop", "--security-opt", "--shm-size", "--gpus", "--restart"}
_WITH_VALUE |= {"-p", "-v", "-e", "--label"}


def parse_docker_run(line: str) -> tuple[dict[str, Any], dict[str, bool]]:
    """The line as ``containers.create`` keywords (less ``detach``), and its ``-d`` / ``--rm``.

    Knows the flags nimctl writes, as docker reads them; any other flag fails the test.
    """
    words = shlex.split(line)
    assert words[:2] == ["docker", "run"], line
    args: dict[str, Any] = {
        "cap_drop": [],
        "security_opt": [],
        "shm_size": None,
        "device_requests": None,
        "restart_policy": None,
        "environment": {},
        "labels": {},
        "volumes": {},
        "ports": {},
    }
    switches = {"-d": False, "--rm": False}
    at = 2
    while words[at].startswith("-"):
        flag = words[at]
        if flag in switches:
            switches[flag] = True
            at += 1
            continue
        assert flag in _WITH_VALUE, f"a flag the parser does not know: {flag}"
        value, at = words[at + 1], at + 2
        if flag in {"--name", "--user"}:
            args[flag[2:]] = value
        elif flag in {"--cap-drop", "--security-opt"}:
            args[flag[2:].replace("-", "_")].append(value)
        elif flag == "--shm-size":
            args["shm_size"] = value
        elif flag == "--gpus":
            args["device_requests"] = [_device_request(value)]
        elif flag == "--restart":
            name, _, retries = value.partition(":")
            args["restart_policy"] = {"Name": name, "MaximumRetryCount": int(retries or 0)}
        elif flag == "-p":
            host, host_port, container_port = value.rsplit(":", 2)
            args["ports"][f"{container_port}/tcp"] = (host.strip("[]"), int(host_port))
        elif flag == "-v":
            source, target, *mode = value.split(":")
            args["volumes"][source] = {"bind": target, "mode": mode[0] if mode else "rw"}
        else:
            key, _, setting = value.partition("=")
            args["environment" if flag == "-e" else "labels"][key] = setting
    args["image"], args["command"] = words[at], words[at + 1 :] or None
    return args, {"detach": switches["-d"], "remove": switches["--rm"]}


def _device_request(value: str) -> DeviceRequest:
    """``--gpus`` as the docker CLI reads it: all, a count, or ``"device=ID,..."`` (quoted: CSV)."""
    value = value.strip('"')
    if value == "all":
        return DeviceRequest(count=-1, capabilities=[["gpu"]])
    if value.isdigit():
        return DeviceRequest(count=int(value), capabilities=[["gpu"]])
    assert value.startswith("device="), value
    return DeviceRequest(device_ids=value.removeprefix("device=").split(","), capabilities=[["gpu"]])


def planned(
    argv: list[str], gpus: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[RunSpec, str]:
    """The spec ``nimctl run --dry-run ARGV`` plans on ``gpus``, and the line it prints."""
    caught: list[RunSpec] = []
    real = manage.dry_run_line

    def catch(spec: RunSpec, *, detach: bool) -> str:
        caught.append(spec)
        return real(spec, detach=detach)

    monkeypatch.setattr(manage, "dry_run_line", catch)
    env = {
        "NIMCTL_ASSUME_GPUS": gpus,
        "NIMCTL_STATE_DIR": str(tmp_path / "state"),
        "NO_COLOR": "1",
        "HF_TOKEN": "",
        "NGC_API_KEY": "",
    }
    argv = ["run", "--runtime", "docker", "--dry-run", "--cache", str(tmp_path / "cache"), *argv]
    result = CliRunner().invoke(app, argv, env=env)
    assert result.exit_code == 0, result.stderr
    [spec] = caught
    return spec, result.stdout.strip()


SECRET_FLAGS = ["-e", "NGC_API_KEY=nvapi-secret", "--", "--api-key", "sk-secret", "--max-model-len", "512"]
CASES: dict[str, tuple[list[str], str]] = {
    # test_cli.py's golden command lines (those of a host process run as containers here).
    "golden-tiny-vlm": (["-d"], "none"),
    "golden-qwen7b-tp2": (
        [QWEN, "--profile", "vllm-bf16-tp2-pp1", "--gpus", "0,1", "--port", "9000", "--host", "0.0.0.0",
         "--name", "qwen", "-e", "NGC_API_KEY=nvapi-secret", "--restart", "on-failure:3",
         "--", "--max-model-len", "8192"],
        "H100-80GB:2",
    ),
    "golden-local-as-container": (
        ["tiny-llm", "--port", "8123", "-e", "HF_TOKEN=hf_x", "--", "--api-key", "sk-secret", "--max-model-len", "512"],
        "none",
    ),
    "golden-local-gpus-as-container": (
        [QWEN, "--gpus", "device=1", "--host", "::1", "-e", "NIM_PASSTHROUGH_ARGS=--api-key=sk-secret --enforce-eager"],
        "H100-80GB:2",
    ),
    # More: a restart policy in the foreground (no --rm), GPU ids and counts on assumed GPUs,
    # mounts of a model folder, a manifest file and LoRA adapters, an IPv6 host, secrets.
    "restart-foreground": (["tiny-llm", "--restart", "on-failure:3"], "none"),
    "restart-always-detached": (["tiny-llm", "-d", "--restart", "always"], "none"),
    "gpu-ids-assumed": ([QWEN, "--gpus", "0,1", "-d"], "H100-80GB:2"),
    "gpu-count-assumed": ([QWEN, "--gpus", "1"], "H100-80GB:2"),
    "gpu-all-assumed": ([QWEN, "--gpus", "all", "--prefer", "latency"], "H100-80GB:2"),
    "model-folder": (["MODEL_FOLDER", "-d"], "none"),
    "manifest-file": ([str(MANIFEST), "--name", "mine"], "none"),
    "lora-folder": ([QWEN, "--lora", "LORA_FOLDER"], "H100-80GB:1"),
    "ipv6-wildcard": (["tiny-vlm", "--host", "::", "--port", "8443", *SECRET_FLAGS], "none"),
    "ipv6-bracketed": (["tiny-vlm", "--host", "[::1]", "-d"], "none"),
}  # fmt: skip


def _folders(argv: list[str], tmp_path: Path) -> list[str]:
    """Placeholders for folders that must exist: a model folder, a LoRA adapters folder."""
    out = []
    for word in argv:
        if word in {"MODEL_FOLDER", "LORA_FOLDER"}:
            folder = tmp_path / word.lower()
            folder.mkdir(exist_ok=True)
            word = str(folder)
        out.append(word)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_the_printed_line_and_the_sdk_call_describe_one_container(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv, gpus = CASES[case]
    argv = _folders(argv, tmp_path)
    detach = "-d" in argv[: argv.index("--") if "--" in argv else len(argv)]
    spec, printed = planned(argv, gpus, tmp_path, monkeypatch)
    description = describe_container(spec)

    # Secrets unmasked: the line, parsed back, is the call the runtime makes.
    sdk = create_arguments(description)
    assert sdk.pop("detach") is True, "the container is always created detached; nimctl follows its log"
    from_line, switches = parse_docker_run(shlex.join(docker_run_argv(description, detach=detach)))
    assert from_line == sdk
    assert list(from_line["environment"]) == list(sdk["environment"]), "-e in the spec's order"
    assert next(iter(from_line["volumes"])) == str(spec.cache_dir), "the cache is the first volume"
    # -d is `nimctl run -d`; --rm is the removal nimctl does itself in the foreground (docker
    # refuses it with a restart policy); neither is an SDK argument.
    assert switches == {"detach": detach, "remove": not detach and spec.restart == "no"}
    assert "auto_remove" not in sdk

    # As printed: the same, with every secret as *** in both.
    masked = create_arguments(masked_container(description))
    masked.pop("detach")
    printed_args, printed_switches = parse_docker_run(printed)
    assert printed_args == masked and printed_switches == switches
    for key, value in masked["environment"].items():
        assert value == sdk["environment"][key] or MASK in value, f"{key} changed by more than masking"
    assert "secret" not in printed and "hf_x" not in printed


def test_the_cases_cover_every_flag_the_line_can_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parser above is only a check where the cases make the line use each flag."""
    seen: set[str] = set()
    for argv, gpus in CASES.values():
        _, printed = planned(_folders(argv, tmp_path), gpus, tmp_path, monkeypatch)
        seen |= {
            word
            for word in shlex.split(printed)
            if word.startswith("-") and word in _WITH_VALUE | {"-d", "--rm"}
        }
    assert seen == _WITH_VALUE | {"-d", "--rm"}


def test_mounts_are_read_only_and_ports_bracketed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, printed = planned([str(MANIFEST), "--host", "::1", "-d"], "none", tmp_path, monkeypatch)
    sdk = create_arguments(describe_container(spec))
    target = f"{contract.CONTAINER_USER_PROFILES}/{MANIFEST.name}"
    assert sdk["volumes"][str(MANIFEST)] == {"bind": target, "mode": "ro"}
    assert sdk["volumes"][str(spec.cache_dir)]["mode"] == "rw"
    assert sdk["ports"] == {f"{contract.CONTAINER_PORT}/tcp": ("::1", spec.port)}
    assert f"-v {MANIFEST}:{target}:ro" in printed
    assert f"-p '[::1]:{spec.port}:{contract.CONTAINER_PORT}'" in printed
