"""Classifying each profile against an inventory: runnable, low memory, or incompatible, with the reason.

- **incompatible**: a CUDA profile with no GPU; too few GPUs (of the profile's type, when it names
  one by ``gpu`` or ``gpu_device``); a precision the compute capability lacks (bf16 8.0, fp8 8.9,
  nvfp4 10.0); or the profile does not fit the whole card even with the shortest useful context
  (weights + overhead + the KV cache of 2048 tokens).
- **low memory**: the card could hold it but its free memory cannot now (other processes), or it
  fits only with a shorter context: the reason gives the largest ``--max-model-len`` that fits.
- A GPU in MIG mode is not counted: its memory belongs to its MIG instances, and the profiles
  are sized for whole GPUs (the reason says so when that leaves too few).
- **runnable**: everything fits; CPU profiles are always runnable (vLLM's CPU backend reserves
  the fixed KV space the profile sets).

Nodes: the inventory is one node's GPUs, and ``nodes`` (default 1) plans a group of that many
identical nodes that runs one profile across all of them. A profile runs only on its own node
count (the ``nodes`` tag): with ``nodes=1`` a 2-node profile "needs 2 nodes (--nodes 2)", with
``nodes=2`` a single-node profile is not runnable either. On its node count, a profile is judged
per node: ``tp x pp / nodes`` GPUs of this node, each holding the per-GPU estimate (the weights
and layers spread over every GPU of every node). When no profile runs on the node count asked
for, the low-memory verdicts also name a profile that would run on another one, and how many
nodes it needs (see :func:`classify`).

Each verdict but runnable has a ``fix``: what would make the profile runnable. For too few GPUs it
is judged on ``tp x pp`` idle cards like the largest capable one present: "N more GPUs" only if the
profile would then fit, "N more GPUs, then --max-model-len=..." if only a shorter context would,
else the cards it needs ("2 GPUs with more memory than NVIDIA L4: needs 36.5 GiB/GPU ...").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

from nimctl.gpu.inventory import GPU, Inventory
from nimctl.gpu.units import cc_text, gib, gib_number
from nimctl.profiles.memory import MemoryEstimate, estimate, gpu_memory_utilization
from nimctl.profiles.schema import MIN_COMPUTE_CAPABILITY, Manifest, Profile

Status = Literal["runnable", "low_memory", "incompatible"]
RUNNABLE: Status = "runnable"
LOW_MEMORY: Status = "low_memory"
INCOMPATIBLE: Status = "incompatible"
# Shorter than this, a VLM cannot take an image plus a question: not worth suggesting.
MIN_USEFUL_CONTEXT = 2048


@dataclass(frozen=True)
class Classified:
    """One profile's verdict on this inventory."""

    profile: Profile
    status: Status
    reason: str
    memory: MemoryEstimate
    gpus: tuple[int, ...] = ()  # indices of the GPUs it would use
    max_model_len: int | None = None  # for low memory: the longest context that fits
    fix: str | None = None  # what would make it runnable
    usable_per_gpu: int | None = None  # bytes the engine may use on each of its GPUs
    # For a profile of another node count: the GPUs of each node it would use there, if it would
    # run there (none for a CPU one); None when it would not run there either.
    runs_with_nodes: tuple[int, ...] | None = None
    # How far from runnable, for "closest" lists: 0 runnable, 1 low memory, 2 too large for the
    # card, 3 too few GPUs (more of the card would run it) or GPUs in MIG mode (turning it off
    # would), 4 too few GPUs and then only with a
    # shorter context, 5 too few GPUs and too large for the card anyway, 6 compute capability,
    # 7 other GPU type, 8 no GPU at all; a profile of another node count that would run there is 3,
    # one that would not run there either 9.
    distance: int = 0

    @property
    def runnable(self) -> bool:
        return self.status == RUNNABLE

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.profile.id,
            "name": self.profile.name,
            "status": self.status,
            "reason": self.reason,
            "fix": self.fix,
            "gpus": list(self.gpus),
            "max_model_len": self.max_model_len,
            "memory": {
                **self.memory.to_dict(),
                "usable_per_gpu_gib": None
                if self.usable_per_gpu is None
                else gib_number(self.usable_per_gpu),
            },
            "tags": dict(self.profile.tags),
            "nodes": self.profile.nodes,
        }


def classify(
    manifest: Manifest, inventory: Inventory, *, max_model_len: int | None = None, nodes: int = 1
) -> list[Classified]:
    """Every profile of ``manifest``, in manifest order, with its class and reason, on ``nodes``
    identical nodes of ``inventory``'s GPUs."""
    items = [
        classify_profile(manifest, p, inventory, max_model_len=max_model_len, nodes=nodes)
        for p in manifest.profiles
    ]
    return _advise_other_node_counts(items, inventory)


def classify_profile(
    manifest: Manifest,
    profile: Profile,
    inventory: Inventory,
    *,
    max_model_len: int | None = None,
    nodes: int = 1,
) -> Classified:
    memory = estimate(manifest.model, profile, context=max_model_len)
    longest = manifest.model.max_context
    if max_model_len is not None and max_model_len > longest:
        # vLLM refuses a context past the model's own (max_position_embeddings) on any hardware.
        return Classified(
            profile,
            INCOMPATIBLE,
            f"a context of {max_model_len} tokens is longer than {manifest.model.name}'s {longest}",
            memory,
            fix=f"ask for --max-model-len {longest} or less",
            distance=2,
        )
    if profile.nodes != nodes:
        return _other_node_count(manifest, profile, inventory, memory, max_model_len, nodes)
    if profile.device == "cpu":
        across = f" across {nodes} nodes" if nodes > 1 else ""
        return Classified(profile, RUNNABLE, f"runs on the CPU (vLLM CPU backend){across}", memory)
    item = _classify_on_a_node(manifest, profile, inventory, memory, nodes)
    if nodes > 1 and item.gpus:
        # The verdict of one node holds for each: say it is about the group.
        return replace(item, reason=f"{group_text(inventory, item.gpus, nodes)}: {item.reason}")
    return item


def group_text(inventory: Inventory, gpus: tuple[int, ...], nodes: int) -> str:
    """``2 nodes x 8 x NVIDIA L40S``: the GPUs a profile uses on each of ``nodes`` nodes."""
    names = sorted({gpu.name for gpu in inventory.gpus if gpu.index in gpus})
    return f"{nodes} node{'s' if nodes > 1 else ''} x {len(gpus)} x {' + '.join(names)}"


def _other_node_count(
    manifest: Manifest,
    profile: Profile,
    inventory: Inventory,
    memory: MemoryEstimate,
    max_model_len: int | None,
    nodes: int,
) -> Classified:
    """A profile of another node count: a group runs one profile across all its nodes, so it is not
    runnable here; the fix is its own node count, judged on that many nodes of these GPUs."""
    wanted = profile.nodes
    there = classify_profile(manifest, profile, inventory, max_model_len=max_model_len, nodes=wanted)
    if wanted == 1:
        reason = f"a single-node profile: a group of {nodes} nodes runs one profile across all of them"
    else:
        reason = f"needs {wanted} nodes (--nodes {wanted})" + ("" if nodes == 1 else f", not {nodes}")
    flag = f"--nodes {wanted}"
    if there.runnable:
        where = f" ({group_text(inventory, there.gpus, wanted)})" if there.gpus else ""
        return Classified(
            profile, INCOMPATIBLE, reason, memory, fix=flag + where, distance=3, runs_with_nodes=there.gpus
        )
    fix = f"{flag}, then {there.fix}" if there.fix else flag
    return Classified(profile, INCOMPATIBLE, reason, memory, fix=fix, distance=9)


def _advise_other_node_counts(items: list[Classified], inventory: Inventory) -> list[Classified]:
    """When nothing runs on the node count asked for, the low-memory advice also names the profiles
    that would run on another one (a model too large for one node: the multi-node profile) and the
    node count: a shorter context is not the only way out."""
    if any(item.runnable for item in items):
        return items
    others = [item for item in items if item.runs_with_nodes is not None]
    if not others:
        return items
    by_count: dict[int, list[str]] = {}
    for item in others:
        by_count.setdefault(item.profile.nodes, []).append(item.profile.name)
    advice = "".join(f"; or --nodes {count}: {', '.join(names)}" for count, names in sorted(by_count.items()))
    # The reason only: the selection's error names those profiles first, beside these fixes.
    return [
        replace(item, reason=item.reason + advice) if item.status == LOW_MEMORY else item for item in items
    ]


def _classify_on_a_node(
    manifest: Manifest, profile: Profile, inventory: Inventory, memory: MemoryEstimate, nodes: int
) -> Classified:
    """The verdict on one node of ``inventory``'s GPUs: ``tp x pp / nodes`` of them for this profile."""
    needed = profile.gpus_per_node
    per_node = " per node" if nodes > 1 else ""
    if not inventory.gpus:
        return Classified(
            profile,
            INCOMPATIBLE,
            f"needs {_gpus(needed)}{per_node}; {inventory.reason or 'no GPU found'}",
            memory,
            fix=f"a machine with {_gpus(needed, _wanted_type(profile))}{per_node}",
            distance=8,
        )
    candidates = [gpu for gpu in inventory.gpus if _matches_type(profile, gpu)]
    if not candidates:
        here = ", ".join(sorted({gpu.name for gpu in inventory.gpus}))
        return Classified(
            profile,
            INCOMPATIBLE,
            f"built for {_wanted_type(profile)}; this machine has {here}",
            memory,
            fix=f"run on {_gpus(needed, _wanted_type(profile))}{per_node}",
            distance=7,
        )
    # A GPU in MIG mode has handed its memory to its instances: not a whole card to plan for.
    in_mig = [gpu for gpu in candidates if gpu.mig_mode]
    candidates = [gpu for gpu in candidates if not gpu.mig_mode]
    if not candidates:
        indices = ", ".join(str(gpu.index) for gpu in in_mig)
        return Classified(
            profile,
            INCOMPATIBLE,
            f"GPU{'s' if len(in_mig) > 1 else ''} {indices} in MIG mode: profiles are sized for whole GPUs",
            memory,
            fix=f"disable MIG mode (nvidia-smi -i {in_mig[0].index} -mig 0) or use a GPU without it",
            distance=3,
        )
    mig_note = f" ({len(in_mig)} more in MIG mode, not counted)" if in_mig else ""
    required_cc = MIN_COMPUTE_CAPABILITY[profile.precision]
    need_cc = cc_text(required_cc)
    capable = [
        gpu for gpu in candidates if gpu.compute_capability is None or gpu.compute_capability >= required_cc
    ]
    if not capable:
        # Name the best card there is: if even it falls short, every other one does too.
        strongest = max(candidates, key=lambda g: g.compute_capability or (0, 0))
        return Classified(
            profile,
            INCOMPATIBLE,
            f"{profile.precision} needs compute capability {need_cc}, {strongest.name} has "
            f"{cc_text(strongest.compute_capability or (0, 0))}",
            memory,
            fix=f"a GPU with compute capability >= {need_cc}",
            distance=6,
        )
    if len(capable) < needed:
        kind = f" {_wanted_type(profile)}" if profile.gpu_specific else ""
        missing = needed - len(capable)
        more = f"{missing} more{kind} GPU" + ("s" if missing > 1 else "") + per_node
        lacking_cc = len(capable) < len(candidates)  # some GPUs are there but lack the precision
        if lacking_cc:
            more += f" with compute capability >= {need_cc}"
        fix, distance = _fix_with_more_gpus(manifest, profile, memory, capable, more)
        if lacking_cc:
            verb = "has" if len(capable) == 1 else "have"
            return Classified(
                profile,
                INCOMPATIBLE,
                f"needs {needed}{kind} GPUs{per_node} with compute capability >= {need_cc} "
                f"({profile.precision}); {len(capable)} of {len(candidates)} {verb} it{mig_note}",
                memory,
                fix=fix,
                distance=distance,
            )
        return Classified(
            profile,
            INCOMPATIBLE,
            f"needs {needed}{kind} GPUs{per_node}, {len(capable)} available{per_node}{mig_note}",
            memory,
            fix=fix,
            distance=distance,
        )
    # The GPUs with the most free memory: what the engine will get when this is the profile run.
    chosen = sorted(capable, key=lambda g: (-g.memory_free, g.index))[:needed]
    return _classify_memory(manifest, profile, memory, tuple(chosen))


def _classify_memory(
    manifest: Manifest,
    profile: Profile,
    memory: MemoryEstimate,
    chosen: tuple[GPU, ...],
) -> Classified:
    utilisation = gpu_memory_utilization(profile)
    total = min(gpu.memory_total for gpu in chosen)
    free = min(gpu.memory_free for gpu in chosen)
    card_budget = int(total * utilisation)
    # vLLM refuses to start when free memory is below its share of the card, so a busy GPU only
    # runs the profile with a lower --gpu-memory-utilization: the usable memory is what is free.
    busy = free < card_budget
    usable = min(card_budget, free)
    indices = tuple(gpu.index for gpu in chosen)
    need = memory.total
    figures = f"needs {gib(need)} GiB/GPU, {gib(usable)} GiB usable"
    if need <= usable and not busy:
        return Classified(profile, RUNNABLE, f"fits: {figures}", memory, indices, usable_per_gpu=usable)
    shortest = min(MIN_USEFUL_CONTEXT, memory.context)
    busiest = min(chosen, key=lambda g: g.memory_free)
    if need <= usable:  # fits what is free, but vLLM would ask for more than is free
        share = math.ceil(need / total * 100) / 100
        return Classified(
            profile,
            LOW_MEMORY,
            f"GPU {busiest.index} has {gib(free)} of {gib(total)} GiB free (others use the rest); {figures}",
            memory,
            indices,
            fix=f"pass --gpu-memory-utilization={share:.2f} or free GPU memory",
            usable_per_gpu=usable,
            distance=1,
        )
    longest = _round_context(memory.max_context_within(usable))
    if longest >= shortest:
        fix = f"try --max-model-len={longest} to reduce to >={gib(memory.total_for(longest))} GiB/GPU"
        if busy:
            share = math.ceil(memory.total_for(longest) / total * 100) / 100
            fix += f" with --gpu-memory-utilization={share:.2f}"
        return Classified(
            profile,
            LOW_MEMORY,
            f"requires >={gib(need)} GiB/GPU at {memory.context} tokens, {gib(usable)} GiB usable; {fix}",
            memory,
            indices,
            max_model_len=longest,
            fix=fix,
            usable_per_gpu=usable,
            distance=1,
        )
    if memory.total_for(shortest) <= card_budget:
        return Classified(
            profile,
            LOW_MEMORY,
            f"GPU {busiest.index} has only {gib(free)} of {gib(total)} GiB free; {figures}",
            memory,
            indices,
            fix="free GPU memory (other processes hold it)",
            usable_per_gpu=usable,
            distance=1,
        )
    # Not even the shortest useful context fits the whole card: say what that estimate is made of,
    # since the KV cache of those tokens is part of it (weights + overhead alone may fit).
    more = _next_tp(profile, manifest.model.num_attention_heads)
    smallest = memory.total_for(shortest)
    return Classified(
        profile,
        INCOMPATIBLE,
        f"too large: needs {gib(smallest)} GiB/GPU even at {shortest} tokens (weights "
        f"{gib(memory.weights)} + KV cache {gib(smallest - memory.static)} + overhead "
        f"{gib(memory.overhead)}), {gib(card_budget)} GiB usable on {chosen[0].name}",
        memory,
        indices,
        fix=f"a lower precision or tp{more}" if more else "a GPU with more memory or a lower precision",
        usable_per_gpu=usable,
        distance=2,
    )


def _fix_with_more_gpus(
    manifest: Manifest, profile: Profile, memory: MemoryEstimate, present: list[GPU], more: str
) -> tuple[str, int]:
    """What would make a profile that lacks GPUs runnable, and how far it is (see ``Classified``).

    More GPUs help only if the profile then fits: it is judged on ``tp x pp`` idle cards like the
    largest one present (what is in use now is for the free-memory advice, once the GPUs are
    there). When even those could not hold it, the card is the problem: say what each GPU needs.
    """
    card = max(present, key=lambda g: (g.memory_total, -g.index))
    idle = replace(card, memory_free=card.memory_total, memory_used=0)
    then = _classify_memory(manifest, profile, memory, (idle,) * profile.gpus_per_node)
    if then.runnable:
        return more, 3
    if then.status == LOW_MEMORY:  # only with a shorter context
        return f"{more}, then {then.fix}", 4
    shortest = min(MIN_USEFUL_CONTEXT, memory.context)
    budget = then.usable_per_gpu or 0  # an idle card: its whole share for the engine
    kind = f" {_wanted_type(profile)}" if profile.gpu_specific else ""
    return (
        f"{profile.gpus_per_node}{kind} GPUs with more memory than {card.name}: needs "
        f"{gib(memory.total_for(shortest))} GiB/GPU even at {shortest} tokens, {gib(budget)} GiB usable",
        5,
    )


def _round_context(tokens: int) -> int:
    """Round down to a multiple of 1024 (256 below 4096) so the hint is a tidy figure."""
    step = 1024 if tokens >= 4096 else 256
    return tokens // step * step


def _next_tp(profile: Profile, heads: int) -> int | None:
    tp = profile.tp * 2
    return tp if heads % tp == 0 else None


def _matches_type(profile: Profile, gpu: GPU) -> bool:
    device = profile.tags.get("gpu_device")
    if device and gpu.pci_id != device:
        return False
    tag = profile.tags.get("gpu")
    return not tag or gpu.matches_gpu_tag(tag)


def _wanted_type(profile: Profile) -> str:
    parts = [profile.tags["gpu"]] if profile.tags.get("gpu") else []
    if profile.tags.get("gpu_device"):
        parts.append(f"PCI {profile.tags['gpu_device']}")
    return " ".join(parts) if parts else "CUDA"


def _gpus(count: int, kind: str = "CUDA") -> str:
    return f"{count} {kind} GPU" + ("s" if count != 1 else "")
