"""Table-driven profile selection over described GPU sets and the shipped manifests."""

from __future__ import annotations

import pytest

from nimctl.errors import ProfileError
from nimctl.gpu import parse_gpu_spec
from nimctl.profiles import Manifest, classify, find_manifest, select_profile

NONE, L4, A100, L40S2, H100x8, B200 = "none", "L4", "A100-80GB", "L40S:2", "H100-80GB:8", "B200"
BUSY = "A100-80GB:1@6GiB"  # a busy GPU: 6 of 80 GiB free
NO_PROFILE = None  # selection fails (ProfileError)
CPU = ("vllm-fp32-tp1-pp1-cpu", "the only runnable profile; runs on the CPU (vLLM CPU backend); on ")

# model -> {GPU set: (expected profile name or NO_PROFILE, a fragment of the reason)}. The fragment
# is in the selection's reason, or, when nothing is runnable, in the hint naming the closest
# profiles. Every cell was checked by hand against the estimate.
EXPECTED: dict[str, dict[str, tuple[str | None, str]]] = {
    "tiny-llm": dict.fromkeys([NONE, L4, A100, L40S2, H100x8, B200, BUSY], CPU),
    "tiny-vlm": dict.fromkeys([NONE, L4, A100, L40S2, H100x8, B200, BUSY], CPU),
    "qwen2.5-vl-7b-instruct": {
        NONE: (NO_PROFILE, "closest: vllm-fp8-tp1-pp1-h100: a machine with 1 H100 PCI 2330:10de GPU; "),
        # fp8 (cc 8.9) fits 24 GB; bf16 does not at 128k context
        L4: ("vllm-fp8-tp1-pp1", "the only runnable profile; fits: needs 16.6 GiB/GPU, 21.6 GiB usable"),
        # no fp8 on cc 8.0
        A100: ("vllm-bf16-tp1-pp1", "the only runnable profile; fits: needs 24.3 GiB/GPU, 72.0 GiB usable"),
        L40S2: (
            "vllm-fp8-tp1-pp1-l40s",
            "first of 5 runnable by the rule: specific to L40S, fp8 (lowest precision among them), "
            "1 GPU (throughput: fewest GPUs)",
        ),
        H100x8: ("vllm-fp8-tp1-pp1-h100", "first of 5 runnable by the rule: specific to H100, fp8"),
        # no B200 profile: the generic fp8 one
        B200: ("vllm-fp8-tp1-pp1", "first of 2 runnable by the rule: fp8 (lowest precision among them)"),
        BUSY: (NO_PROFILE, "closest: vllm-bf16-tp1-pp1: free GPU memory (other processes hold it); "),
    },
    "qwen2.5-vl-72b-instruct": {
        NONE: (NO_PROFILE, "closest: vllm-fp8-tp2-pp1-h100: a machine with 2 H100 PCI 2330:10de GPUs; "),
        # 2 x L4 cannot hold fp8 tp2 at any context; 4 x L4 hold fp8 tp4 at a shorter one
        L4: (
            NO_PROFILE,
            "closest: vllm-fp8-tp4-pp1: 3 more GPUs, then try --max-model-len=32768 to reduce to "
            ">=21.6 GiB/GPU; ",
        ),
        A100: (NO_PROFILE, "closest: vllm-bf16-tp4-pp1: 3 more GPUs; "),
        # fp8 tp2 fits only with a shorter context: low memory
        L40S2: (
            NO_PROFILE,
            "closest: vllm-fp8-tp2-pp1: try --max-model-len=45056 to reduce to >=43.1 GiB/GPU",
        ),
        H100x8: (
            "vllm-fp8-tp2-pp1-h100",
            "specific to H100, fp8 (lowest precision among them), 2 GPUs (throughput: fewest GPUs)",
        ),
        # specific beats the generic fp8 tp2
        "H200:2": ("vllm-bf16-tp2-pp1-h200", "specific to H200 (so before the lower-precision generic ones)"),
        B200: (NO_PROFILE, "closest: vllm-fp8-tp2-pp1: 1 more GPU; "),  # no tp1 profile for 72B
        BUSY: (NO_PROFILE, "vllm-fp8-tp2-pp1: a GPU with compute capability >= 8.9"),
    },
    "gemma-3-27b-it": {
        NONE: (NO_PROFILE, "closest: vllm-fp8-tp1-pp1-h100: a machine with 1 H100 PCI 2330:10de GPU; "),
        L4: (NO_PROFILE, "closest: vllm-fp8-tp1-pp1: a lower precision or tp2; "),  # too large for 24 GB
        A100: ("vllm-bf16-tp1-pp1", "the only runnable profile; fits: needs 63.4 GiB/GPU, 72.0 GiB usable"),
        L40S2: ("vllm-fp8-tp2-pp1-l40s", "first of 4 runnable by the rule: specific to L40S, fp8"),
        H100x8: ("vllm-fp8-tp1-pp1-h100", "specific to H100, fp8 (lowest precision among them), 1 GPU"),
        B200: ("vllm-fp8-tp1-pp1", "fits: needs 37.9 GiB/GPU, 162.0 GiB usable"),
        BUSY: (NO_PROFILE, "closest: vllm-bf16-tp1-pp1: free GPU memory (other processes hold it); "),
    },
    "phi-3.5-vision-instruct": {
        NONE: (NO_PROFILE, "closest: vllm-bf16-tp1-pp1-a10g: a machine with 1 A10G PCI 2237:10de GPU; "),
        L4: ("vllm-fp8-tp1-pp1", "the only runnable profile; fits: needs 17.9 GiB/GPU, 21.6 GiB usable"),
        A100: ("vllm-bf16-tp1-pp1", "the only runnable profile; fits: needs 21.7 GiB/GPU, 72.0 GiB usable"),
        L40S2: (
            "vllm-fp8-tp1-pp1",
            "first of 4 runnable by the rule: fp8 (lowest precision among them), 1 GPU",
        ),
        H100x8: ("vllm-fp8-tp1-pp1", "first of 4 runnable by the rule: fp8 (lowest precision among them)"),
        B200: ("vllm-fp8-tp1-pp1", "first of 2 runnable by the rule: fp8 (lowest precision among them)"),
        "A10G": ("vllm-bf16-tp1-pp1-a10g", "the only runnable profile; fits: needs 15.7 GiB/GPU, 21.6 GiB"),
        BUSY: (NO_PROFILE, "closest: vllm-bf16-tp1-pp1: free GPU memory (other processes hold it); "),
    },
    "mistral-small-3.1-24b-instruct": {
        NONE: (NO_PROFILE, "closest: vllm-fp8-tp1-pp1-h100: a machine with 1 H100 PCI 2330:10de GPU; "),
        L4: (NO_PROFILE, "closest: vllm-fp8-tp1-pp1: a lower precision or tp2; "),
        A100: ("vllm-bf16-tp1-pp1", "the only runnable profile; fits: needs 66.7 GiB/GPU, 72.0 GiB usable"),
        # the L40S fp8 tp1 profile is low memory at 128k context
        L40S2: (
            "vllm-fp8-tp2-pp1",
            "first of 2 runnable by the rule: fp8 (lowest precision among them), 2 GPUs",
        ),
        H100x8: ("vllm-fp8-tp1-pp1-h100", "specific to H100, fp8 (lowest precision among them), 1 GPU"),
        B200: ("vllm-fp8-tp1-pp1", "fits: needs 44.4 GiB/GPU, 162.0 GiB usable"),
        BUSY: (NO_PROFILE, "closest: vllm-bf16-tp1-pp1: free GPU memory (other processes hold it); "),
    },
}
CASES = [(model, gpus, *cell) for model, row in EXPECTED.items() for gpus, cell in row.items()]


@pytest.fixture(scope="module")
def manifests() -> dict[str, Manifest]:
    return {model: find_manifest(model) for model in EXPECTED}


@pytest.mark.parametrize(
    ("model", "gpus", "expected", "reason"), CASES, ids=[f"{m}-{g}" for m, g, _, _ in CASES]
)
def test_automatic_choice(
    manifests: dict[str, Manifest], model: str, gpus: str, expected: str | None, reason: str
) -> None:
    manifest, inventory = manifests[model], parse_gpu_spec(gpus)
    if expected is None:
        with pytest.raises(ProfileError) as caught:
            select_profile(manifest, inventory)
        assert caught.value.message.startswith(f"no runnable profile for {model} on ")
        assert caught.value.hint and caught.value.hint.startswith("closest: ")
        assert reason in caught.value.hint
        return
    selection = select_profile(manifest, inventory)
    assert selection.profile.name == expected
    assert selection.reason.startswith(f"{expected}: ")
    assert reason in selection.reason
    assert "\n" not in selection.reason
    assert len(selection.classification) == len(manifest.profiles)
    assert selection.chosen.runnable


def test_every_profile_is_classified_with_a_reason(manifests: dict[str, Manifest]) -> None:
    selection = select_profile(manifests["qwen2.5-vl-7b-instruct"], parse_gpu_spec(A100))
    verdicts = {c.profile.name: (c.status, c.reason) for c in selection.classification}
    assert verdicts["vllm-bf16-tp1-pp1"] == ("runnable", "fits: needs 24.3 GiB/GPU, 72.0 GiB usable")
    assert verdicts["vllm-fp8-tp1-pp1"] == (
        "incompatible",
        "fp8 needs compute capability 8.9, NVIDIA A100-SXM4-80GB has 8.0",
    )
    assert verdicts["vllm-fp8-tp1-pp1-h100"] == (
        "incompatible",
        "built for H100 PCI 2330:10de; this machine has NVIDIA A100-SXM4-80GB",
    )
    assert verdicts["vllm-bf16-tp2-pp1"] == ("incompatible", "needs 2 GPUs, 1 available")


def test_low_memory_names_the_largest_context_that_fits(manifests: dict[str, Manifest]) -> None:
    verdicts = classify(manifests["qwen2.5-vl-7b-instruct"], parse_gpu_spec("A10G"))
    item = next(c for c in verdicts if c.profile.name == "vllm-bf16-tp1-pp1")
    assert item.status == "low_memory"
    assert item.max_model_len == 77824
    assert item.reason == (
        "requires >=24.3 GiB/GPU at 128000 tokens, 21.6 GiB usable; "
        "try --max-model-len=77824 to reduce to >=21.6 GiB/GPU"
    )
    # The hint is right: at that context the profile is runnable.
    shorter = select_profile(manifests["qwen2.5-vl-7b-instruct"], parse_gpu_spec("A10G"), max_model_len=77824)
    assert shorter.profile.name == "vllm-bf16-tp1-pp1"


def test_more_gpus_are_suggested_only_if_the_profile_would_then_fit(manifests: dict[str, Manifest]) -> None:
    manifest = manifests["qwen2.5-vl-72b-instruct"]

    def fix(gpus: str, name: str) -> str | None:
        return next(c for c in classify(manifest, parse_gpu_spec(gpus)) if c.profile.name == name).fix

    # fp8 tp2 needs 36.5 GiB/GPU at the shortest useful context: no number of L4s holds it.
    assert fix("L4", "vllm-fp8-tp2-pp1") == (
        "2 GPUs with more memory than NVIDIA L4: needs 36.5 GiB/GPU even at 2048 tokens, 21.6 GiB usable"
    )
    two_l4 = next(
        c for c in classify(manifest, parse_gpu_spec("L4:2")) if c.profile.name == "vllm-fp8-tp2-pp1"
    )
    assert two_l4.status == "incompatible" and two_l4.reason.startswith("too large: needs 36.5 GiB/GPU")
    # On 2 x L40S it runs only with a shorter context: the advice says so, with the figure 2 x L40S get.
    assert fix("L40S", "vllm-fp8-tp2-pp1") == (
        "1 more GPU, then try --max-model-len=45056 to reduce to >=43.1 GiB/GPU"
    )
    assert fix("L40S:2", "vllm-fp8-tp2-pp1") == "try --max-model-len=45056 to reduce to >=43.1 GiB/GPU"
    # Where it would then fit, just the count (judged on idle cards: a busy one has its own advice).
    assert fix("L40S", "vllm-fp8-tp4-pp1") == "3 more GPUs"
    assert fix("A100-80GB@6GiB", "vllm-bf16-tp4-pp1") == "3 more GPUs"
    # Closest first: what more L4s would run (at a shorter context) before what they never would.
    with pytest.raises(ProfileError) as caught:
        select_profile(manifest, parse_gpu_spec("L4"))
    assert caught.value.hint == (
        "closest: vllm-fp8-tp4-pp1: 3 more GPUs, then try --max-model-len=32768 to reduce to >=21.6 GiB/GPU; "
        "vllm-bf16-tp8-pp1: 7 more GPUs, then try --max-model-len=65536 to reduce to >=21.6 GiB/GPU; "
        "vllm-fp8-tp2-pp1: 2 GPUs with more memory than NVIDIA L4: needs 36.5 GiB/GPU even at 2048 tokens, "
        "21.6 GiB usable"
    )


def test_more_gpus_with_the_precision_are_judged_on_the_capable_card(manifests: dict[str, Manifest]) -> None:
    # An L4 (fp8) beside an A100 (no fp8): fp8 tp2 needs 2 L4-class cards, and no L4 holds it.
    items = classify(manifests["qwen2.5-vl-72b-instruct"], parse_gpu_spec("L4,A100-80GB"))
    item = next(c for c in items if c.profile.name == "vllm-fp8-tp2-pp1")
    assert item.reason.startswith("needs 2 GPUs with compute capability >= 8.9 (fp8); 1 of 2 has it")
    assert item.fix == (
        "2 GPUs with more memory than NVIDIA L4: needs 36.5 GiB/GPU even at 2048 tokens, 21.6 GiB usable"
    )
    items = classify(manifests["qwen2.5-vl-72b-instruct"], parse_gpu_spec("L40S,A100-80GB"))
    item = next(c for c in items if c.profile.name == "vllm-fp8-tp4-pp1")
    assert item.fix == "3 more GPUs with compute capability >= 8.9"


def test_busy_gpu_is_low_memory_with_the_utilisation_that_would_fit(manifests: dict[str, Manifest]) -> None:
    with pytest.raises(ProfileError) as caught:
        select_profile(manifests["phi-3.5-vision-instruct"], parse_gpu_spec("A100-80GB@30GiB"))
    assert "--gpu-memory-utilization=0.28" in (caught.value.hint or "")
    verdicts = classify(manifests["phi-3.5-vision-instruct"], parse_gpu_spec("A100-80GB@30GiB"))
    item = next(c for c in verdicts if c.profile.name == "vllm-bf16-tp1-pp1")
    assert item.status == "low_memory"
    assert item.reason.startswith("GPU 0 has 30.0 of 80.0 GiB free (others use the rest)")
    assert item.fix == "pass --gpu-memory-utilization=0.28 or free GPU memory"


def test_a_busy_gpu_among_free_ones_is_left_out(manifests: dict[str, Manifest]) -> None:
    selection = select_profile(manifests["qwen2.5-vl-7b-instruct"], parse_gpu_spec("H100@10GiB,H100"))
    assert selection.profile.name == "vllm-fp8-tp1-pp1-h100"
    assert selection.chosen.gpus == (1,)
    tp2 = next(c for c in selection.classification if c.profile.name == "vllm-fp8-tp2-pp1")
    assert tp2.status == "low_memory"


def test_prefer_latency_takes_the_most_gpus(manifests: dict[str, Manifest]) -> None:
    selection = select_profile(manifests["qwen2.5-vl-72b-instruct"], parse_gpu_spec(H100x8), prefer="latency")
    assert selection.profile.name == "vllm-fp8-tp4-pp1-h100"
    assert "latency: most GPUs" in selection.reason


def test_lora_only_when_asked(manifests: dict[str, Manifest]) -> None:
    manifest = manifests["qwen2.5-vl-7b-instruct"]
    assert not select_profile(manifest, parse_gpu_spec(H100x8)).profile.lora
    assert (
        select_profile(manifest, parse_gpu_spec(H100x8), lora=True).profile.name == "vllm-bf16-tp1-pp1-lora"
    )
    with pytest.raises(ProfileError) as caught:
        select_profile(manifest, parse_gpu_spec(L4), lora=True)
    assert caught.value.message.startswith("no runnable LoRA profile for qwen2.5-vl-7b-instruct")
    assert caught.value.hint == "runnable without LoRA: vllm-fp8-tp1-pp1 (501b8b0b9a62)"


def test_the_choice_does_not_depend_on_manifest_order(manifests: dict[str, Manifest]) -> None:
    manifest = manifests["qwen2.5-vl-7b-instruct"]
    data = manifest.model_dump()
    data["profiles"] = list(reversed(data["profiles"]))
    reordered = Manifest.model_validate(data)
    for gpus in (L4, A100, L40S2, H100x8, B200):
        assert select_profile(reordered, parse_gpu_spec(gpus)).profile.id == (
            select_profile(manifest, parse_gpu_spec(gpus)).profile.id
        )


@pytest.mark.parametrize("ref", ["vllm-bf16-tp2-pp1", "a36f0c13c57e", "default", None])
def test_pinned_by_name_id_prefix_or_default(manifests: dict[str, Manifest], ref: str | None) -> None:
    selection = select_profile(manifests["qwen2.5-vl-7b-instruct"], parse_gpu_spec(L40S2), requested=ref)
    if ref in ("default", None):
        assert selection.profile.name == "vllm-fp8-tp1-pp1-l40s" and not selection.pinned
    else:
        assert selection.profile.name == "vllm-bf16-tp2-pp1" and selection.pinned
        assert "pinned by the user" in selection.reason


def test_pinned_profile_that_cannot_run_says_why_and_what_can(manifests: dict[str, Manifest]) -> None:
    with pytest.raises(ProfileError) as caught:
        select_profile(
            manifests["qwen2.5-vl-7b-instruct"], parse_gpu_spec(A100), requested="vllm-fp8-tp1-pp1"
        )
    assert caught.value.message == (
        "pinned profile vllm-fp8-tp1-pp1 (501b8b0b9a62) cannot run here (incompatible): "
        "fp8 needs compute capability 8.9, NVIDIA A100-SXM4-80GB has 8.0; pinned by NIM_MODEL_PROFILE or --profile"
    )
    # In the automatic choice's order: the profiles it would take, then the LoRA ones, labelled.
    assert caught.value.hint == (
        "runnable here: vllm-bf16-tp1-pp1 (c55664c60675); with LoRA: vllm-bf16-tp1-pp1-lora (36905379b8a3); "
        "or unset NIM_MODEL_PROFILE (or use 'default') to choose automatically"
    )


def test_pinned_with_lora_asked_lists_the_lora_profiles_first(manifests: dict[str, Manifest]) -> None:
    with pytest.raises(ProfileError) as caught:
        select_profile(
            manifests["qwen2.5-vl-7b-instruct"], parse_gpu_spec(A100), requested="vllm-fp8-tp1-pp1", lora=True
        )
    assert (caught.value.hint or "").startswith(
        "runnable here: vllm-bf16-tp1-pp1-lora (36905379b8a3); without LoRA: vllm-bf16-tp1-pp1 (c55664c60675); "
    )


def test_pinned_profile_not_in_the_manifest(manifests: dict[str, Manifest]) -> None:
    with pytest.raises(ProfileError) as caught:
        select_profile(manifests["tiny-llm"], parse_gpu_spec(NONE), requested="vllm-bf16-tp1-pp1")
    assert caught.value.message.startswith("profile 'vllm-bf16-tp1-pp1' is not in the tiny-llm manifest")
    assert "runnable here: vllm-fp32-tp1-pp1-cpu" in (caught.value.hint or "")


def test_no_gpu_error_names_the_reason(manifests: dict[str, Manifest]) -> None:
    with pytest.raises(ProfileError) as caught:
        select_profile(manifests["gemma-3-27b-it"], parse_gpu_spec(NONE))
    assert "no GPU (--gpus none: no GPU assumed)" in caught.value.message
    assert "a machine with 1 CUDA GPU" in (caught.value.hint or "")


def test_closest_profiles_say_what_would_make_them_runnable(manifests: dict[str, Manifest]) -> None:
    with pytest.raises(ProfileError) as caught:
        select_profile(manifests["qwen2.5-vl-72b-instruct"], parse_gpu_spec(L40S2))
    assert caught.value.hint is not None
    assert caught.value.hint.startswith(
        "closest: vllm-fp8-tp2-pp1: try --max-model-len=45056 to reduce to >=43.1 GiB/GPU; "
    )


def test_reason_names_the_gpu_specific_step_when_it_beats_a_lower_precision_profile(
    manifests: dict[str, Manifest],
) -> None:
    # On 2 x H200 the bf16 H200 profile outranks the generic fp8 one: bf16 is not the lowest precision.
    selection = select_profile(manifests["qwen2.5-vl-72b-instruct"], parse_gpu_spec("H200:2"))
    assert selection.profile.name == "vllm-bf16-tp2-pp1-h200"
    assert "lowest precision" not in selection.reason
    assert "specific to H200 (so before the lower-precision generic ones), bf16," in selection.reason


def test_reason_claims_lowest_precision_only_when_true(manifests: dict[str, Manifest]) -> None:
    selection = select_profile(manifests["qwen2.5-vl-7b-instruct"], parse_gpu_spec(L40S2))
    assert "specific to L40S, fp8 (lowest precision among them), 1 GPU (throughput: fewest GPUs)" in (
        selection.reason
    )


def test_reason_scopes_most_gpus_to_the_profiles_it_was_compared_with(manifests: dict[str, Manifest]) -> None:
    # A generic profile takes more GPUs than the H100 fp8 tp4 one, which wins on the earlier steps.
    selection = select_profile(manifests["qwen2.5-vl-72b-instruct"], parse_gpu_spec(H100x8), prefer="latency")
    most = max(c.profile.gpu_count for c in selection.classification if c.runnable and not c.profile.lora)
    assert most > selection.profile.gpu_count
    assert "4 GPUs (latency: most GPUs among the fp8 ones specific to H100)" in selection.reason
