"""``nimctl bench MODEL --profiles``'s library: which profiles, and each one started, benched and stopped.

The engine test runs the real tiny VLM as a local instance (the CPU machine's one runnable
profile); the failure paths run tests/runtime/fake_nim_serve.py as nim-serve, a real host process
that fails to start, never gets ready, or is ready but serves no model.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from nimctl.bench.profile_sweep import plan_profiles, sweep_profiles
from nimctl.bench.workload import Workload
from nimctl.errors import ProfileError, UsageError
from nimctl.profiles import find_manifest
from nimctl.runtime import local_runtime
from nimctl.runtime.manage import list_instances

FAKE = Path(__file__).resolve().parents[1] / "runtime" / "fake_nim_serve.py"
TINY_VLM_CPU = "6a451bce28f32fc874a074b68f802abc7f810bbba8316ba70b8584af5eb48ea5"
QWEN = "qwen2.5-vl-7b-instruct"


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A CPU machine with state of its own and no Docker to ask; returns the state folder."""
    monkeypatch.setenv("NIMCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NIMCTL_ASSUME_GPUS", "none")
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")  # nothing listens there
    return tmp_path / "state"


# -- plan_profiles ------------------------------------------------------------------------------


def test_all_on_a_cpu_machine_is_the_one_cpu_profile(machine: Path) -> None:
    profiles, note = plan_profiles("tiny-vlm", "all", runtime="local")
    assert profiles == [(TINY_VLM_CPU, "vllm-fp32-tp1-pp1-cpu")]
    assert note == "only one profile can run on this machine: vllm-fp32-tp1-pp1-cpu (6a451bce28f3)"


def test_all_leaves_lora_profiles_out_and_naming_one_is_refused(machine: Path) -> None:
    manifest = find_manifest("tiny-llm")
    [lora] = [profile for profile in manifest.profiles if profile.lora]
    profiles, note = plan_profiles("tiny-llm", "ALL")
    assert [name for _, name in profiles] == ["vllm-fp32-tp1-pp1-cpu"] and note is not None
    with pytest.raises(UsageError, match="is a LoRA profile") as caught:
        plan_profiles("tiny-llm", lora.name)
    assert (
        caught.value.hint is not None
        and "runnable here: vllm-fp32-tp1-pp1-cpu (4ce32854ec6e)" in caught.value.hint
    )


def test_ids_prefixes_and_names_in_the_order_given(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIMCTL_ASSUME_GPUS", "H100-SXM-80GB:2")
    manifest = find_manifest(QWEN)
    by_name = {profile.name: profile.id for profile in manifest.profiles}
    which = f"vllm-bf16-tp2-pp1,{by_name['vllm-fp8-tp1-pp1'][:8]},{by_name['vllm-fp8-tp2-pp1']}"
    profiles, note = plan_profiles(QWEN, which)
    assert [name for _, name in profiles] == ["vllm-bf16-tp2-pp1", "vllm-fp8-tp1-pp1", "vllm-fp8-tp2-pp1"]
    assert all(by_name[name] == profile_id for profile_id, name in profiles)
    assert note is None  # five can run here
    every, _ = plan_profiles(QWEN, "all")
    # In the automatic choice's order, which takes the first: the GPU-specific fp8 one here.
    assert next(name for _, name in every) == "vllm-fp8-tp1-pp1-h100" and len(every) == 5
    assert "vllm-bf16-tp1-pp1-lora" not in [name for _, name in every]


def test_unknown_profile_is_a_usage_error_listing_the_runnable_ones(machine: Path) -> None:
    with pytest.raises(UsageError, match="no profile 'fp4-nonesuch' in the tiny-vlm manifest") as caught:
        plan_profiles("tiny-vlm", "fp4-nonesuch")
    assert (
        caught.value.hint is not None
        and "runnable here: vllm-fp32-tp1-pp1-cpu (6a451bce28f3)" in caught.value.hint
    )


@pytest.mark.parametrize("which", ["vllm-fp32-tp1-pp1-cpu,6a451bce28f3", f"{TINY_VLM_CPU},{TINY_VLM_CPU}"])
def test_a_profile_named_twice_is_refused(machine: Path, which: str) -> None:
    with pytest.raises(UsageError, match=r"names vllm-fp32-tp1-pp1-cpu \(6a451bce28f3\) twice"):
        plan_profiles("tiny-vlm", which)


@pytest.mark.parametrize("which", ["", " , ", "vllm-fp32-tp1-pp1-cpu,", "all,vllm-fp32-tp1-pp1-cpu"])
def test_malformed_lists_are_refused(machine: Path, which: str) -> None:
    with pytest.raises(UsageError, match="--profiles"):
        plan_profiles("tiny-vlm", which)


def test_a_profile_that_cannot_run_here_is_a_profile_error_with_the_reason(machine: Path) -> None:
    with pytest.raises(ProfileError, match=r"vllm-fp8-tp1-pp1 \(\w{12}\) cannot run here: needs 1 CUDA GPU"):
        plan_profiles(QWEN, "vllm-fp8-tp1-pp1")
    with pytest.raises(ProfileError, match=f"no runnable profile for {QWEN}") as caught:
        plan_profiles(QWEN, "all")
    assert caught.value.hint is not None and caught.value.hint.startswith("closest: ")


def test_bad_runtime_and_a_model_without_profiles(machine: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="bad --runtime 'podman'"):
        plan_profiles("tiny-vlm", "all", runtime="podman")
    folder = tmp_path / "my-model"
    folder.mkdir()
    with pytest.raises(UsageError, match="has no manifest, so no profiles"):
        plan_profiles(str(folder), "all")


# -- sweep_profiles with a stand-in nim-serve ---------------------------------------------------

WORKLOAD = Workload((1, 2), 16, 8, requests=2, request_timeout_s=120)


@pytest.fixture
def fake_serve(machine: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Local instances run tests/runtime/fake_nim_serve.py; FAKE_NIM_MODE reaches it through the environment."""
    monkeypatch.setattr(local_runtime, "_serve_command", lambda: [sys.executable, str(FAKE)])
    monkeypatch.setenv("NIMCTL_ASSUME_GPUS", "H100-SXM-80GB:2")  # five runnable profiles
    return monkeypatch


def _two() -> list[tuple[str, str]]:
    profiles, _ = plan_profiles(QWEN, "vllm-fp8-tp1-pp1,vllm-bf16-tp1-pp1", runtime="local")
    return profiles


def _nothing_left() -> None:
    instances, _ = list_instances(all_states=True, readiness=False)
    assert instances == []


def test_a_failed_start_is_recorded_and_the_next_profile_goes_on(
    fake_serve: pytest.MonkeyPatch, tmp_path: Path, machine: Path
) -> None:
    fake_serve.setenv("FAKE_NIM_MODE", "exit")
    lines: list[str] = []
    sweep = sweep_profiles(
        QWEN, _two(), WORKLOAD, runtime="local", on_status=lines.append, timeout_s=60, cache_dir=tmp_path
    )
    assert not sweep.interrupted and sweep.runtime == "local"
    assert [run.profile_name for run in sweep.runs] == ["vllm-fp8-tp1-pp1", "vllm-bf16-tp1-pp1"]
    for run in sweep.runs:
        assert run.result is None and run.started_s is None
        assert run.error is not None and "exited with code 3 while starting" in run.error
        # The log goes with the instance: its last lines are kept in the run.
        assert "fatal: the engine could not start" in run.log_tail
        assert run.instance == f"nimctl-bench-{QWEN}" and run.engine_args[:1] == ["--dtype"]
    assert lines[0].startswith("vllm-fp8-tp1-pp1 [") and lines[0].endswith(": starting (local)")
    steps = [line.split("]: ", 1)[1] for line in lines]
    assert steps[0::4] == ["starting (local)"] * 2 and steps[2::4] == ["stopping"] * 2
    assert steps[3::4] == ["stopped"] * 2 and "exited with code 3" in steps[1] and len(steps) == 8
    _nothing_left()
    assert not (machine / "credentials" / f"nimctl-bench-{QWEN}").exists()


def test_a_server_that_serves_no_model_is_recorded_and_stopped(
    fake_serve: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_serve.setenv("FAKE_NIM_MODE", "ok")  # ready, but answers 404 to /v1/models
    pids: list[int] = []

    def on_status(line: str) -> None:
        if "ready after" in line:
            instances, _ = list_instances(readiness=False)
            pids.extend(int(instance.ident) for instance in instances)

    sweep = sweep_profiles(QWEN, _two(), WORKLOAD, runtime="local", on_status=on_status, cache_dir=tmp_path)
    assert len(pids) == 2, "each profile's instance was running once ready"
    for run in sweep.runs:
        assert run.started_s is not None and run.started_s >= 0
        assert run.result is None and run.error is not None and "404" in run.error
    _nothing_left()
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids
    )


def test_a_start_that_times_out_is_recorded(fake_serve: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_serve.setenv("FAKE_NIM_MODE", "never-ready")
    profiles = _two()[:1]
    sweep = sweep_profiles(QWEN, profiles, WORKLOAD, runtime="local", timeout_s=2, cache_dir=tmp_path)
    [run] = sweep.runs
    assert run.error is not None and "not ready after 2s" in run.error
    _nothing_left()


def _raise_interrupt() -> None:
    raise KeyboardInterrupt  # where Python's SIGINT handler would raise it


@pytest.mark.parametrize(
    ("when", "signal_it"),
    [
        ("ready after", _raise_interrupt),
        ("ready after", lambda: os.kill(os.getpid(), signal.SIGTERM)),
        # While stopping, a signal is only noted: the stop finishes, then the sweep ends.
        ("stopping", lambda: os.kill(os.getpid(), signal.SIGHUP)),
    ],
    ids=["ctrl-c-once-ready", "sigterm-once-ready", "sighup-while-stopping"],
)
def test_an_interrupt_stops_the_instance_and_ends_the_sweep(
    fake_serve: pytest.MonkeyPatch, tmp_path: Path, when: str, signal_it: Callable[[], None]
) -> None:
    """The first instance is stopped, the second never starts, nothing is raised, the handlers are restored."""
    fake_serve.setenv("FAKE_NIM_MODE", "ok")
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    lines: list[str] = []

    def on_status(line: str) -> None:
        lines.append(line)
        if f": {when}" in line:
            signal_it()

    sweep = sweep_profiles(QWEN, _two(), WORKLOAD, runtime="local", on_status=on_status, cache_dir=tmp_path)
    assert sweep.interrupted
    [run] = sweep.runs
    assert run.started_s is not None and run.error is not None
    assert (run.error == "interrupted") if when == "ready after" else ("404" in run.error)
    label = lines[0].split("]: ")[0] + "]"
    assert lines[-2:] == [f"{label}: stopping", f"{label}: stopped"]
    _nothing_left()
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers


# -- the real engine ----------------------------------------------------------------------------


@pytest.mark.engine
def test_profiles_all_on_the_cpu_machine_benches_its_one_profile(machine: Path, model_cache: Path) -> None:
    profiles, note = plan_profiles("tiny-vlm", "all", runtime="local")
    running: list[psutil.Process] = []

    def on_status(line: str) -> None:
        if "ready after" in line:
            instances, _ = list_instances(readiness=False)
            [instance] = instances
            assert instance.profile_id == TINY_VLM_CPU and instance.runtime == "local"
            launcher = psutil.Process(int(instance.ident))
            running.extend([launcher, *launcher.children(recursive=True)])

    sweep = sweep_profiles(
        "tiny-vlm",
        profiles,
        WORKLOAD,
        runtime="local",
        on_status=on_status,
        timeout_s=900,
        cache_dir=model_cache,
        note=note,
    )
    assert sweep.note == "only one profile can run on this machine: vllm-fp32-tp1-pp1-cpu (6a451bce28f3)"
    assert not sweep.interrupted
    [run] = sweep.runs
    assert run.error is None and run.profile_id == TINY_VLM_CPU
    assert run.started_s is not None and run.started_s > 0 and run.server_version
    result = run.result
    assert result is not None and not result.stopped_early and result.model == "tiny-vlm"
    assert [level.stats.concurrency for level in result.levels] == [1, 2]
    for level in result.levels:
        stats = level.stats
        assert (stats.requests, stats.ok, stats.errors) == (2, 2, {})
        assert (stats.input_tokens, stats.output_tokens) == (16 * 2, 8 * 2)
    assert result.workload.input_tokens == 16 and result.workload.output_tokens == 8
    assert run.to_dict()["results"]["levels"][0]["concurrency"] == 1
    # Nothing it started is left: no instance, no process, no key.
    assert running, "the instance's processes were seen while it ran"
    _nothing_left()
    survivors = [p for p in running if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert survivors == []
    assert run.instance == "nimctl-bench-tiny-vlm" and not (machine / "credentials" / run.instance).exists()
