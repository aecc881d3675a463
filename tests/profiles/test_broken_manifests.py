"""Every kind of broken manifest is refused with one line naming the file, the place and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from nimctl.errors import ManifestError, UsageError
from nimctl.profiles import find_manifest, load_manifest

ID_A = "a" * 64
ID_B = "b" * 64
# Line numbers matter: the expectations below point into this text.
BASE = f"""\
schema_version: 1
model:
  name: demo
  source: hf://org/demo
  served_name: org/demo
  parameters: 7B
  num_layers: 28
  hidden_size: 3584
  num_attention_heads: 28
  num_kv_heads: 4
  head_dim: 128
  max_context: 32768
profiles:
  - id: {ID_A}
    tags:
      llm_engine: vllm
      precision: bf16
      tp: "1"
      pp: "1"
      profile: throughput
    engine_args: ["--dtype", "bfloat16"]
"""
SECOND = f"""\
  - id: {ID_B}
    tags:
      llm_engine: vllm
      precision: fp8
      tp: "2"
      pp: "1"
      profile: latency
    engine_args: ["--tensor-parallel-size", "2"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_base_is_valid(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, BASE + SECOND))
    assert [p.name for p in manifest.profiles] == ["vllm-bf16-tp1-pp1", "vllm-fp8-tp2-pp1"]


CASES = [
    # (case id, edit: (old, new) applied to BASE+SECOND, expected "line: place: problem" tail)
    # The YAML message itself is libyaml's or PyYAML's wording, whichever is installed: check the place.
    ("yaml-syntax", ("  num_layers: 28", "  num_layers: [28"), "8: YAML error: "),
    ("yaml-tab", ("  num_layers: 28", "\tnum_layers: 28"), "7: YAML error: "),
    (
        "duplicate-key",
        ("  num_layers: 28", "  num_layers: 28\n  num_layers: 30"),
        "8: duplicate key 'num_layers'",
    ),
    ("missing-field", ("  served_name: org/demo\n", ""), "2: model.served_name: missing field"),
    ("missing-tag", ("      profile: throughput\n", "", 1), "15: profiles[0].tags.profile: missing tag"),
    ("unknown-field", ("  head_dim: 128", "  head_dim: 128\n  heads: 3"), "12: model.heads: unknown field"),
    (
        "unknown-tag",
        ('      pp: "1"', '      pp: "1"\n      gpux: H100', 1),
        "20: profiles[0].tags.gpux: unknown tag",
    ),
    (
        "bad-precision",
        ("precision: bf16", "precision: bf17"),
        "17: profiles[0].tags.precision: 'bf17' is not allowed",
    ),
    (
        "bad-tp",
        ('tp: "2"', 'tp: "two"'),
        "26: profiles[1].tags.tp: 'two' has the wrong form (a positive whole number",
    ),
    (
        "tag-not-string",
        ('tp: "1"', "tp: 1"),
        "15: profiles[0].tags: tag 'tp' must be a string: write tp: \"1\"",
    ),
    ("id-not-text", (f"id: {ID_A}", "id: 1234"), "14: profiles[0].id: expected text, got 1234 (quote it)"),
    (
        "duplicate-id",
        (f"id: {ID_B}", f"id: {ID_A}"),
        "22: profiles[1].id: duplicate id (already used by profiles[0])",
    ),
    (
        "bad-id",
        (f"id: {ID_A}", 'id: "12ab"'),
        "14: profiles[0].id: '12ab' has the wrong form (64 lower-case hex",
    ),
    (
        "bad-gpu-device",
        ("      profile: latency", "      profile: latency\n      gpu_device: 2330-10de"),
        "29: profiles[1].tags.gpu_device: '2330-10de' has the wrong form (PCI 'device:vendor'",
    ),
    (
        "unknown-gpu",
        ("      profile: latency", '      profile: latency\n      gpu: "H10O"'),
        "29: profiles[1].tags.gpu: 'H10O' is not a GPU of the catalogue (use a family: H100, H100_NVL, ",
    ),
    (
        "gpu-device-of-another-gpu",
        (
            "      profile: latency",
            '      profile: latency\n      gpu: "H100"\n      gpu_device: "26b9:10de"',
        ),
        "30: profiles[1].tags.gpu_device: '26b9:10de' is not a PCI id of H100 (its ids: 2330:10de, 2331:10de)",
    ),
    (
        "gpu-device-of-a-narrower-key",
        (
            "      profile: latency",
            '      profile: latency\n      gpu: "H100-SXM"\n      gpu_device: "2331:10de"',
        ),
        "30: profiles[1].tags.gpu_device: '2331:10de' is not a PCI id of H100-SXM (its ids: 2330:10de)",
    ),
    (
        "unknown-gpu-device",
        ("      profile: latency", '      profile: latency\n      gpu_device: "ffff:10de"'),
        "29: profiles[1].tags.gpu_device: 'ffff:10de' is not a PCI id of any GPU in the catalogue",
    ),
    (
        "tp-without-arg",
        ('engine_args: ["--tensor-parallel-size", "2"]', "engine_args: []"),
        "29: profiles[1].engine_args: tag tp is 2 but --tensor-parallel-size 2 is missing",
    ),
    (
        "number-of-gpus",
        ("      profile: latency", '      profile: latency\n      number_of_gpus: "4"'),
        "23: profiles[1].tags: number_of_gpus is 4 but tp x pp is 2",
    ),
    (
        "name-mismatch",
        (f"  - id: {ID_B}\n", f"  - id: {ID_B}\n    name: vllm-fp8-tp1-pp1\n"),
        "23: profiles[1].name: 'vllm-fp8-tp1-pp1' does not match its tags (expected 'vllm-fp8-tp2-pp1')",
    ),
    (
        "bad-source",
        ("source: hf://org/demo", "source: org/demo"),
        "4: model.source: 'org/demo' has the wrong form (a URI such as hf://org/name or builtin://name)",
    ),
    ("bad-parameters", ("parameters: 7B", "parameters: lots"), "6: model.parameters: write a number"),
    (
        "kv-heads",
        ("num_kv_heads: 4", "num_kv_heads: 5"),
        "10: model.num_kv_heads: must divide num_attention_heads",
    ),
    ("schema-version", ("schema_version: 1", "schema_version: 2"), "1: schema_version: 2 is not allowed: 1"),
]


def edit(text: str, change: tuple) -> str:
    old, new, *count = change
    assert old in text, old
    return text.replace(old, new, *count)


@pytest.mark.parametrize(("case", "change", "expected"), CASES, ids=[c[0] for c in CASES])
def test_broken_manifest_one_line_error(tmp_path: Path, case: str, change: tuple, expected: str) -> None:
    path = write(tmp_path, edit(BASE + SECOND, change))
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    message = caught.value.message
    assert "\n" not in message
    assert message.startswith(f"{path}:")
    assert expected in message, message
    assert isinstance(caught.value, UsageError)  # exit code 2


@pytest.mark.parametrize(
    ("gpu", "gpu_device"),
    [("H100", "2331:10de"), ("h100_sxm", "2330:10de"), ("L40S", None), (None, "2237:10de")],
)
def test_gpu_tags_the_catalogue_knows_load(tmp_path: Path, gpu: str | None, gpu_device: str | None) -> None:
    extra = "".join(f'\n      {k}: "{v}"' for k, v in (("gpu", gpu), ("gpu_device", gpu_device)) if v)
    manifest = load_manifest(
        write(tmp_path, edit(BASE + SECOND, ("      profile: latency", "      profile: latency" + extra)))
    )
    assert manifest.profiles[1].gpu_specific


def _same_shape_as_the_first(profile: str = "latency", gpu: str = "") -> str:
    """SECOND made bf16 tp1 like the first profile, with its own `profile` tag and GPU tags."""
    second = SECOND.replace('tp: "2"', 'tp: "1"').replace("precision: fp8", "precision: bf16")
    second = second.replace('["--tensor-parallel-size", "2"]', "[]")
    return second.replace("profile: latency", f"profile: {profile}{gpu}")


def test_latency_and_throughput_variants_get_names_that_say_so(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, BASE + _same_shape_as_the_first("latency")))
    assert [p.name for p in manifest.profiles] == [
        "vllm-bf16-tp1-pp1-throughput",
        "vllm-bf16-tp1-pp1-latency",
    ]


def test_two_cards_of_one_family_get_names_that_say_which(tmp_path: Path) -> None:
    def gpu(device: str) -> str:
        return f'\n      gpu: "H100"\n      gpu_device: "{device}"'

    first = BASE.replace("profile: throughput", "profile: throughput" + gpu("2330:10de"))
    manifest = load_manifest(
        write(tmp_path, first + _same_shape_as_the_first("throughput", gpu("2331:10de")))
    )
    assert [p.name for p in manifest.profiles] == [
        "vllm-bf16-tp1-pp1-h100-sxm-80gb",
        "vllm-bf16-tp1-pp1-h100-pcie-80gb",
    ]
    # Both differences at once: each name spells out both.
    third = _same_shape_as_the_first("latency", gpu("2330:10de")).replace(ID_B, "c" * 64)
    manifest = load_manifest(
        write(tmp_path, first + _same_shape_as_the_first("throughput", gpu("2331:10de")) + third)
    )
    assert [p.name for p in manifest.profiles] == [
        "vllm-bf16-tp1-pp1-throughput-h100-sxm-80gb",
        "vllm-bf16-tp1-pp1-throughput-h100-pcie-80gb",
        "vllm-bf16-tp1-pp1-latency-h100-sxm-80gb",
    ]


def test_a_declared_short_name_is_refused_where_the_name_must_be_qualified(tmp_path: Path) -> None:
    second = _same_shape_as_the_first("latency").replace(
        f"id: {ID_B}\n", f"id: {ID_B}\n    name: vllm-bf16-tp1-pp1\n"
    )
    path = write(tmp_path, BASE + second)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert caught.value.message == (
        f"{path}:23: profiles[1].name: 'vllm-bf16-tp1-pp1' does not match its tags "
        "(expected 'vllm-bf16-tp1-pp1-latency', as profiles[0] shares 'vllm-bf16-tp1-pp1')"
    )


def test_duplicate_profile_tags(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + _same_shape_as_the_first("throughput"))
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert caught.value.message == (
        f"{path}:23: profiles[1].tags: duplicate profile 'vllm-bf16-tp1-pp1': same engine, precision, "
        "tp, pp, profile, GPU, nodes and LoRA tags as profiles[0]"
    )


def test_no_profiles(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.split("profiles:")[0] + "profiles: []\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert caught.value.message.startswith(f"{path}:13: profiles: ")


@pytest.mark.parametrize(
    ("text", "expected"), [("", ":1: a manifest is a mapping"), ("- a\n", ":1: a manifest is a mapping")]
)
def test_not_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ManifestError, match=expected):
        load_manifest(write(tmp_path, text))


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(path)


def test_find_reports_the_broken_manifest_it_was_asked_for(tmp_path: Path) -> None:
    write(tmp_path, edit(BASE, ("precision: bf16", "precision: bf17")))
    with pytest.raises(ManifestError, match="demo.yaml:17: profiles"):
        find_manifest("demo", profiles_dir=tmp_path)
