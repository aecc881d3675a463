"""The GPU catalogue data and the --gpus / NIMCTL_ASSUME_GPUS spec language."""

from __future__ import annotations

import re

import pytest

from nimctl.errors import UsageError
from nimctl.gpu import ASSUME_ENV, catalog, detect_inventory, lookup, parse_gpu_spec

GIB = 1024**3


def test_catalogue_entries_are_well_formed_and_unambiguous() -> None:
    entries = catalog()
    assert len(entries) >= 15
    spellings: dict[str, str] = {}
    for entry in entries:
        assert entry.pci_ids and all(re.fullmatch(r"[0-9a-f]{4}:10de", p) for p in entry.pci_ids)
        assert entry.memory_gib > 0
        assert (7, 0) <= entry.compute_capability <= (12, 0)
        for name in (entry.key, *entry.aliases):
            folded = re.sub(r"[^a-z0-9]", "", name.lower())
            assert folded not in spellings, f"{name} names both {spellings.get(folded)} and {entry.key}"
            spellings[folded] = entry.key
    pci = [p for e in entries for p in e.pci_ids]
    assert len(pci) == len(set(pci))


@pytest.mark.parametrize(
    ("key", "memory_gib", "cc", "pci"),
    [
        ("H100-SXM-80GB", 80, (9, 0), "2330:10de"),
        ("H100-PCIE-80GB", 80, (9, 0), "2331:10de"),
        ("H100-NVL", 94, (9, 0), "2321:10de"),
        ("H200-SXM-141GB", 141, (9, 0), "2335:10de"),
        ("B200", 180, (10, 0), "2901:10de"),
        ("A100-SXM-80GB", 80, (8, 0), "20b2:10de"),
        ("A100-SXM-40GB", 40, (8, 0), "20b0:10de"),
        ("L40S", 48, (8, 9), "26b9:10de"),
        ("L40", 48, (8, 9), "26b5:10de"),
        ("L4", 24, (8, 9), "27b8:10de"),
        ("A10G", 24, (8, 6), "2237:10de"),
        ("A10", 24, (8, 6), "2236:10de"),
        ("RTX-6000-ADA", 48, (8, 9), "26b1:10de"),
        ("RTX-4090", 24, (8, 9), "2684:10de"),
    ],
)
def test_spec_sheet_facts(key: str, memory_gib: int, cc: tuple[int, int], pci: str) -> None:
    entry = lookup(key)
    assert entry is not None
    assert (entry.memory_gib, entry.compute_capability) == (memory_gib, cc)
    assert pci in entry.pci_ids


@pytest.mark.parametrize(
    ("spec", "count", "key", "free_gib"),
    [
        ("H100-80GB:8", 8, "H100-SXM-80GB", 80),
        ("h100_sxm:2", 2, "H100-SXM-80GB", 80),
        ("L40S:2", 2, "L40S", 48),
        ("A10G", 1, "A10G", 24),
        ("B200", 1, "B200", 180),
        ("A100-80GB:1@6GiB", 1, "A100-SXM-80GB", 6),
        ("A100-80GB@6.5", 1, "A100-SXM-80GB", 6.5),
        ("A100-80GB@6gib", 1, "A100-SXM-80GB", 6),
        ("A100-80GB:1@6GB", 1, "A100-SXM-80GB", 6e9 / GIB),  # GB: 10^9 bytes, as spec sheets count
        ("L4x4", 4, "L4", 24),
    ],
)
def test_gpu_spec(spec: str, count: int, key: str, free_gib: float) -> None:
    inventory = parse_gpu_spec(spec)
    assert inventory.source == "assumed"
    assert inventory.device == "cuda"
    assert len(inventory.gpus) == count
    assert [gpu.index for gpu in inventory.gpus] == list(range(count))
    gpu = inventory.gpus[0]
    assert gpu.catalog_key == key
    assert gpu.memory_free == int(free_gib * GIB)
    assert gpu.memory_used == gpu.memory_total - gpu.memory_free
    assert gpu.assumed


def test_mixed_spec_keeps_the_order() -> None:
    inventory = parse_gpu_spec("H100:2, L4")
    assert [gpu.catalog_key for gpu in inventory.gpus] == ["H100-SXM-80GB", "H100-SXM-80GB", "L4"]


@pytest.mark.parametrize("spec", ["none", "NONE", "cpu", "0"])
def test_no_gpu_spec(spec: str) -> None:
    inventory = parse_gpu_spec(spec)
    assert inventory.gpus == () and inventory.device == "cpu"
    assert inventory.reason and "no GPU assumed" in inventory.reason


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("FOO:2", "unknown GPU 'FOO' in --gpus"),
        ("H100:0", "bad GPU count in 'H100:0'"),
        ("H100:two", "bad GPU spec 'H100:two'"),
        ("A100-80GB@100GiB", "100 GiB free is more than the 80 GiB card"),
        ("H100:65", "--gpus describes 65 GPUs; at most 64"),
        ("H100,,L4", "bad GPU spec ''"),
        ("A100-80GB@6G", "unknown unit 'G' in 'A100-80GB@6G': write the free memory in GiB"),
        ("A100-80GB@6MiB", "unknown unit 'MiB' in 'A100-80GB@6MiB'"),
        ("A100-80GB@90GB", "90 GB free is more than the 80 GiB card"),
        ("A100-80GB@6.5.1", "bad GPU spec 'A100-80GB@6.5.1'"),
    ],
)
def test_bad_specs_are_one_line_usage_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_gpu_spec(spec)
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_unknown_name_hint_lists_the_catalogue() -> None:
    with pytest.raises(UsageError) as caught:
        parse_gpu_spec("H300")
    assert caught.value.hint and "H100-SXM-80GB" in caught.value.hint and "L40S" in caught.value.hint


def test_assume_env_replaces_the_inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ASSUME_ENV, "L40S:2")
    assert [gpu.catalog_key for gpu in detect_inventory().gpus] == ["L40S", "L40S"]
    # --gpus wins over the variable.
    assert detect_inventory("A10G").gpus[0].catalog_key == "A10G"


def test_gpu_tag_matching_by_family_and_key() -> None:
    sxm, pcie, nvl = (parse_gpu_spec(s).gpus[0] for s in ("H100-SXM-80GB", "H100-PCIE-80GB", "H100-NVL"))
    assert sxm.matches_gpu_tag("H100") and pcie.matches_gpu_tag("h100")
    assert not nvl.matches_gpu_tag("H100")
    assert nvl.matches_gpu_tag("H100_NVL")
