"""GPU readings for ps and top (nimctl.gpu.readings) through a fake NVML module, and which GPU
processes are an instance's (nimctl.runtime.live)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nimctl.gpu.readings import GpuProcess, Readings, read_readings
from nimctl.runtime.instances import Instance
from nimctl.runtime.live import InstanceSample, Sample, figures, in_container, instance_pids
from tests.gpu.fake_nvml import (
    FakeDevice,
    FakeNvml,
    NVMLError_LibraryNotFound,
    NVMLError_NotSupported,
    h100,
    l4,
)

MIB = 2**20


@dataclass
class LiveNvml(FakeNvml):
    """The fake NVML plus what top reads: temperature, power and the compute processes."""

    temperatures: dict[str, int] = field(default_factory=dict)
    power_mw: dict[str, int] = field(default_factory=dict)
    processes: dict[str, list[tuple[int, int | None]]] = field(default_factory=dict)

    def nvmlDeviceGetTemperature(self, handle: FakeDevice, sensor: int) -> int:  # noqa: N802
        assert sensor == 0  # NVML_TEMPERATURE_GPU
        if handle.uuid not in self.temperatures:
            raise NVMLError_NotSupported("Not Supported")
        return self.temperatures[handle.uuid]

    def nvmlDeviceGetPowerUsage(self, handle: FakeDevice) -> int:  # noqa: N802
        if handle.uuid not in self.power_mw:
            raise NVMLError_NotSupported("Not Supported")
        return self.power_mw[handle.uuid]

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeDevice) -> int:  # noqa: N802
        return 700_000

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeDevice) -> list[Any]:  # noqa: N802
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.processes.get(handle.uuid, [])
        ]


def two_gpus() -> LiveNvml:
    first, second = h100(used_mib=3000), l4(used_mib=1000)
    return LiveNvml(
        devices=[first, second],
        temperatures={first.uuid: 41},
        power_mw={first.uuid: 123_456},
        processes={
            first.uuid: [(100, 2000 * MIB), (200, 1000 * MIB)],
            second.uuid: [(101, 900 * MIB), (300, None)],
        },
    )


def test_readings_of_each_visible_gpu() -> None:
    readings = read_readings(two_gpus(), environ={})
    assert readings.reason is None
    first, second = readings.gpus
    assert (first.index, first.name, first.utilization_pct) == (0, "NVIDIA H100 80GB HBM3", 3)
    assert (first.memory_used, first.memory_total) == (3000 * MIB, 81559 * MIB)
    assert (first.temperature_c, first.power_w, first.power_limit_w) == (41, 123.456, 700.0)
    assert first.processes == (GpuProcess(100, 2000 * MIB), GpuProcess(200, 1000 * MIB))
    # What the L4 does not report is None, not a failure.
    assert (second.utilization_pct, second.temperature_c, second.power_w) == (None, None, None)
    assert second.processes[1] == GpuProcess(300, None)
    assert first.to_dict()["memory_used_mib"] == 3000


def test_visibility_is_the_inventorys() -> None:
    readings = read_readings(two_gpus(), environ={"CUDA_VISIBLE_DEVICES": "1"})
    [only] = readings.gpus
    assert (only.index, only.name) == (0, "NVIDIA L4")
    assert read_readings(two_gpus(), environ={"CUDA_VISIBLE_DEVICES": ""}).gpus == ()


def test_no_driver_is_a_reason_not_an_error() -> None:
    readings = read_readings(LiveNvml(init_error=NVMLError_LibraryNotFound("x")), environ={})
    assert readings.gpus == () and readings.reason == "NVIDIA driver library (libnvidia-ml) not found"
    assert read_readings(LiveNvml(devices=[]), environ={}).reason == "no NVIDIA GPU found"


def test_memory_of_an_instance_per_gpu() -> None:
    readings = read_readings(two_gpus(), environ={})
    assert readings.memory_of({100, 101}) == [
        {"index": 0, "uuid": "GPU-11111111-aaaa", "used_mib": 2000},
        {"index": 1, "uuid": "GPU-22222222-bbbb", "used_mib": 900},
    ]
    assert readings.memory_of({300}) == [{"index": 1, "uuid": "GPU-22222222-bbbb", "used_mib": 0}]
    assert readings.memory_of({999}) == []


def test_a_local_instances_pids_are_its_process_tree() -> None:
    import os

    me = Instance("a", "local", "m", None, None, "running", None, "http://x:1", None, str(os.getpid()))
    assert instance_pids(me, {os.getpid(), 1}) == {os.getpid()}


def test_a_containers_pids_are_found_by_cgroup(tmp_path: Path) -> None:
    container = "0123456789ab" + "c" * 52
    for pid, cgroup in {
        10: f"0::/system.slice/docker-{container}.scope\n",  # cgroup v2, systemd driver
        11: f"12:memory:/docker/{container}\n1:name=systemd:/docker/{container}\n",  # v1, cgroupfs
        12: "0::/user.slice/user-1000.slice\n",
        13: f"0::/system.slice/docker-{'f' * 64}.scope\n",
    }.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cgroup").write_text(cgroup)
    found = {pid for pid in (10, 11, 12, 13, 14) if in_container(pid, container[:12], proc=tmp_path)}
    assert found == {10, 11}


def test_ps_figures_carry_the_gpu_memory() -> None:
    readings = read_readings(two_gpus(), environ={})
    instance = Instance("a", "local", "m", None, None, "running", None, "http://x:1", None, "1")
    taken = Sample(0.0, {"a": InstanceSample("a", 0.0, error="timeout")}, readings, {"a": {200}})
    live = figures(instance, taken)
    assert live.gpu_memory == [{"index": 0, "uuid": "GPU-11111111-aaaa", "used_mib": 1000}]
    assert live.live_error == "timeout"
    no_gpu = Sample(0.0, {"a": InstanceSample("a", 0.0, error="timeout")}, Readings(reason="none"))
    assert figures(instance, no_gpu).gpu_memory is None


def test_a_hung_nvml_read_is_not_started_again_by_the_next_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from nimctl.gpu import readings as readings_module
    from nimctl.runtime.live import sample

    release, calls = threading.Event(), []

    def hung_read() -> Readings:
        calls.append(1)
        release.wait(10)
        return Readings(gpus=(), reason="released")

    monkeypatch.setattr(readings_module, "read_readings", hung_read)
    try:
        first = sample([], deadline=0.1, gpus=True)
        second = sample([], deadline=0.1, gpus=True)  # the first read still hangs: not asked again
        assert first.readings is None and second.readings is None and calls == [1]
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while len(calls) < 2:  # once the hung read has ended, the next frame reads again
        assert time.monotonic() < deadline
        sample([], deadline=0.5, gpus=True)
    assert len(calls) == 2
