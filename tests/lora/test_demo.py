"""nimctl.lora.demo: the demo LoRA adapters of tiny-llm, generated deterministically on first use."""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from nimctl.errors import EXIT_USAGE, UsageError
from nimctl.lora import demo
from nimctl.lora.demo import DEMO_ADAPTERS, ensure_demo_adapters, is_complete
from nimctl.lora.folder import ADAPTER_CONFIG, ADAPTER_WEIGHTS, Adapter, SkippedAdapter, scan_folder
from nimctl.models.builtin import MARKER_FILE
from tests.models.hashing import file_hashes

R8, R16, BROKEN = DEMO_ADAPTERS["tiny-llm"]
ALL_LINEAR = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
# tiny-llm: hidden 64, MLP 128, 2 decoder layers (nimctl/models/_generate.py).
IN_OUT = {
    "q_proj": (64, 64),
    "k_proj": (64, 64),
    "v_proj": (64, 64),
    "o_proj": (64, 64),
    "gate_proj": (64, 128),
    "up_proj": (64, 128),
    "down_proj": (128, 64),
}


def _run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nimctl.lora.demo", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _config(folder: Path) -> dict:
    return json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))


def _header(path: Path) -> dict:
    """The safetensors header (tensor names, dtypes, shapes), read without torch."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


def test_the_names_are_the_design_notes() -> None:
    assert DEMO_ADAPTERS == {"tiny-llm": ("tiny-llm-lora-r8", "tiny-llm-lora-r16", "tiny-llm-lora-broken")}


def test_unknown_model_is_a_usage_error_listing_the_models(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        ensure_demo_adapters("tiny-vlm", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "'tiny-vlm'" in message and "tiny-llm" in message
    assert not any(tmp_path.iterdir()), "nothing is written for an unknown model"


def test_importing_the_module_loads_no_torch() -> None:
    code = (
        "import sys, nimctl.lora.demo\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'safetensors') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_layout(demo_adapters: Path) -> None:
    assert demo_adapters.name == "tiny-llm-loras"
    assert set(file_hashes(demo_adapters)) == {
        MARKER_FILE,
        f"{R8}/{ADAPTER_CONFIG}",
        f"{R8}/{ADAPTER_WEIGHTS}",
        f"{R16}/{ADAPTER_CONFIG}",
        f"{R16}/{ADAPTER_WEIGHTS}",
        f"{BROKEN}/{ADAPTER_CONFIG}",
    }, "peft's README.md is dropped; the broken adapter has no weights"
    assert is_complete("tiny-llm", demo_adapters)
    assert sorted(p.name for p in demo_adapters.parent.iterdir()) == [
        ".tiny-llm-loras.lock",
        "tiny-llm-loras",
    ]
    assert sum(p.stat().st_size for p in demo_adapters.rglob("*")) < 512 * 1024


@pytest.mark.parametrize(
    ("name", "rank", "alpha", "targets"),
    [(R8, 8, 16, ["q_proj", "v_proj"]), (R16, 16, 32, ALL_LINEAR), (BROKEN, 8, 16, ["q_proj", "v_proj"])],
)
def test_configs(demo_adapters: Path, name: str, rank: int, alpha: int, targets: list[str]) -> None:
    config = _config(demo_adapters / name)
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], config["target_modules"]) == (rank, alpha, targets)
    assert config["base_model_name_or_path"] == "builtin://tiny-llm"
    assert config["init_lora_weights"] is False  # random B: the adapter changes the outputs
    assert config["modules_to_save"] is None and config["rank_pattern"] == {}


@pytest.mark.parametrize(("name", "rank", "targets"), [(R8, 8, ["q_proj", "v_proj"]), (R16, 16, ALL_LINEAR)])
def test_weights(demo_adapters: Path, name: str, rank: int, targets: list[str]) -> None:
    header = _header(demo_adapters / name / ADAPTER_WEIGHTS)
    assert header.pop("__metadata__") == {"format": "pt"}
    expected = {}
    for layer in range(2):
        for module in targets:
            part = "self_attn" if module in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            prefix = f"base_model.model.model.layers.{layer}.{part}.{module}"
            fan_in, fan_out = IN_OUT[module]
            expected[f"{prefix}.lora_A.weight"] = [rank, fan_in]
            expected[f"{prefix}.lora_B.weight"] = [fan_out, rank]
    assert {key: value["shape"] for key, value in header.items()} == expected
    assert {value["dtype"] for value in header.values()} == {"F32"}


def test_weights_are_random_and_differ_between_adapters(demo_adapters: Path) -> None:
    from safetensors.numpy import load_file

    r8 = load_file(demo_adapters / R8 / ADAPTER_WEIGHTS)
    r16 = load_file(demo_adapters / R16 / ADAPTER_WEIGHTS)
    for tensors in (r8, r16):
        assert all(abs(t).mean() > 1e-3 for t in tensors.values()), "A and B are random, B is not zero"
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    assert r8[key].shape != r16[key].shape
    key_b = "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"
    assert not (r8[key_b][:, :8] == r16[key_b][:, :8]).all(), "each adapter has its own seed"


def test_files_are_readable_by_anyone(demo_adapters: Path) -> None:
    for path in [demo_adapters, *demo_adapters.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), f"{path}: {oct(mode)}"


def test_the_folder_reader_serves_two_and_skips_the_broken_one(demo_adapters: Path) -> None:
    scanned = {item.name: item for item in scan_folder(demo_adapters, max_rank=16, base_names={"tiny-llm"})}
    assert list(scanned) == [BROKEN, R16, R8]
    assert isinstance(scanned[R8], Adapter) and isinstance(scanned[R16], Adapter)
    assert (scanned[R8].rank, scanned[R16].rank) == (8, 16)
    assert scanned[R16].target_modules == tuple(ALL_LINEAR)
    assert scanned[R8].base_model == "builtin://tiny-llm"
    assert isinstance(scanned[BROKEN], SkippedAdapter)
    assert ADAPTER_WEIGHTS in scanned[BROKEN].reason


def test_complete_folder_is_returned_without_regenerating(
    demo_adapters: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_build(model: str, folder: Path) -> None:
        raise AssertionError("complete demo adapters were regenerated")

    mtimes = {p: p.stat().st_mtime_ns for p in demo_adapters.rglob("*")}
    monkeypatch.setattr(demo, "_build", must_not_build)
    assert ensure_demo_adapters("tiny-llm", demo_adapters.parent) == demo_adapters
    assert {p: p.stat().st_mtime_ns for p in demo_adapters.rglob("*")} == mtimes


def _copying_builder(source: Path):
    def build(model: str, folder: Path) -> None:
        shutil.copytree(source, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MARKER_FILE))

    return build


@pytest.mark.parametrize("damage", ["delete-weights", "truncate-weights", "delete-marker", "old-generator"])
def test_incomplete_folder_is_regenerated(
    demo_adapters: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    folder = tmp_path / "tiny-llm-loras"
    shutil.copytree(demo_adapters, folder)
    if damage == "delete-weights":
        (folder / R16 / ADAPTER_WEIGHTS).unlink()
    elif damage == "truncate-weights":
        (folder / R8 / ADAPTER_WEIGHTS).write_bytes(b"half")
    elif damage == "delete-marker":
        (folder / MARKER_FILE).unlink()
    else:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
        marker["name"] = "tiny-llm-loras@0"
        (folder / MARKER_FILE).write_text(json.dumps(marker), encoding="utf-8")
    assert not is_complete("tiny-llm", folder)

    monkeypatch.setattr(demo, "_build", _copying_builder(demo_adapters))
    assert ensure_demo_adapters("tiny-llm", tmp_path) == folder
    assert file_hashes(folder) == file_hashes(demo_adapters)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny-llm-loras.lock", "tiny-llm-loras"]


def test_crash_during_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crashing_build(model: str, folder: Path) -> None:
        (folder / R8).mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_build", crashing_build)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_adapters("tiny-llm", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny-llm-loras.lock"]


def test_module_cli_rejects_bad_usage_and_unknown_models(tmp_path: Path) -> None:
    result = _run_module("tiny-llm")
    assert result.returncode == EXIT_USAGE
    assert "usage: python -m nimctl.lora.demo NAME DEST_ROOT" in result.stderr

    result = _run_module("nope", str(tmp_path))
    assert (result.returncode, result.stdout) == (EXIT_USAGE, "")
    assert result.stderr.startswith("Error: no demo LoRA adapters for model 'nope'")
    assert "tiny-llm" in result.stderr


def test_missing_peft_is_one_clear_error_with_the_extra_to_install(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['peft'] = None  # as if peft were not installed\n"
        "from nimctl.lora.demo import main\n"
        f"sys.exit(main(['tiny-llm', {str(tmp_path)!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (EXIT_USAGE, "")
    assert result.stderr.splitlines() == [
        "Error: generating the demo LoRA adapters needs the Python package 'peft', which is not installed",
        "Hint: install the LoRA extra: pip install 'nimctl[lora]'",
    ]
    assert not (tmp_path / "tiny-llm-loras").exists()


def test_generation_is_deterministic_and_concurrent_callers_get_one_whole_folder(
    demo_adapters: Path, tmp_path: Path
) -> None:
    """Two processes at once into another folder: one generates while the other waits for the lock;
    both print the folder, and its files are byte for byte the session's (made in this process).

    Each process has its own string-hash seed: peft keeps target_modules in a set, whose order
    follows that seed; the generator writes the list sorted."""
    command = [sys.executable, "-m", "nimctl.lora.demo", "tiny-llm", str(tmp_path)]
    procs = [
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        for seed in ("1", "12345")
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
        assert stderr == "", "no warnings (peft's Hub lookup for the base model is off)"
        assert Path(stdout.strip()) == (tmp_path / "tiny-llm-loras").resolve()
    assert file_hashes(tmp_path / "tiny-llm-loras") == file_hashes(demo_adapters)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny-llm-loras.lock", "tiny-llm-loras"]


def test_the_adapters_load_onto_the_real_tiny_llm_and_change_its_outputs(
    demo_adapters: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """What vLLM will do, with peft: every tensor fits the built-in model, and each adapter moves
    the logits away from the base model's (and from the other adapter's)."""
    import torch
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    from nimctl.models.builtin import ensure_builtin

    base_folder = ensure_builtin("tiny-llm", tmp_path_factory.mktemp("builtin"))
    tokens = torch.tensor([[1, 5, 9, 42, 7, 3]])
    base = LlamaForCausalLM.from_pretrained(base_folder, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(tokens).logits
    logits = {}
    for name in (R8, R16):
        model = PeftModel.from_pretrained(
            LlamaForCausalLM.from_pretrained(base_folder, dtype=torch.float32), demo_adapters / name
        ).eval()
        # The weights in the model are the file's (a tensor that did not fit would be left random).
        saved = load_file(demo_adapters / name / ADAPTER_WEIGHTS)
        loaded = get_peft_model_state_dict(model, save_embedding_layers=False)
        assert set(loaded) == set(saved)
        assert all(torch.equal(loaded[key], saved[key]) for key in saved)
        with torch.no_grad():
            logits[name] = model(tokens).logits
        assert (logits[name] - base_logits).abs().max() > 1e-2, f"{name} does not change the outputs"
    assert (logits[R8] - logits[R16]).abs().max() > 1e-2
