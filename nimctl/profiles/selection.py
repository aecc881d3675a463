"""Choosing the profile to run: automatically, or the one the user pinned.

Automatic choice (``NIM_MODEL_PROFILE`` unset or ``default``):

1. Only **runnable** profiles are candidates (see :mod:`nimctl.profiles.classify`); low-memory
   and incompatible ones are never chosen automatically.
2. **LoRA** profiles (``feat_lora: "true"``) are candidates only when LoRA is asked for
   (``--lora`` / ``NIM_PEFT_SOURCE``), and then only they are.
3. Where GPUs are present, **GPU profiles before CPU** ones.
4. A profile **specific to these GPUs** (``gpu`` / ``gpu_device`` tag) before a generic one.
5. **Lower precision before higher** (nvfp4/mxfp4/int4, then fp8, then bf16/fp16, then fp32):
   every candidate's precision is already known to be supported by the GPUs (NIM's rule).
6. The **preference**: ``throughput`` (the default) takes the fewest GPUs, ``latency`` the most;
   among equal GPU counts, a profile whose ``profile`` tag equals the preference first.
7. Ties are broken by **id**, so the choice is the same on every run.

Manual choice (``NIM_MODEL_PROFILE`` / ``--profile``): an id (or a unique prefix of 6+ hex digits,
as the tables show 12), a name, or ``default``. A profile that is not in the manifest, or is not
runnable here, is refused with its reason and the list of runnable ones, in the order the
automatic choice takes them (LoRA ones last, labelled, unless LoRA was asked for). A pinned
profile must also fit the request: one without LoRA is refused when LoRA is asked for, and any
profile when the requested context is longer than the model's (classified incompatible).

When nothing is runnable, the error lists the closest profiles (low memory first, then those too
large for the card, those needing more GPUs -- that more of the card present would run, then those
it would run only at a shorter context, then those it never would --, a newer GPU, another GPU
type, any GPU) and what would make each runnable (see :mod:`nimctl.profiles.classify`); a profile
that would run on another node count (a model that fits no single node: its multi-node profile)
is named first, with the ``--nodes`` that runs it.

Nodes (``nodes=N``, default 1): the inventory is one node's GPUs and the group has N identical
nodes running one profile; only profiles whose ``nodes`` tag is N are runnable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from nimctl.errors import ProfileError, UsageError
from nimctl.gpu.inventory import Inventory
from nimctl.profiles.classify import LOW_MEMORY, Classified, classify
from nimctl.profiles.schema import PRECISION_BITS, Manifest, Profile

Prefer = Literal["throughput", "latency"]
AUTOMATIC = {"", "default", "auto"}


@dataclass(frozen=True)
class Selection:
    """The chosen profile, one human line saying why, and every profile's class and reason."""

    profile: Profile
    reason: str
    classification: list[Classified] = field(default_factory=list)
    pinned: bool = False

    @property
    def chosen(self) -> Classified:
        return next(c for c in self.classification if c.profile.id == self.profile.id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.profile.id,
            "name": self.profile.name,
            "reason": self.reason,
            "pinned": self.pinned,
        }


def rank_key(item: Classified, inventory: Inventory, prefer: Prefer) -> tuple[Any, ...]:
    """The sort key of the automatic rule, steps 3-7 (smaller is better)."""
    profile = item.profile
    gpus = profile.gpu_count
    return (
        0 if profile.device == "cuda" or not inventory.gpus else 1,
        0 if profile.gpu_specific else 1,
        PRECISION_BITS[profile.precision],
        gpus if prefer == "throughput" else -gpus,
        0 if profile.tags.get("profile") == prefer else 1,
        profile.id,
    )


def rank(classification: list[Classified], inventory: Inventory, prefer: Prefer) -> list[Classified]:
    """``classification`` in the order the automatic rule tries it (steps 3-7)."""
    prefer = parse_preference(prefer)
    return sorted(classification, key=lambda c: rank_key(c, inventory, prefer))


def select_profile(
    manifest: Manifest,
    inventory: Inventory,
    requested: str | None = None,
    prefer: Prefer = "throughput",
    lora: bool = False,
    *,
    max_model_len: int | None = None,
    nodes: int = 1,
) -> Selection:
    """The profile to run on ``nodes`` nodes of ``inventory``'s GPUs (the rule is in this module's
    docstring); raises ProfileError when none."""
    classification = classify(manifest, inventory, max_model_len=max_model_len, nodes=nodes)
    return choose(manifest, inventory, classification, requested, prefer, lora, nodes=nodes)


def system_text(inventory: Inventory, nodes: int = 1) -> str:
    """The machine the selection is for: the inventory, or ``2 nodes, each: 8 x NVIDIA L40S ...``."""
    return inventory.describe() if nodes == 1 else f"{nodes} nodes, each: {inventory.describe()}"


def parse_preference(prefer: str) -> Prefer:
    """The preference, case-blind; any other word is a usage error (it comes from --prefer or a variable)."""
    value = prefer.strip().lower()
    if value == "throughput" or value == "latency":
        return value
    hint = "use throughput (the fewest GPUs) or latency (the most)"
    raise UsageError(f"bad --prefer {prefer!r}", hint=hint)


def choose(
    manifest: Manifest,
    inventory: Inventory,
    classification: list[Classified],
    requested: str | None = None,
    prefer: Prefer = "throughput",
    lora: bool = False,
    *,
    ranked: list[Classified] | None = None,
    nodes: int = 1,
) -> Selection:
    """The choice alone, from a classification already made for ``nodes`` nodes (``ranked`` too, when
    the caller has it)."""
    prefer = parse_preference(prefer)
    if ranked is None:
        ranked = rank(classification, inventory, prefer)
    if requested is not None and requested.strip().lower() not in AUTOMATIC:
        return _pinned(manifest, requested.strip(), classification, ranked, inventory, lora, nodes)
    candidates = [c for c in ranked if c.runnable and c.profile.lora == lora]
    if not candidates:
        raise _none_runnable(manifest, inventory, ranked, lora, nodes)
    best = candidates[0]
    return Selection(best.profile, _why(best, candidates, inventory, prefer, lora, nodes), classification)


_PINNED_BY = "pinned by NIM_MODEL_PROFILE or --profile"


def _pinned(
    manifest: Manifest,
    requested: str,
    classification: list[Classified],
    ranked: list[Classified],
    inventory: Inventory,
    lora: bool,
    nodes: int,
) -> Selection:
    wanted = manifest.profile_by_id_or_name(requested)
    item = next((c for c in classification if wanted is not None and c.profile.id == wanted.id), None)
    runnable = _runnable_list(ranked, lora)
    if item is None:
        raise ProfileError(
            f"profile {requested!r} is not in the {manifest.name} manifest ({manifest.path}); {_PINNED_BY}",
            hint=f"runnable here: {runnable}; run `nimctl profiles list {manifest.name}` for all profiles",
        )
    if not item.runnable:
        label = "low memory" if item.status == LOW_MEMORY else "incompatible"
        raise ProfileError(
            f"pinned profile {item.profile.name} ({item.profile.id[:12]}) cannot run here "
            f"({label}): {item.reason}; {_PINNED_BY}",
            hint=f"runnable here: {runnable}; or unset NIM_MODEL_PROFILE (or use 'default') "
            "to choose automatically",
        )
    if lora and not item.profile.lora:
        lora_ones = [c for c in ranked if c.runnable and c.profile.lora]
        raise ProfileError(
            f"pinned profile {item.profile.name} ({item.profile.id[:12]}) has no LoRA support, and LoRA "
            f"is asked for (NIM_PEFT_SOURCE or --lora-dir); {_PINNED_BY}",
            hint=f"runnable LoRA profiles here: {_names(lora_ones) or 'none'}; or drop the LoRA request",
        )
    return Selection(
        item.profile,
        f"{item.profile.name}: pinned by the user; {item.reason} on {system_text(inventory, nodes)}",
        classification,
        pinned=True,
    )


def _names(items: list[Classified]) -> str:
    return ", ".join(f"{c.profile.name} ({c.profile.id[:12]})" for c in items)


def _runnable_list(ranked: list[Classified], lora: bool) -> str:
    """The runnable profiles in the order the automatic choice takes them; the others (LoRA ones,
    unless LoRA was asked for) after them, under their own label, as it would never pick them."""
    runnable = [c for c in ranked if c.runnable]
    first = [c for c in runnable if c.profile.lora == lora]
    others = [c for c in runnable if c.profile.lora != lora]
    text = _names(first) or "none"
    if others:
        text += f"; {'without' if lora else 'with'} LoRA: {_names(others)}"
    return text


def _none_runnable(
    manifest: Manifest, inventory: Inventory, ranked: list[Classified], lora: bool, nodes: int
) -> ProfileError:
    system = system_text(inventory, nodes)
    if lora and any(c.runnable for c in ranked):
        return ProfileError(
            f"no runnable LoRA profile for {manifest.name} on {system}",
            hint=f"runnable without LoRA: {_names([c for c in ranked if c.runnable])}",
        )
    # Closest first (see Classified.distance), then the fewest GPUs and the least memory.
    closest = sorted(
        (c for c in ranked if c.profile.lora == lora and c.runs_with_nodes is None),
        key=lambda c: (c.distance, c.profile.gpu_count, c.memory.total),
    )[:3]
    suggestions = "; ".join(f"{c.profile.name}: {c.fix or c.reason}" for c in closest)
    hint = f"closest: {suggestions}" if suggestions else None
    # What runs on another node count is the answer, not a near miss: name it first.
    elsewhere = [c for c in ranked if c.runs_with_nodes is not None and c.profile.lora == lora]
    if elsewhere:
        runs = "; ".join(f"{c.profile.name} runs with {c.fix}" for c in elsewhere)
        hint = runs + (f"; {hint}" if hint else "")
    return ProfileError(f"no runnable profile for {manifest.name} on {system}", hint=hint)


def _why(
    best: Classified,
    candidates: list[Classified],
    inventory: Inventory,
    prefer: Prefer,
    lora: bool,
    nodes: int,
) -> str:
    profile = best.profile
    if len(candidates) == 1:
        rule = "the only runnable" + (" LoRA" if lora else "") + " profile"
    else:
        parts = _rule_steps(best, candidates, inventory, prefer)
        rule = f"first of {len(candidates)} runnable by the rule: " + ", ".join(parts)
    return f"{profile.name}: {rule}; {best.reason}; on {system_text(inventory, nodes)}"


def _rule_steps(
    best: Classified, candidates: list[Classified], inventory: Inventory, prefer: Prefer
) -> list[str]:
    """The steps of the rule as they applied to ``best``.

    A superlative ("lowest precision", "fewest GPUs") is claimed over all candidates only when it
    holds over all of them: an earlier step (GPU-specific before generic) can outrank a profile of
    lower precision, and then that earlier step is what decided, so it is the one named.
    """
    profile = best.profile
    keys = {c.profile.id: rank_key(c, inventory, prefer) for c in candidates}
    best_key = keys[profile.id]

    def tied_on(steps: int) -> list[Classified]:
        return [c for c in candidates if keys[c.profile.id][:steps] == best_key[:steps]]

    gpu = profile.tags.get("gpu") or profile.tags.get("gpu_device")
    bits = PRECISION_BITS[profile.precision]
    lower = [c for c in candidates if PRECISION_BITS[c.profile.precision] < bits]
    parts = []
    if profile.device == "cuda" and any(c.profile.device != "cuda" for c in lower):
        parts.append("a GPU profile (so before the lower-precision CPU ones)")
    if profile.gpu_specific:
        before = (
            " (so before the lower-precision generic ones)"
            if any(not c.profile.gpu_specific for c in lower)
            else ""
        )
        parts.append(f"specific to {gpu}{before}")
    peers = "ones specific to " + str(gpu) if profile.gpu_specific else "generic ones"
    if not lower:
        parts.append(f"{profile.precision} (lowest precision among them)")
    elif any(PRECISION_BITS[c.profile.precision] > bits for c in tied_on(2)):
        parts.append(f"{profile.precision} (lowest precision among the {peers})")
    else:
        parts.append(profile.precision)
    if profile.device == "cuda":
        parts.append(_gpu_count_step(best, candidates, tied_on(3), prefer, f"{profile.precision} {peers}"))
    return parts


def _gpu_count_step(
    best: Classified, candidates: list[Classified], tied: list[Classified], prefer: Prefer, tied_label: str
) -> str:
    count = best.profile.gpu_count
    text = f"{count} GPU{'s' if count > 1 else ''}"
    if best.profile.nodes > 1:
        text += f" ({best.profile.gpus_per_node} per node)"
    most = "fewest" if prefer == "throughput" else "most"
    pick = min if prefer == "throughput" else max
    if count == pick(c.profile.gpu_count for c in candidates if c.profile.device == "cuda"):
        return f"{text} ({prefer}: {most} GPUs)"
    if len({c.profile.gpu_count for c in tied}) > 1:
        return f"{text} ({prefer}: {most} GPUs among the {tied_label})"
    return text
