"""What the GPUs are doing now, through NVML: utilisation, memory, temperature, power, and the
processes holding memory on each (``nimctl top``, and ``nimctl ps``'s per-instance GPU memory).

Like :func:`nimctl.gpu.nvml.read_nvml`, no library, no driver or no GPU is an answer (empty
:class:`Readings` with the reason), and the GPUs are the visible ones, numbered as CUDA does.
A figure a card does not report is None.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from nimctl.gpu.nvml import _hidden_by_env, _init_failure, _mig_uuids, _optional, _text, _visible_order

MIB = 2**20
# pynvml's NVML_TEMPERATURE_GPU: the die sensor.
_TEMPERATURE_GPU = 0


@dataclass(frozen=True)
class GpuProcess:
    """A process with a CUDA context on a GPU; ``used_bytes`` None where NVML cannot say (MIG, Windows)."""

    pid: int
    used_bytes: int | None


@dataclass(frozen=True)
class GpuReading:
    index: int
    uuid: str
    name: str
    utilization_pct: int | None
    memory_used: int | None
    memory_total: int | None
    temperature_c: int | None
    power_w: float | None
    power_limit_w: float | None
    processes: tuple[GpuProcess, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        def mib(value: int | None) -> int | None:
            return None if value is None else value // MIB

        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "utilization_pct": self.utilization_pct,
            "memory_used_mib": mib(self.memory_used),
            "memory_total_mib": mib(self.memory_total),
            "temperature_c": self.temperature_c,
            "power_w": self.power_w,
            "power_limit_w": self.power_limit_w,
        }


@dataclass(frozen=True)
class Readings:
    gpus: tuple[GpuReading, ...] = ()
    reason: str | None = None  # why there are none

    def memory_of(self, pids: set[int]) -> list[dict[str, Any]]:
        """Per GPU where any of ``pids`` holds memory: ``{"index", "uuid", "used_mib"}``."""
        used = []
        for gpu in self.gpus:
            mine = [p for p in gpu.processes if p.pid in pids]
            if mine:
                total = sum(p.used_bytes or 0 for p in mine)
                used.append({"index": gpu.index, "uuid": gpu.uuid, "used_mib": total // MIB})
        return used


def read_readings(nvml: ModuleType | None = None, environ: dict[str, str] | None = None) -> Readings:
    """The visible GPUs' readings; ``nvml`` is injectable so unit tests can hand in a fake module."""
    env = os.environ if environ is None else environ
    hidden = _hidden_by_env(env)
    if hidden:
        return Readings(reason=hidden)
    if nvml is None:
        try:
            import pynvml as nvml  # the nvidia-ml-py distribution
        except ImportError:
            return Readings(reason="nvidia-ml-py is not installed")
    try:
        nvml.nvmlInit()
    except Exception as exc:
        return Readings(reason=_init_failure(nvml, exc))
    try:
        count = nvml.nvmlDeviceGetCount()
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        uuids = [_text(nvml.nvmlDeviceGetUUID(h)) for h in handles]
        order, _notes = _visible_order(uuids, env, [_mig_uuids(nvml, h) for h in handles])
        gpus = tuple(
            _reading(nvml, handles[nvml_index], uuids[nvml_index], cuda_index)
            for cuda_index, nvml_index in enumerate(order)
        )
    except Exception as exc:
        return Readings(reason=f"NVML failed while reading the GPUs: {_text(exc) or type(exc).__name__}")
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
    if not gpus:
        return Readings(reason="no NVIDIA GPU found" if not count else "no GPU is visible")
    return Readings(gpus=gpus)


def _reading(nvml: ModuleType, handle: Any, uuid: str, index: int) -> GpuReading:
    memory = _optional(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    power_mw = _optional(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
    limit_mw = _optional(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
    return GpuReading(
        index=index,
        uuid=uuid,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        utilization_pct=_optional(lambda: int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)),
        memory_used=None if memory is None else int(memory.used),
        memory_total=None if memory is None else int(memory.total),
        temperature_c=_optional(lambda: int(nvml.nvmlDeviceGetTemperature(handle, _TEMPERATURE_GPU))),
        power_w=None if power_mw is None else power_mw / 1000,
        power_limit_w=None if limit_mw is None else limit_mw / 1000,
        processes=_processes(nvml, handle),
    )


def _processes(nvml: ModuleType, handle: Any) -> tuple[GpuProcess, ...]:
    """Compute processes (the engines); graphics ones never belong to an instance."""
    found = _optional(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle)) or []
    processes = []
    for process in found:
        used = getattr(process, "usedGpuMemory", None)
        # NVML reports "not available" as a huge sentinel (NVML_VALUE_NOT_AVAILABLE) or None.
        known = used is not None and used < 2**63
        processes.append(GpuProcess(int(process.pid), int(used) if known else None))
    return tuple(processes)
