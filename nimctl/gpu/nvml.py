"""Reading the real GPUs through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``).

No library, no driver, or no GPU is a normal answer: an empty :class:`Inventory` whose ``reason``
says which, never an exception. Visibility follows what an engine started here would see:
``NVIDIA_VISIBLE_DEVICES`` (the container toolkit's variable) then ``CUDA_VISIBLE_DEVICES``.

MIG: a GPU in MIG mode is listed whole, with ``mig_mode`` true and a note; selection does not
count it as a free card (its memory belongs to its instances; nimctl plans for whole GPUs). A
visibility entry naming a MIG instance (``MIG-<uuid>``, or the older ``MIG-GPU-<uuid>/gi/ci``)
selects its parent GPU, with a note saying so, instead of hiding every GPU.
"""

from __future__ import annotations

import contextlib
import os
from types import ModuleType
from typing import Any

from nimctl.gpu.catalog import recognise
from nimctl.gpu.inventory import GPU, Inventory

_HIDDEN = {"none", "void"}


def read_nvml(nvml: ModuleType | None = None, environ: dict[str, str] | None = None) -> Inventory:
    """The visible GPUs; ``nvml`` is injectable so unit tests can hand in a fake module."""
    env = os.environ if environ is None else environ
    hidden = _hidden_by_env(env)
    if hidden:
        return Inventory(reason=hidden)
    if nvml is None:
        try:
            import pynvml as nvml  # the nvidia-ml-py distribution
        except ImportError:
            return Inventory(reason="nvidia-ml-py is not installed")
    try:
        nvml.nvmlInit()
    except Exception as exc:
        return Inventory(reason=_init_failure(nvml, exc))
    try:
        return _read(nvml, env)
    except Exception as exc:
        return Inventory(reason=f"NVML failed while reading the GPUs: {_text(exc) or type(exc).__name__}")
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def _hidden_by_env(env: Any) -> str | None:
    nvidia = env.get("NVIDIA_VISIBLE_DEVICES")
    if nvidia is not None and nvidia.strip().lower() in _HIDDEN | {""}:
        return f"NVIDIA_VISIBLE_DEVICES={nvidia!s} hides every GPU"
    cuda = env.get("CUDA_VISIBLE_DEVICES")
    if cuda is not None and (cuda.strip() == "" or cuda.strip().lower() in _HIDDEN or cuda.strip() == "-1"):
        return f"CUDA_VISIBLE_DEVICES={cuda!r} hides every GPU"
    return None


def _init_failure(nvml: ModuleType, exc: Exception) -> str:
    def is_error(name: str) -> bool:
        cls = getattr(nvml, name, None)
        return isinstance(cls, type) and isinstance(exc, cls)

    if is_error("NVMLError_LibraryNotFound"):
        return "NVIDIA driver library (libnvidia-ml) not found"
    if is_error("NVMLError_DriverNotLoaded"):
        return "NVIDIA driver not loaded"
    if is_error("NVMLError_NoPermission"):
        return "no permission to use the NVIDIA driver"
    return f"NVML could not start: {_text(exc) or type(exc).__name__}"


def _read(nvml: ModuleType, env: Any) -> Inventory:
    driver = _text(nvml.nvmlSystemGetDriverVersion())
    cuda_version = _cuda_version(nvml)
    count = nvml.nvmlDeviceGetCount()
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    uuids = [_text(nvml.nvmlDeviceGetUUID(h)) for h in handles]
    migs = [_mig_uuids(nvml, h) for h in handles]
    order, notes = _visible_order(uuids, env, migs)
    gpus = tuple(
        _gpu(nvml, handles[nvml_index], uuids[nvml_index], cuda_index)
        for cuda_index, nvml_index in enumerate(order)
    )
    reason = None
    if not gpus:
        reason = notes[-1] if notes else ("no NVIDIA GPU found" if count == 0 else "no GPU is visible")
        notes = []
    for gpu in gpus:
        if gpu.mig_mode:
            notes.append(
                f"GPU {gpu.index} ({gpu.name}) is in MIG mode: its memory belongs to its MIG instances, "
                "so profiles do not count it as a whole GPU"
            )
    return Inventory(
        gpus=gpus,
        reason=reason,
        source="nvml",
        driver_version=driver,
        cuda_driver_version=cuda_version,
        notes=tuple(notes),
        hidden=len(uuids) - len(order),
    )


def _mig_uuids(nvml: ModuleType, handle: Any) -> list[str]:
    """The UUIDs of a GPU's MIG instances; none when it is not in MIG mode or NVML cannot say."""
    if not _optional(lambda: bool(nvml.nvmlDeviceGetMigMode(handle)[0])):
        return []
    count = _optional(lambda: int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))) or 0
    uuids: list[str] = []
    for slot in range(count):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            uuids.append(_text(nvml.nvmlDeviceGetUUID(mig)))
        except Exception:
            continue  # an empty slot raises NVML_ERROR_NOT_FOUND; the next may hold an instance
    return uuids


def _cuda_version(nvml: ModuleType) -> str | None:
    try:
        version = int(nvml.nvmlSystemGetCudaDriverVersion())
    except Exception:
        return None
    return f"{version // 1000}.{version % 1000 // 10}"


def _visible_order(uuids: list[str], env: Any, migs: list[list[str]]) -> tuple[list[int], list[str]]:
    """NVML indices in the order CUDA numbers them, after both visibility variables, and notes.

    ``migs`` holds each GPU's MIG instance UUIDs, so that a MIG-... entry finds its parent.
    """
    notes: list[str] = []
    order = list(range(len(uuids)))
    nvidia = (env.get("NVIDIA_VISIBLE_DEVICES") or "all").strip()
    if nvidia.lower() != "all":
        wanted = [w.strip() for w in nvidia.split(",") if w.strip()]
        # Inside a container the toolkit has already mapped only these GPUs, renumbered from 0;
        # indices then cannot be applied again. UUIDs can, wherever we are.
        if all(w.isdigit() for w in wanted) and len(wanted) == len(uuids):
            pass
        else:
            order = _select(order, uuids, migs, wanted, notes)
    cuda = env.get("CUDA_VISIBLE_DEVICES")
    if cuda is not None:
        wanted = [w.strip() for w in cuda.split(",")]
        order = _select(order, uuids, migs, wanted, notes)
    if len(order) < len(uuids):
        hidden = len(uuids) - len(order)
        notes.append(f"{hidden} of {len(uuids)} GPUs hidden by NVIDIA_VISIBLE_DEVICES/CUDA_VISIBLE_DEVICES")
    return order, notes


def _select(
    order: list[int], uuids: list[str], migs: list[list[str]], wanted: list[str], notes: list[str]
) -> list[int]:
    """CUDA's rule: entries are ordinals or (prefixes of) UUIDs; the list stops at the first bad one.

    A MIG instance's UUID stands for its parent GPU (noted); two instances of one GPU give it once.
    """
    chosen: list[int] = []
    for item in wanted:
        if item.isdigit():
            position = int(item)
            if position >= len(order):
                break
            nvml_index = order[position]
        elif item.startswith("MIG-"):
            matches = [i for i in order if _names_mig(item, uuids[i], migs[i])]
            if len(matches) != 1:
                break
            nvml_index = matches[0]
            notes.append(f"{item} is a MIG instance of {uuids[nvml_index]}: that GPU is listed instead")
            if nvml_index in chosen:
                continue
        else:
            matches = [
                i
                for i in order
                if uuids[i] == item or (item.startswith("GPU-") and uuids[i].startswith(item))
            ]
            if len(matches) != 1:
                break
            nvml_index = matches[0]
        if nvml_index in chosen:
            break
        chosen.append(nvml_index)
    return chosen


def _names_mig(item: str, parent_uuid: str, mig_uuids: list[str]) -> bool:
    """Whether ``item`` names a MIG instance of this GPU: ``MIG-<uuid>`` (or a prefix of one), or
    the pre-R470 form ``MIG-GPU-<parent uuid>/<gi>/<ci>``."""
    if item.startswith("MIG-GPU-"):
        return item.removeprefix("MIG-").split("/", 1)[0] == parent_uuid
    return any(uuid == item or uuid.startswith(item) for uuid in mig_uuids)


def _gpu(nvml: ModuleType, handle: Any, uuid: str, index: int) -> GPU:
    name = _text(nvml.nvmlDeviceGetName(handle))
    pci = nvml.nvmlDeviceGetPciInfo(handle)
    device_id = int(pci.pciDeviceId)  # 0xDDDDVVVV: device id high, vendor id low
    pci_id = f"{device_id >> 16:04x}:{device_id & 0xFFFF:04x}"
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
    entry = recognise(pci_id, name)
    return GPU(
        index=index,
        name=name,
        uuid=uuid,
        pci_id=pci_id,
        memory_total=int(memory.total),
        memory_used=int(memory.used),
        memory_free=int(memory.free),
        utilization_pct=_optional(lambda: int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)),
        compute_capability=(int(major), int(minor)),
        mig_mode=_optional(lambda: bool(nvml.nvmlDeviceGetMigMode(handle)[0])),
        catalog_key=entry.key if entry else None,
        family=entry.family if entry else None,
        aliases=entry.aliases if entry else (),
    )


def _optional(read: Any) -> Any:
    """A figure some cards do not report (NVML_ERROR_NOT_SUPPORTED): None instead of a failure."""
    try:
        return read()
    except Exception:
        return None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
