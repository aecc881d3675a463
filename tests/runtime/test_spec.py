"""Planning a run on the host: model resolution, profile choice, GPUs, environment, names."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from nimctl.contract import CONTAINER_MODEL, MANAGED_LABEL
from nimctl.contract import CONTAINER_USER_PROFILES as USER_PROFILES
from nimctl.errors import ProfileError, UsageError
from nimctl.gpu import parse_gpu_spec
from nimctl.runtime.dry_run import docker_run_line, local_run_line, masked_args
from nimctl.runtime.gpu_request import GpuRequest
from nimctl.runtime.images import default_image
from nimctl.runtime.planning import plan_run
from nimctl.runtime.spec import check_name, check_restart, parse_env

NO_GPU = parse_gpu_spec("none")
TWO_H100 = parse_gpu_spec("H100-80GB:2")
UUID = "GPU-3F1A2B4C-5D6E-7F80-91A2-B3C4D5E6F708"  # NVML's form: upper-case hex


@pytest.fixture(autouse=True)
def _no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NGC_API_KEY", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all", GpuRequest("all")),
        ("none", GpuRequest("none")),
        ("0", GpuRequest("none")),
        ("2", GpuRequest("count", count=2)),
        ("0,1", GpuRequest("ids", ids=("0", "1"))),
        ("device=1", GpuRequest("ids", ids=("1",))),
        ("ALL", GpuRequest("all")),
        (f"Device={UUID}", GpuRequest("ids", ids=(UUID,))),
        (f"{UUID},1", GpuRequest("ids", ids=(UUID, "1"))),
        (f"MIG-{UUID[4:]}/1/0", GpuRequest("ids", ids=(f"MIG-{UUID[4:]}/1/0",))),
    ],
)
def test_gpu_request_forms(text: str, expected: GpuRequest) -> None:
    assert GpuRequest.parse(text) == expected


@pytest.mark.parametrize("text", ["some", "0,x", "device=", "-1"])
def test_bad_gpu_request_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="bad --gpus"):
        GpuRequest.parse(text)


def test_gpu_request_docker_flags() -> None:
    assert GpuRequest("all").docker_flag() == "all"
    assert GpuRequest("count", count=2).docker_flag() == "2"
    assert GpuRequest("ids", ids=("0", "1")).docker_flag() == '"device=0,1"'
    assert GpuRequest("none").docker_flag() is None


def test_gpu_ids_filter_the_inventory_for_selection() -> None:
    visible = GpuRequest.parse("1").visible(parse_gpu_spec("H100-80GB:2"))
    assert len(visible.gpus) == 1
    visible = GpuRequest.parse("device=1").visible(parse_gpu_spec("H100-80GB:2"))
    assert [gpu.index for gpu in visible.gpus] == [1]
    with pytest.raises(UsageError, match="no such GPU"):
        GpuRequest.parse("0,7").visible(TWO_H100)
    with pytest.raises(UsageError, match="only 2 GPU"):
        GpuRequest.parse("3").visible(TWO_H100)


def test_gpu_uuid_selects_its_gpu_whatever_the_case() -> None:
    gpus = tuple(
        replace(gpu, uuid=f"GPU-{index:08X}-AAAA-BBBB-CCCC-DDDDDDDDDDDD")
        for index, gpu in enumerate(TWO_H100.gpus)
    )
    inventory = replace(TWO_H100, gpus=gpus)
    second = gpus[1].uuid or ""
    for typed in (second, second.lower()):
        request = GpuRequest.parse(f"device={typed}")
        assert request.ids == (typed,)
        assert request.docker_flag() == f'"device={typed}"'
        assert [gpu.index for gpu in request.visible(inventory).gpus] == [1]
    with pytest.raises(UsageError, match="no such GPU"):
        GpuRequest.parse(UUID).visible(inventory)


def test_a_mig_instance_is_refused_with_what_to_give_instead() -> None:
    with pytest.raises(UsageError, match="a MIG instance; nimctl runs profiles on whole GPUs") as caught:
        GpuRequest.parse(f"MIG-{UUID[4:]}/1/0").visible(TWO_H100)
    assert "index or its GPU- UUID" in (caught.value.hint or "")


def test_docker_gets_the_chosen_gpus_by_uuid(tmp_path: Path) -> None:
    # nimctl numbers GPUs after CUDA_VISIBLE_DEVICES, Docker as the host does: a UUID means one GPU to both.
    gpus = tuple(
        replace(gpu, uuid=f"GPU-{index:08X}-AAAA-BBBB-CCCC-DDDDDDDDDDDD")
        for index, gpu in enumerate(TWO_H100.gpus)
    )
    inventory = replace(TWO_H100, gpus=gpus)

    def docker_gpus(request: str | None) -> GpuRequest:
        return plan_run(
            model="qwen2.5-vl-7b-instruct", runtime="docker", gpus=request, cache_dir=tmp_path, inventory=inventory
        ).gpus

    assert docker_gpus("device=0") == GpuRequest("ids", ids=(gpus[0].uuid or "",))
    assert docker_gpus("1") == GpuRequest("ids", ids=(gpus[0].uuid or "",))  # a count: the first one
    assert docker_gpus("all") == GpuRequest("all") and docker_gpus(None) == GpuRequest("all")
    # CUDA_VISIBLE_DEVICES hid one of three GPUs from nimctl: "all" would be all three in Docker.
    narrowed = replace(inventory, hidden=1)
    for request in ("all", None):
        spec = plan_run(
            model="qwen2.5-vl-7b-instruct", runtime="docker", gpus=request, cache_dir=tmp_path, inventory=narrowed
        )
        assert spec.gpus == GpuRequest("ids", ids=tuple(gpu.uuid or "" for gpu in gpus))
    # Without UUIDs (an assumed inventory) the request goes as typed.
    assumed = plan_run(
        model="qwen2.5-vl-7b-instruct", runtime="docker", gpus="device=1", cache_dir=tmp_path, inventory=TWO_H100
    )
    assert assumed.gpus == GpuRequest("ids", ids=("1",))


def test_env_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_HOST", "here")
    assert parse_env(["A=1", "B=x=y", "FROM_HOST"]) == {"A": "1", "B": "x=y", "FROM_HOST": "here"}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_env(["=1"])
    monkeypatch.delenv("MISSING_HERE", raising=False)
    with pytest.raises(UsageError, match="not set here"):
        parse_env(["MISSING_HERE"])


def test_names_and_restart_policies() -> None:
    assert check_name("my-nim_1.2") == "my-nim_1.2"
    for bad in ("-x", "a b", "x" * 64, ""):
        with pytest.raises(UsageError, match="bad instance name"):
            check_name(bad)
    assert check_restart("on-failure:3") == "on-failure:3"
    with pytest.raises(UsageError, match="bad --restart"):
        check_restart("sometimes")
    with pytest.raises(UsageError, match="needs the Docker runtime"):
        plan_run(model="tiny-vlm", runtime="local", restart="always", inventory=NO_GPU)


def test_tiny_vlm_on_a_cpu_machine(tmp_path: Path) -> None:
    spec = plan_run(model=None, runtime="docker", cache_dir=tmp_path, inventory=NO_GPU)
    assert spec.name == "nimctl-tiny-vlm"
    assert spec.device == "cpu"
    assert spec.image == default_image("cpu")
    assert spec.gpus.kind == "none"
    assert spec.shm_size == "1g"
    assert spec.env["NIM_MODEL_PATH"] == "builtin://tiny-vlm"
    assert spec.env["NIM_MODEL_PROFILE"] == spec.profile_id
    assert spec.profile_name == "vllm-fp32-tp1-pp1-cpu"
    assert spec.labels[MANAGED_LABEL] == "true"
    assert spec.labels["ai.nimctl.profile"] == spec.profile_id
    assert spec.url == "http://127.0.0.1:8000"


def test_prefer_latency_takes_more_gpus(tmp_path: Path) -> None:
    eight = parse_gpu_spec("H100-80GB:8")

    def chosen(prefer: str) -> str | None:
        model = "qwen2.5-vl-72b-instruct"
        return plan_run(model=model, runtime="docker", prefer=prefer, cache_dir=tmp_path, inventory=eight).profile_name

    assert chosen("throughput") == "vllm-fp8-tp2-pp1-h100"
    assert chosen("LATENCY") == "vllm-fp8-tp4-pp1-h100"
    with pytest.raises(UsageError, match="bad --prefer 'fast'"):
        chosen("fast")


def test_gpu_profile_gets_the_gpus_and_multi_gpu_gets_shared_memory(tmp_path: Path) -> None:
    single = plan_run(
        model="qwen2.5-vl-7b-instruct", runtime="docker", cache_dir=tmp_path, inventory=TWO_H100
    )
    assert single.device == "cuda"
    assert single.image == default_image("cuda")
    assert single.gpus.kind == "all"
    assert single.shm_size == "1g"
    pinned = plan_run(
        model="qwen2.5-vl-7b-instruct",
        runtime="docker",
        profile="vllm-bf16-tp2-pp1",
        cache_dir=tmp_path,
        inventory=TWO_H100,
    )
    assert pinned.profile_name == "vllm-bf16-tp2-pp1"
    assert pinned.shm_size == "16g"


def test_gpu_model_with_no_gpu_is_a_profile_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError):
        plan_run(model="qwen2.5-vl-7b-instruct", runtime="docker", cache_dir=tmp_path, inventory=NO_GPU)
    with pytest.raises(ProfileError):
        plan_run(
            model="qwen2.5-vl-7b-instruct",
            runtime="docker",
            gpus="none",
            cache_dir=tmp_path,
            inventory=TWO_H100,
        )


def test_unknown_model_and_profile(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no manifest for 'no-such-model'"):
        plan_run(model="no-such-model", runtime="docker", cache_dir=tmp_path, inventory=NO_GPU)
    with pytest.raises(ProfileError, match="'nope'"):
        plan_run(model="tiny-vlm", runtime="docker", profile="nope", cache_dir=tmp_path, inventory=NO_GPU)


def test_model_free_uri_and_local_folder(tmp_path: Path) -> None:
    free = plan_run(model="hf://org/some-model", runtime="docker", cache_dir=tmp_path, inventory=NO_GPU)
    assert free.profile_id is None and free.env["NIM_MODEL_PATH"] == "hf://org/some-model"
    assert "NIM_MODEL_PROFILE" not in free.env
    folder = tmp_path / "weights"
    folder.mkdir()
    local = plan_run(model=str(folder), runtime="docker", cache_dir=tmp_path, inventory=NO_GPU)
    assert local.env["NIM_MODEL_PATH"] == CONTAINER_MODEL
    assert [(m.source, m.target, m.read_only) for m in local.mounts] == [(folder, CONTAINER_MODEL, True)]
    assert local.name == "nimctl-weights"


def test_manifest_file_is_mounted_where_the_server_looks_first(tmp_path: Path) -> None:
    manifest = Path(__file__).resolve().parents[2] / "profiles" / "tiny-llm.yaml"
    spec = plan_run(model=str(manifest), runtime="docker", cache_dir=tmp_path, inventory=NO_GPU)
    assert spec.mounts[0].target == f"{USER_PROFILES}/tiny-llm.yaml"
    assert spec.env["NIMCTL_PROFILES_DIR"].startswith(USER_PROFILES + ":")
    local = plan_run(model=str(manifest), runtime="local", cache_dir=tmp_path, inventory=NO_GPU)
    assert local.mounts == [] and local.env["NIMCTL_PROFILES_DIR"] == str(manifest.parent)


def test_local_runtime_environment(tmp_path: Path) -> None:
    spec = plan_run(
        model="tiny-llm", runtime="local", port=8123, host="0.0.0.0", cache_dir=tmp_path, inventory=NO_GPU
    )
    assert spec.image is None
    assert spec.env["NIM_SERVER_PORT"] == "8123"
    assert spec.env["NIMCTL_SERVER_HOST"] == "0.0.0.0"
    assert spec.env["NIM_CACHE_PATH"] == str(tmp_path)
    assert spec.url == "http://127.0.0.1:8123"


def test_secrets_pass_through_and_are_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    spec = plan_run(
        model="tiny-vlm",
        runtime="docker",
        cache_dir=tmp_path,
        inventory=NO_GPU,
        env_pairs=["MY_API_KEY=k", "NIM_LOG_LEVEL=DEBUG"],
    )
    assert spec.env["HF_TOKEN"] == "hf_secret_value"
    line = docker_run_line(spec, detach=True)
    assert "hf_secret_value" not in line and "HF_TOKEN=***" in line
    assert "MY_API_KEY=***" in line and "NIM_LOG_LEVEL=DEBUG" in line


def test_bad_port(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="bad --port"):
        plan_run(model="tiny-vlm", runtime="docker", port=70000, cache_dir=tmp_path, inventory=NO_GPU)


def test_ipv6_hosts_are_bracketed(tmp_path: Path) -> None:
    spec = plan_run(model="tiny-vlm", runtime="docker", host="::1", cache_dir=tmp_path, inventory=NO_GPU)
    assert spec.url == "http://[::1]:8000"
    assert spec.labels["ai.nimctl.url"] == "http://[::1]:8000"
    assert "-p '[::1]:8000:8000'" in docker_run_line(spec, detach=True)
    # As people write it in URLs; the server binds the bare address.
    written = plan_run(model="tiny-vlm", runtime="local", host="[::1]", cache_dir=tmp_path, inventory=NO_GPU)
    assert written.host == "::1" and written.env["NIMCTL_SERVER_HOST"] == "::1"
    wildcard = plan_run(model="tiny-vlm", runtime="docker", host="::", cache_dir=tmp_path, inventory=NO_GPU)
    assert wildcard.url == "http://[::1]:8000"


def test_local_gpus_become_cuda_visible_devices(tmp_path: Path) -> None:
    gpus = tuple(
        replace(gpu, uuid=f"GPU-{index:08X}-AAAA-BBBB-CCCC-DDDDDDDDDDDD")
        for index, gpu in enumerate(TWO_H100.gpus)
    )
    inventory = replace(TWO_H100, gpus=gpus)

    def devices(request: str | None, model: str = "qwen2.5-vl-7b-instruct") -> str | None:
        spec = plan_run(model=model, runtime="local", gpus=request, cache_dir=tmp_path, inventory=inventory)
        return spec.env.get("CUDA_VISIBLE_DEVICES")

    # UUIDs, not indices: an index would be read against the caller's own CUDA_VISIBLE_DEVICES.
    assert devices("device=1") == gpus[1].uuid
    assert devices("1") == gpus[0].uuid  # a count: the first N
    assert devices("all") is None and devices(None) is None  # the caller's own visibility stays
    assert devices(None, model="tiny-vlm") == ""  # a CPU profile: no GPU, as in a container
    # Without UUIDs (an assumed inventory) the CUDA index is all there is.
    assumed = plan_run(
        model="qwen2.5-vl-7b-instruct",
        runtime="local",
        gpus="device=1",
        cache_dir=tmp_path,
        inventory=TWO_H100,
    )
    assert assumed.env["CUDA_VISIBLE_DEVICES"] == "1"
    # An explicit -e wins, and the Docker runtime gets device requests instead.
    explicit = plan_run(
        model="qwen2.5-vl-7b-instruct",
        runtime="local",
        gpus="1",
        env_pairs=["CUDA_VISIBLE_DEVICES=7"],
        cache_dir=tmp_path,
        inventory=inventory,
    )
    assert explicit.env["CUDA_VISIBLE_DEVICES"] == "7"
    container = plan_run(
        model="qwen2.5-vl-7b-instruct", runtime="docker", gpus="1", cache_dir=tmp_path, inventory=inventory
    )
    assert "CUDA_VISIBLE_DEVICES" not in container.env


def test_image_needs_docker(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--image needs the Docker runtime"):
        plan_run(model="tiny-vlm", runtime="local", image="x:1", cache_dir=tmp_path, inventory=NO_GPU)


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["--api-key", "sk-1", "--max-model-len", "512"], ["--api-key", "***", "--max-model-len", "512"]),
        (["--api-key=sk-1"], ["--api-key=***"]),
        (["--hf-token", "hf_1", "--enforce-eager"], ["--hf-token", "***", "--enforce-eager"]),
        # vLLM takes a flag's unambiguous start, and underscores for dashes.
        (["--hf-tok", "hf_2", "--hf-toke=hf_3", "--api_key", "k"], ["--hf-tok", "***", "--hf-toke=***", "--api_key", "***"]),
        # Not secrets: a key file's path, token counts, the tokenizer.
        (
            ["--ssl-keyfile", "k.pem", "--max-num-batched-tokens", "8", "--tokenizer", "t"],
            ["--ssl-keyfile", "k.pem", "--max-num-batched-tokens", "8", "--tokenizer", "t"],
        ),
    ],
)
def test_secret_engine_args_are_masked(args: list[str], shown: list[str]) -> None:
    assert masked_args(args) == shown


def test_masked_engine_args_in_both_dry_runs(tmp_path: Path) -> None:
    for runtime in ("docker", "local"):
        spec = plan_run(
            model="tiny-vlm",
            runtime=runtime,
            cache_dir=tmp_path,
            inventory=NO_GPU,
            engine_args=["--api-key", "sk-hidden"],
            env_pairs=["NIM_PASSTHROUGH_ARGS=--api-key sk-env --enforce-eager"],
        )
        line = docker_run_line(spec, detach=True) if runtime == "docker" else local_run_line(spec)
        assert "sk-hidden" not in line and "sk-env" not in line
        assert "--api-key '***'" in line and "--enforce-eager" in line
        assert spec.engine_args == ["--api-key", "sk-hidden"]  # masked in print only


def test_each_runtime_holds_the_placement_the_planner_uses() -> None:
    from nimctl.runtime.docker_runtime import DockerRuntime
    from nimctl.runtime.local_runtime import LocalRuntime
    from nimctl.runtime.placement import PLACEMENTS

    for runtime in (DockerRuntime, LocalRuntime):
        assert type(runtime.placement) is type(PLACEMENTS[runtime.kind])
        assert runtime.placement.runtime == runtime.kind
