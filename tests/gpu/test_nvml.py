"""NVML reading through an injected NVML module (unit tests of nimctl.gpu.nvml), plus the real library here."""

from __future__ import annotations

import pytest

from nimctl.gpu.nvml import read_nvml
from tests.gpu.fake_nvml import (
    FakeNvml,
    NVMLError,
    NVMLError_DriverNotLoaded,
    NVMLError_LibraryNotFound,
    a100_mig,
    h100,
    l4,
    unknown_card,
)

GIB = 1024**3


def test_reads_every_field_of_each_gpu() -> None:
    nvml = FakeNvml(devices=[h100(used_mib=1024), l4()])
    inventory = read_nvml(nvml, environ={})
    assert inventory.device == "cuda"
    assert inventory.reason is None
    assert inventory.driver_version == "550.54.15"
    assert inventory.cuda_driver_version == "12.4"
    first, second = inventory.gpus
    assert (first.index, first.name, first.uuid) == (0, "NVIDIA H100 80GB HBM3", "GPU-11111111-aaaa")
    assert first.pci_id == "2330:10de"
    assert first.memory_total == 81559 * 2**20
    assert first.memory_used == 1024 * 2**20
    assert first.memory_free == (81559 - 1024) * 2**20
    assert first.utilization_pct == 3
    assert first.compute_capability == (9, 0)
    assert first.mig_mode is False
    assert (first.catalog_key, first.family) == ("H100-SXM-80GB", "H100")
    assert second.pci_id == "27b8:10de"
    assert second.family == "L4"
    # Figures a card does not report are None, not a failure.
    assert second.utilization_pct is None
    assert second.mig_mode is None
    assert nvml.calls[-1] == "nvmlShutdown"


def test_a_card_missing_from_the_catalogue_is_still_listed() -> None:
    inventory = read_nvml(FakeNvml(devices=[unknown_card()]), environ={})
    (gpu,) = inventory.gpus
    assert gpu.catalog_key is None and gpu.family is None
    assert gpu.pci_id == "ffff:10de"
    assert not gpu.matches_gpu_tag("H100")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            NVMLError_LibraryNotFound("libnvidia-ml.so.1 not found"),
            "NVIDIA driver library (libnvidia-ml) not found",
        ),
        (NVMLError_DriverNotLoaded("Driver Not Loaded"), "NVIDIA driver not loaded"),
        (NVMLError("Unknown Error"), "NVML could not start: Unknown Error"),
    ],
)
def test_no_driver_is_an_empty_inventory_with_the_reason(error: Exception, reason: str) -> None:
    inventory = read_nvml(FakeNvml(init_error=error), environ={})
    assert inventory.gpus == ()
    assert inventory.device == "cpu"
    assert inventory.reason == reason


def test_no_gpu_behind_a_working_driver() -> None:
    inventory = read_nvml(FakeNvml(devices=[]), environ={})
    assert inventory.device == "cpu"
    assert inventory.reason == "no NVIDIA GPU found"


def test_a_failure_while_reading_gives_no_half_inventory_and_still_shuts_down() -> None:
    nvml = FakeNvml(devices=[h100()], fail_on="nvmlDeviceGetName")
    inventory = read_nvml(nvml, environ={})
    assert inventory.gpus == ()
    assert inventory.reason == "NVML failed while reading the GPUs: nvmlDeviceGetName failed"
    assert nvml.calls[-1] == "nvmlShutdown"


@pytest.mark.parametrize(
    ("environ", "expected_uuids"),
    [
        ({"CUDA_VISIBLE_DEVICES": "1"}, ["GPU-b"]),
        ({"CUDA_VISIBLE_DEVICES": "2,0"}, ["GPU-c", "GPU-a"]),  # CUDA renumbers in the order given
        ({"CUDA_VISIBLE_DEVICES": "GPU-c"}, ["GPU-c"]),
        ({"CUDA_VISIBLE_DEVICES": "0,7,1"}, ["GPU-a"]),  # the list stops at the first invalid entry
        ({"NVIDIA_VISIBLE_DEVICES": "all"}, ["GPU-a", "GPU-b", "GPU-c"]),
        ({"NVIDIA_VISIBLE_DEVICES": "GPU-b,GPU-c"}, ["GPU-b", "GPU-c"]),
        ({"NVIDIA_VISIBLE_DEVICES": "1"}, ["GPU-b"]),  # on the host: an index
        ({"NVIDIA_VISIBLE_DEVICES": "4,5,6"}, ["GPU-a", "GPU-b", "GPU-c"]),  # in a container: already mapped
        ({"NVIDIA_VISIBLE_DEVICES": "GPU-b,GPU-c", "CUDA_VISIBLE_DEVICES": "1"}, ["GPU-c"]),
    ],
)
def test_visible_devices_variables(environ: dict[str, str], expected_uuids: list[str]) -> None:
    devices = [h100("GPU-a"), h100("GPU-b"), l4("GPU-c")]
    inventory = read_nvml(FakeNvml(devices=devices), environ=environ)
    assert [gpu.uuid for gpu in inventory.gpus] == expected_uuids
    assert [gpu.index for gpu in inventory.gpus] == list(range(len(expected_uuids)))
    assert inventory.hidden == len(devices) - len(expected_uuids)  # Docker's "all" would be more


@pytest.mark.parametrize(
    "environ",
    [
        {"CUDA_VISIBLE_DEVICES": ""},
        {"CUDA_VISIBLE_DEVICES": "-1"},
        {"NVIDIA_VISIBLE_DEVICES": "none"},
        {"NVIDIA_VISIBLE_DEVICES": "void"},
    ],
)
def test_variables_that_hide_every_gpu(environ: dict[str, str]) -> None:
    nvml = FakeNvml(devices=[h100()])
    inventory = read_nvml(nvml, environ=environ)
    assert inventory.gpus == ()
    assert next(iter(environ)) in (inventory.reason or "")
    assert nvml.calls == []  # decided before touching the driver


def test_all_hidden_by_a_bad_cuda_list_says_so() -> None:
    inventory = read_nvml(FakeNvml(devices=[h100()]), environ={"CUDA_VISIBLE_DEVICES": "5"})
    assert inventory.gpus == ()
    assert inventory.reason == "1 of 1 GPUs hidden by NVIDIA_VISIBLE_DEVICES/CUDA_VISIBLE_DEVICES"


def test_the_real_library_on_this_machine_never_raises() -> None:
    """With the real nvidia-ml-py: GPUs when a driver is there, else an empty inventory with the reason."""
    inventory = read_nvml()
    if inventory.gpus:
        assert inventory.device == "cuda"
        assert all(gpu.pci_id and gpu.pci_id.endswith(":10de") for gpu in inventory.gpus)
        assert all(gpu.memory_total >= gpu.memory_free for gpu in inventory.gpus)
    else:
        assert inventory.device == "cpu"
        assert inventory.reason


def test_a_gpu_in_mig_mode_is_listed_with_a_note() -> None:
    inventory = read_nvml(FakeNvml(devices=[a100_mig(), h100()]), environ={})
    mig, whole = inventory.gpus
    assert (mig.mig_mode, whole.mig_mode) == (True, False)
    assert inventory.notes == (
        "GPU 0 (NVIDIA A100-SXM4-80GB) is in MIG mode: its memory belongs to its MIG instances, "
        "so profiles do not count it as a whole GPU",
    )
    assert inventory.to_dict()["notes"] == list(inventory.notes)  # --format json keeps them


@pytest.mark.parametrize(
    "entry",
    [
        "MIG-bbbb-2222",  # an instance behind an empty slot
        "MIG-bbbb",  # a unique prefix
        "MIG-GPU-44444444-dddd/1/0",  # the pre-R470 form names the parent itself
    ],
)
def test_a_mig_instance_in_cuda_visible_devices_selects_its_parent(entry: str) -> None:
    devices = [h100("GPU-a"), a100_mig(instances=("MIG-aaaa-1111", "MIG-bbbb-2222"))]
    inventory = read_nvml(FakeNvml(devices=devices), environ={"CUDA_VISIBLE_DEVICES": entry})
    (gpu,) = inventory.gpus
    assert (gpu.uuid, gpu.index, gpu.mig_mode) == ("GPU-44444444-dddd", 0, True)
    assert inventory.reason is None
    assert f"{entry} is a MIG instance of GPU-44444444-dddd: that GPU is listed instead" in inventory.notes
    assert "1 of 2 GPUs hidden by NVIDIA_VISIBLE_DEVICES/CUDA_VISIBLE_DEVICES" in inventory.notes


def test_two_instances_of_one_gpu_give_it_once_and_an_unknown_instance_stops_the_list() -> None:
    devices = [a100_mig(instances=("MIG-aaaa-1111", "MIG-bbbb-2222")), h100("GPU-b")]
    environ = {"CUDA_VISIBLE_DEVICES": "MIG-aaaa-1111,MIG-bbbb-2222,GPU-b"}
    assert [gpu.uuid for gpu in read_nvml(FakeNvml(devices=devices), environ=environ).gpus] == [
        "GPU-44444444-dddd",
        "GPU-b",
    ]
    inventory = read_nvml(FakeNvml(devices=devices), environ={"CUDA_VISIBLE_DEVICES": "MIG-ffff"})
    assert inventory.gpus == ()
    assert inventory.reason == "2 of 2 GPUs hidden by NVIDIA_VISIBLE_DEVICES/CUDA_VISIBLE_DEVICES"
