"""Each item of doctor on a machine built to fail it: the verdict and the hint.

The library is driven with its probes (a fake NVML, the daemon's address, /dev/shm's path, the
clock, the user); disks, sockets and ports are real ones made to fail (a mounted tmpfs, a socket
nothing answers on, a port something listens on).
"""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nimctl.doctor import Request, Verdict, run_doctor
from nimctl.doctor.gpu import driver_check, toolkit_check
from nimctl.doctor.host import RELEASE_DATE, clock_check
from nimctl.doctor.probes import DaemonState
from nimctl.doctor.target import plan
from tests.doctor.conftest import probes
from tests.gpu.fake_nvml import FakeNvml, h100

GPU_MODEL = "qwen2.5-vl-7b-instruct"  # an H100 runs its fp8 profile on one GPU


def no_gpu() -> FakeNvml:
    return FakeNvml(devices=[])


# -- driver and CUDA ---------------------------------------------------------------------------


def test_an_old_driver_fails_against_the_cuda_image(env: dict[str, str]) -> None:
    machine = probes(env, nvml=FakeNvml(devices=[h100()], cuda=12040))
    report = run_doctor(Request(model=GPU_MODEL, runtime="docker"), machine)
    driver = report.check("driver")
    assert driver.verdict is Verdict.fail
    assert "supports CUDA 12.4" in driver.detail and "needs CUDA 13.0" in driver.detail
    assert "580" in (driver.hint or "") and "--base-image" in (driver.hint or "")
    assert driver.data["driver_cuda"] == "12.4"


def test_a_new_enough_driver_is_ok(env: dict[str, str]) -> None:
    machine = probes(env, nvml=FakeNvml(devices=[h100()], cuda=13000))
    driver = run_doctor(Request(model=GPU_MODEL, runtime="docker"), machine).check("driver")
    assert driver.verdict is Verdict.ok, driver


def test_an_older_minor_version_warns(env: dict[str, str]) -> None:
    target = plan(
        Request(model=GPU_MODEL, runtime="docker"),
        probes(env, nvml=FakeNvml(devices=[h100()], cuda=12040)),
        DaemonState("unix:///nowhere", error="x"),
    )
    check = driver_check(target, "12.8.1", "image nimctl/nim-cuda:test")
    assert check.verdict is Verdict.warn and "minor-version" in check.detail
    assert "CUDA 12.8.1" in (check.hint or "")


def test_a_gpu_profile_without_a_driver_fails(env: dict[str, str]) -> None:
    # Profiles judged on an assumed H100, but NVML finds nothing here.
    report = run_doctor(
        Request(model=GPU_MODEL, runtime="docker", assume_gpus="H100-80GB:1"), probes(env, nvml=no_gpu())
    )
    driver = report.check("driver")
    assert driver.verdict is Verdict.fail and "NVML finds none" in driver.detail
    assert "install the NVIDIA driver" in (driver.hint or "")


def test_the_cpu_image_needs_no_driver(env: dict[str, str]) -> None:
    report = run_doctor(Request(model="tiny-vlm", runtime="docker"), probes(env, nvml=no_gpu()))
    driver = report.check("driver")
    assert driver.verdict is Verdict.skip and "needs no driver" in driver.detail
    assert report.check("toolkit").verdict is Verdict.skip


# -- container toolkit / CDI -------------------------------------------------------------------


def _gpu_target(env: dict[str, str]) -> Any:
    return plan(
        Request(model=GPU_MODEL, runtime="docker"),
        probes(env, nvml=FakeNvml(devices=[h100()], cuda=13000)),
        DaemonState("tcp://remote:2375", error="x"),  # a remote daemon: the local hook is not its
    )


def test_no_nvidia_runtime_nor_cdi_fails(env: dict[str, str], tmp_path: Path) -> None:
    daemon = DaemonState("tcp://remote:2375", info={"Runtimes": {"runc": {}}, "CDISpecDirs": [str(tmp_path)]})
    check = toolkit_check(_gpu_target(env), daemon)
    assert check.verdict is Verdict.fail and "cannot give a container GPUs" in check.detail
    assert "nvidia-ctk" in (check.hint or "")


def test_the_nvidia_runtime_or_a_cdi_spec_is_ok(env: dict[str, str], tmp_path: Path) -> None:
    target = _gpu_target(env)
    runtime = DaemonState("tcp://remote:2375", info={"Runtimes": {"runc": {}, "nvidia": {}}})
    assert toolkit_check(target, runtime).verdict is Verdict.ok
    (tmp_path / "nvidia.yaml").write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: []\n")
    cdi = DaemonState("tcp://remote:2375", info={"Runtimes": {"runc": {}}, "CDISpecDirs": [str(tmp_path)]})
    check = toolkit_check(target, cdi)
    assert check.verdict is Verdict.ok and "nvidia.yaml" in check.detail


# -- the Docker daemon -------------------------------------------------------------------------


def test_a_closed_daemon_socket_fails_docker_and_is_quick(env: dict[str, str], closed_socket: str) -> None:
    machine = probes({**env, "DOCKER_HOST": closed_socket}, nvml=no_gpu())
    started = time.monotonic()
    report = run_doctor(Request(model="tiny-vlm", runtime="docker"), machine)
    assert time.monotonic() - started < 10
    docker = report.check("docker")
    assert docker.verdict is Verdict.fail and "Connection refused" in docker.detail
    assert "start Docker" in (docker.hint or "") and "--runtime local" in (docker.hint or "")
    assert report.check("image").verdict is Verdict.skip
    assert not report.ok


def test_with_auto_a_missing_daemon_only_warns(env: dict[str, str]) -> None:
    report = run_doctor(Request(model="tiny-vlm"), probes(env, nvml=no_gpu()))
    docker = report.check("docker")
    assert docker.verdict is Verdict.warn and "falls back to a host process" in docker.detail
    assert report.runtime == "local"


def test_a_daemon_that_never_answers_is_bounded(env: dict[str, str], silent_socket: str) -> None:
    machine = probes({**env, "DOCKER_HOST": silent_socket}, nvml=no_gpu(), docker_timeout=1.0)
    started = time.monotonic()
    docker = run_doctor(Request(model="tiny-vlm", runtime="docker"), machine).check("docker")
    assert time.monotonic() - started < 8
    assert docker.verdict is Verdict.fail, docker


def test_a_socket_this_user_may_not_use(env: dict[str, str], closed_socket: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving the socket another group needs root")
    path = Path(closed_socket.removeprefix("unix://"))
    os.chown(path, 0, 4242)
    path.chmod(0o660)
    machine = probes({**env, "DOCKER_HOST": closed_socket}, nvml=no_gpu(), uid=1000, gids=(1000,))
    docker = run_doctor(Request(model="tiny-vlm", runtime="docker"), machine).check("docker")
    assert docker.verdict is Verdict.fail and "refuses this user" in docker.detail
    assert "4242 group" in (docker.hint or "") and "log in again" in (docker.hint or "")
    in_group = probes({**env, "DOCKER_HOST": closed_socket}, nvml=no_gpu(), uid=1000, gids=(1000, 4242))
    docker = run_doctor(Request(model="tiny-vlm", runtime="docker"), in_group).check("docker")
    assert "refuses" not in docker.detail and "Connection refused" in docker.detail


# -- disk, /dev/shm, port ----------------------------------------------------------------------


def test_a_full_cache_fails_disk(env: dict[str, str], small_fs: Any) -> None:
    cache = small_fs("1m")
    machine = probes(env, nvml=no_gpu())
    disk = run_doctor(Request(model="tiny-vlm", cache=cache, runtime="local"), machine).check("disk")
    assert disk.verdict is Verdict.fail, disk
    assert "1.0 MB free" in disk.detail or "kB free" in disk.detail
    assert "nimctl cache prune" in (disk.hint or "") and "--cache" in (disk.hint or "")
    assert disk.data["needed_bytes"] > 0 and disk.data["free_bytes"] < 2**20 + 1
    machine_only = run_doctor(Request(cache=cache, runtime="local"), machine).check("disk")
    assert machine_only.verdict is Verdict.fail and "too little" in machine_only.detail


def test_a_big_model_on_a_small_disk(env: dict[str, str], small_fs: Any) -> None:
    cache = small_fs("64m")
    machine = probes(env, nvml=FakeNvml(devices=[h100()], cuda=13000))
    disk = run_doctor(Request(model=GPU_MODEL, cache=cache, runtime="local"), machine).check("disk")
    assert disk.verdict is Verdict.fail and "16.6 GB" in disk.detail


def test_offline_and_not_cached_fails_disk(env: dict[str, str], tmp_path: Path) -> None:
    machine = probes(env, nvml=FakeNvml(devices=[h100()], cuda=13000))
    request = Request(model=GPU_MODEL, cache=tmp_path / "cache", runtime="local", offline=True)
    disk = run_doctor(request, machine).check("disk")
    assert (
        disk.verdict is Verdict.fail
        and "an offline run" in disk.detail
        and "nimctl pull" in (disk.hint or "")
    )


def test_a_small_dev_shm_fails_for_a_host_process(env: dict[str, str], small_fs: Any) -> None:
    shm = small_fs("1m")
    machine = probes(env, nvml=no_gpu(), shm_path=shm)
    check = run_doctor(Request(model="tiny-vlm", runtime="local"), machine).check("shm")
    assert check.verdict is Verdict.fail and "the run wants 1g" in check.detail
    assert f"remount,size=1G {shm}" in (check.hint or "")


def test_a_container_gets_its_own_shm(env: dict[str, str], small_fs: Any) -> None:
    shm = small_fs("1m")
    machine = probes(env, nvml=no_gpu(), shm_path=shm)
    check = run_doctor(Request(model="tiny-vlm", runtime="docker"), machine).check("shm")
    assert check.verdict is Verdict.ok and "--shm-size 1g" in check.detail


def test_a_taken_port_fails(env: dict[str, str], taken_port: int) -> None:
    machine = probes(env, nvml=no_gpu())
    check = run_doctor(Request(model="tiny-vlm", port=taken_port, runtime="local"), machine).check("port")
    assert check.verdict is Verdict.fail and f"127.0.0.1:{taken_port} is in use" in check.detail
    suggested = check.data["suggested_port"]
    assert suggested and check.hint == f"pass --port {suggested}"


def test_a_free_port_is_ok(env: dict[str, str], free_port: int) -> None:
    check = run_doctor(Request(port=free_port, runtime="local"), probes(env, nvml=no_gpu())).check("port")
    assert check.verdict is Verdict.ok


# -- profile, credentials ----------------------------------------------------------------------


def test_no_runnable_profile_fails_with_the_reason(env: dict[str, str]) -> None:
    machine = probes(env, nvml=no_gpu())
    report = run_doctor(
        Request(model="qwen2.5-vl-72b-instruct", assume_gpus="L4:1", runtime="local"), machine
    )
    profile = report.check("profile")
    assert profile.verdict is Verdict.fail and "L4" in profile.detail
    assert profile.hint
    # What depends on the profile cannot be judged; the rest still is.
    assert report.check("shm").verdict is Verdict.skip
    assert report.check("driver").verdict is Verdict.skip
    assert report.check("port").verdict is Verdict.ok


def test_the_profile_says_why_it_was_chosen(env: dict[str, str]) -> None:
    profile = run_doctor(Request(model="tiny-vlm", runtime="local"), probes(env, nvml=no_gpu())).check(
        "profile"
    )
    assert profile.verdict is Verdict.ok and "the only runnable profile" in profile.detail
    assert profile.data["profile_name"] == "vllm-fp32-tp1-pp1-cpu"


def test_a_hub_model_without_a_token_warns(env: dict[str, str], tmp_path: Path) -> None:
    request = Request(model="hf://some-org/some-model", cache=tmp_path / "cache", runtime="local")
    check = run_doctor(request, probes(env, nvml=no_gpu())).check("credentials")
    assert check.verdict is Verdict.warn and "no HF_TOKEN" in check.detail
    assert "export HF_TOKEN" in (check.hint or "")
    with_token = run_doctor(request, probes({**env, "HF_TOKEN": "hf_x"}, nvml=no_gpu())).check("credentials")
    assert with_token.verdict is Verdict.ok and "HF_TOKEN" in with_token.detail


def test_a_builtin_model_needs_no_credentials(env: dict[str, str]) -> None:
    check = run_doctor(Request(model="tiny-vlm", runtime="local"), probes(env, nvml=no_gpu())).check(
        "credentials"
    )
    assert check.verdict is Verdict.ok and "no credentials needed" in check.detail


def test_without_a_model_the_model_items_are_skipped(env: dict[str, str]) -> None:
    report = run_doctor(Request(runtime="local"), probes(env, nvml=no_gpu()))
    assert report.model is None
    assert report.check("profile").verdict is Verdict.skip
    assert report.check("credentials").verdict is Verdict.skip
    assert report.check("shm").data["needed_bytes"] == 2**30


# -- clock -------------------------------------------------------------------------------------


def test_a_clock_before_the_release_fails(env: dict[str, str]) -> None:
    machine = probes(env, nvml=no_gpu(), clock=lambda: datetime(2020, 1, 1, tzinfo=UTC))
    check = run_doctor(Request(runtime="local"), machine).check("clock")
    assert (
        check.verdict is Verdict.fail and "2020-01-01" in check.detail and "timedatectl" in (check.hint or "")
    )


def test_a_daemon_clock_far_off_warns(env: dict[str, str]) -> None:
    now = RELEASE_DATE + timedelta(days=3)
    ahead = (now + timedelta(seconds=42)).strftime("%Y-%m-%dT%H:%M:%S.123456789Z")
    daemon = DaemonState("unix:///x", info={"SystemTime": ahead}, asked_at=now)
    check = clock_check(probes(env, clock=lambda: now), daemon)
    assert check.verdict is Verdict.warn and "42 s ahead" in check.detail and "NTP" in (check.hint or "")
    close = DaemonState("unix:///x", info={"SystemTime": now.isoformat()}, asked_at=now)
    assert clock_check(probes(env, clock=lambda: now), close).verdict is Verdict.ok


def test_a_failing_probe_is_a_warning_not_a_crash(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any) -> Any:
        raise OSError("statvfs exploded")

    monkeypatch.setattr(socket, "socket", broken)
    check = run_doctor(Request(runtime="local"), probes(env, nvml=no_gpu())).check("port")
    assert check.verdict is Verdict.warn and "could not check" in check.detail


# -- image (a real daemon) ---------------------------------------------------------------------


@pytest.mark.docker
def test_an_image_that_is_not_here_fails(env: dict[str, str]) -> None:
    from nimctl.runtime.docker_client import probe_daemon

    if probe_daemon() is not None:
        pytest.skip("no Docker daemon answers (start one with scripts/ensure-docker.sh)")
    real = {**env, "DOCKER_HOST": os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"}
    request = Request(model="tiny-vlm", runtime="docker", image="nimctl/no-such-image:never")
    image = run_doctor(request, probes(real, nvml=no_gpu())).check("image")
    assert image.verdict is Verdict.fail and "is not here" in image.detail
    assert "leave --image out" in (image.hint or "")
    default = run_doctor(Request(model="tiny-vlm", runtime="docker"), probes(real, nvml=no_gpu())).check(
        "image"
    )
    assert default.verdict in {Verdict.ok, Verdict.warn}
    assert default.data["image"].startswith("nimctl/nim-cpu:")


def test_an_offline_variable_counts_as_offline(env: dict[str, str], tmp_path: Path) -> None:
    machine = probes(env, nvml=FakeNvml(devices=[h100()], cuda=13000))
    request = Request(
        model=GPU_MODEL, cache=tmp_path / "cache", runtime="local", env=("NIM_DISABLE_MODEL_DOWNLOAD=1",)
    )
    report = run_doctor(request, machine)
    assert report.check("disk").verdict is Verdict.fail
    assert report.check("credentials").verdict is Verdict.ok


# -- a host process: this environment's engine -------------------------------------------------


def test_a_host_process_without_vllm_fails(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nimctl.doctor.docker.local_engine", lambda: None)
    image = run_doctor(Request(model="tiny-vlm", runtime="local"), probes(env, nvml=no_gpu())).check("image")
    assert image.verdict is Verdict.fail and "vLLM is not installed" in image.detail
    assert "nimctl[cpu]" in (image.hint or "")


def test_a_host_process_with_vllm_is_ok(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nimctl.doctor.docker.local_engine", lambda: "vllm 0.32.0")
    image = run_doctor(Request(model="tiny-vlm", runtime="local"), probes(env, nvml=no_gpu())).check("image")
    assert image.verdict is Verdict.ok and "vllm 0.32.0" in image.detail


def test_a_gpu_run_on_a_cpu_torch_fails(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "2.13.0+cpu" if name == "torch" else real(name))
    machine = probes(env, nvml=FakeNvml(devices=[h100()], cuda=13000))
    driver = run_doctor(Request(model=GPU_MODEL, runtime="local"), machine).check("driver")
    assert driver.verdict is Verdict.fail and "torch 2.13.0+cpu" in driver.detail
    assert "--runtime docker" in (driver.hint or "")
    monkeypatch.setattr(metadata, "version", lambda name: "2.9.0+cu128" if name == "torch" else real(name))
    driver = run_doctor(Request(model=GPU_MODEL, runtime="local"), machine).check("driver")
    assert driver.verdict is Verdict.ok and "needs CUDA 12.8" in driver.detail
