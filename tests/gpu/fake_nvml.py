"""A stand-in for the ``pynvml`` module (nvidia-ml-py) with the calls nimctl makes, for unit tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801, N818 - pynvml's own names
    pass


class NVMLError_DriverNotLoaded(NVMLError):  # noqa: N801, N818
    pass


class NVMLError_NoPermission(NVMLError):  # noqa: N801, N818
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801, N818
    pass


class NVMLError_NotFound(NVMLError):  # noqa: N801, N818
    pass


@dataclass
class FakeMig:
    """A MIG instance's handle: NVML answers its UUID like a GPU's."""

    uuid: str


@dataclass
class FakeDevice:
    name: str
    uuid: str
    pci_device_id: int  # pynvml's 0xDDDDVVVV
    total_mib: int
    used_mib: int
    cc: tuple[int, int]
    util: int | None = 0  # None: the card does not report it
    mig: int | None = 0
    mig_slots: list[str | None] = field(default_factory=list)  # instance UUIDs; None: an empty slot


@dataclass
class FakeNvml:
    """Instances behave like the module: ``read_nvml(nvml=FakeNvml(...))``."""

    devices: list[FakeDevice] = field(default_factory=list)
    init_error: Exception | None = None
    fail_on: str | None = None  # a method name that raises, to test a half-read inventory
    driver: bytes | str = b"550.54.15"
    cuda: int = 12040
    calls: list[str] = field(default_factory=list)

    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_NoPermission = NVMLError_NoPermission

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.fail_on == name:
            raise NVMLError(f"{name} failed")

    def nvmlInit(self) -> None:  # noqa: N802
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.calls.append("nvmlShutdown")

    def nvmlSystemGetDriverVersion(self) -> bytes | str:  # noqa: N802
        self._call("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:  # noqa: N802
        self._call("nvmlSystemGetCudaDriverVersion")
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        self._call("nvmlDeviceGetCount")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:  # noqa: N802
        self._call("nvmlDeviceGetHandleByIndex")
        return self.devices[index]

    def nvmlDeviceGetUUID(self, handle: FakeDevice | FakeMig) -> str:  # noqa: N802
        return handle.uuid

    def nvmlDeviceGetName(self, handle: FakeDevice) -> bytes:  # noqa: N802
        self._call("nvmlDeviceGetName")
        return handle.name.encode()  # older nvidia-ml-py returns bytes

    def nvmlDeviceGetPciInfo(self, handle: FakeDevice) -> Any:  # noqa: N802
        return SimpleNamespace(pciDeviceId=handle.pci_device_id)

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice) -> Any:  # noqa: N802
        mib = 2**20
        return SimpleNamespace(
            total=handle.total_mib * mib,
            used=handle.used_mib * mib,
            free=(handle.total_mib - handle.used_mib) * mib,
        )

    def nvmlDeviceGetCudaComputeCapability(self, handle: FakeDevice) -> tuple[int, int]:  # noqa: N802
        return handle.cc

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> Any:  # noqa: N802
        if handle.util is None:
            raise NVMLError_NotSupported("Not Supported")
        return SimpleNamespace(gpu=handle.util, memory=0)

    def nvmlDeviceGetMigMode(self, handle: FakeDevice) -> list[int]:  # noqa: N802
        if handle.mig is None:
            raise NVMLError_NotSupported("Not Supported")
        return [handle.mig, handle.mig]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: FakeDevice) -> int:  # noqa: N802
        if not handle.mig:
            raise NVMLError_NotSupported("Not Supported")
        return len(handle.mig_slots)

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: FakeDevice, index: int) -> FakeMig:  # noqa: N802
        uuid = handle.mig_slots[index]
        if uuid is None:
            raise NVMLError_NotFound("Not Found")
        return FakeMig(uuid)


def a100_mig(uuid: str = "GPU-44444444-dddd", instances: tuple[str, ...] = ("MIG-aaaa-1111",)) -> FakeDevice:
    """An A100 80GB in MIG mode, with these instances and one empty slot between them."""
    slots: list[str | None] = [instances[0], None, *instances[1:]]
    return FakeDevice("NVIDIA A100-SXM4-80GB", uuid, 0x20B210DE, 81920, 0, (8, 0), mig=1, mig_slots=slots)


def h100(uuid: str = "GPU-11111111-aaaa", used_mib: int = 500) -> FakeDevice:
    return FakeDevice("NVIDIA H100 80GB HBM3", uuid, 0x233010DE, 81559, used_mib, (9, 0), util=3)


def l4(uuid: str = "GPU-22222222-bbbb", used_mib: int = 0) -> FakeDevice:
    return FakeDevice("NVIDIA L4", uuid, 0x27B810DE, 23034, used_mib, (8, 9), util=None, mig=None)


def unknown_card(uuid: str = "GPU-33333333-cccc") -> FakeDevice:
    return FakeDevice("NVIDIA Future GPU", uuid, 0xFFFF10DE, 100000, 0, (11, 0))
