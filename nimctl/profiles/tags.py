"""Profile tags: the values nimctl understands, what each precision needs, and the profile's name.

Tags are strings as in NIM's manifests. ``gpu`` and ``gpu_device`` are checked against the GPU
catalogue (``nimctl/data/gpus.yaml``), which is also what matches them to a GPU at selection.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nimctl.gpu.catalog import entries_for_tag, entry_for_pci, families

# Bits per weight of each precision tag; the automatic choice prefers fewer bits (NIM's rule).
PRECISION_BITS: dict[str, int] = {
    "nvfp4": 4,
    "mxfp4": 4,
    "int4": 4,
    "fp8": 8,
    "fp16": 16,
    "bf16": 16,
    "fp32": 32,
}

# The lowest CUDA compute capability with native support for each precision. bf16 needs Ampere,
# fp8 needs Ada/Hopper, nvfp4 Blackwell (the figures). mxfp4 and int4 run through
# vLLM's Marlin kernels on older cards, but NIM ships them for Hopper and Ampere respectively,
# so the thresholds here are the conservative ones.
MIN_COMPUTE_CAPABILITY: dict[str, tuple[int, int]] = {
    "fp32": (0, 0),
    "fp16": (7, 0),
    "int4": (8, 0),
    "bf16": (8, 0),
    "fp8": (8, 9),
    "mxfp4": (9, 0),
    "nvfp4": (10, 0),
}

Precision = Literal["nvfp4", "mxfp4", "int4", "fp8", "fp16", "bf16", "fp32"]
_POSITIVE_INT = r"^[1-9][0-9]*$"
_PCI_ID = r"^[0-9a-f]{4}:[0-9a-f]{4}$"


class StrictModel(BaseModel):
    # Unknown fields are refused: a typo in a manifest (a tag included) must not pass silently.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileTags(StrictModel):
    """The tags nimctl understands; their values are strings as in NIM's manifests."""

    llm_engine: Literal["vllm"]
    precision: Precision
    tp: Annotated[str, StringConstraints(pattern=_POSITIVE_INT)]
    pp: Annotated[str, StringConstraints(pattern=_POSITIVE_INT)]
    profile: Literal["latency", "throughput"]
    device: Literal["cuda", "cpu"] = "cuda"
    feat_lora: Literal["true", "false"] = "false"
    gpu: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")] | None = None
    gpu_device: Annotated[str, StringConstraints(pattern=_PCI_ID)] | None = None
    number_of_gpus: Annotated[str, StringConstraints(pattern=_POSITIVE_INT)] | None = None
    # Nodes the profile spans: tensor parallel within a node, pipeline parallel across them. Every
    # node holds the same share, so tp x pp must divide evenly (number_of_gpus stays the total).
    nodes: Annotated[str, StringConstraints(pattern=_POSITIVE_INT)] = "1"

    # A `gpu` or `gpu_device` the catalogue does not know would load and then never match a GPU:
    # the catalogue (nimctl/data/gpus.yaml, `nimctl gpus --catalog`) is the vocabulary of both.
    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, value: str | None) -> str | None:
        if value is not None and not entries_for_tag(value):
            raise ValueError(
                f"{value!r} is not a GPU of the catalogue (use a family: {', '.join(families())})"
            )
        return value

    @field_validator("gpu_device")
    @classmethod
    def _known_gpu_device(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        gpu = info.data.get("gpu")
        if gpu:
            ids = [pci for entry in entries_for_tag(gpu) for pci in entry.pci_ids]
            if value not in ids:
                raise ValueError(f"{value!r} is not a PCI id of {gpu} (its ids: {', '.join(ids)})")
        elif entry_for_pci(value) is None:
            raise ValueError(f"{value!r} is not a PCI id of any GPU in the catalogue")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ProfileTags:
        gpus = int(self.tp) * int(self.pp)
        if self.number_of_gpus is not None and int(self.number_of_gpus) != gpus:
            raise ValueError(f"number_of_gpus is {self.number_of_gpus} but tp x pp is {gpus}")
        nodes = int(self.nodes)
        if gpus % nodes:
            raise ValueError(
                f"tp x pp is {gpus}, not divisible by nodes {nodes}: every node runs the same number of GPUs"
            )
        if self.device == "cpu" and (self.gpu or self.gpu_device or gpus != nodes):
            if nodes == 1:
                raise ValueError("a cpu profile has tp 1, pp 1 and no gpu/gpu_device tag")
            # vLLM's CPU backend runs one engine process (one rank) per node.
            raise ValueError(
                f"a cpu profile across {nodes} nodes has tp x pp = {nodes} (one CPU rank per node) "
                "and no gpu/gpu_device tag"
            )
        return self


# Tags that a name spells out only when another profile of the manifest would otherwise share it.
QUALIFIERS = ("profile", "gpu_device")


def profile_name(tags: dict[str, str], qualify: Collection[str] = ()) -> str:
    """NIM's human name: ``<engine>-<precision>-tp<N>-pp<M>[-<profile>][-<gpu>|-cpu][-<K>node][-lora]``.

    The short form (no ``qualify``) is what most profiles get: ``vllm-fp8-tp1-pp1-h100``. Where
    two profiles of one manifest would share it, :class:`Manifest` names them with the tags that
    tell them apart: ``"profile"`` adds ``-latency`` / ``-throughput`` (NIM's
    ``vllm-fp8-tp2-pp1-throughput-h100``), ``"gpu_device"`` names the exact card by its catalogue
    key instead of the family (``-h100-sxm-80gb`` beside ``-h100-pcie-80gb``). A profile spanning
    several nodes says how many (``vllm-bf16-tp8-pp2-2node``); a single-node one keeps its name.
    """
    parts = [tags["llm_engine"], tags["precision"], f"tp{tags['tp']}", f"pp{tags['pp']}"]
    if "profile" in qualify and tags.get("profile"):
        parts.append(tags["profile"])
    device = tags.get("gpu_device")
    if tags.get("device") == "cpu":
        parts.append("cpu")
    elif tags.get("gpu") and device and "gpu_device" in qualify:
        entry = entry_for_pci(device)
        parts.append(entry.key.lower() if entry else f"{tags['gpu'].lower()}-{device.split(':')[0]}")
    elif tags.get("gpu"):
        parts.append(tags["gpu"].lower())
    elif device:
        parts.append(device.split(":")[0])
    nodes = tags.get("nodes", "1")
    if nodes != "1":
        parts.append(f"{nodes}node")
    if tags.get("feat_lora") == "true":
        parts.append("lora")
    return "-".join(parts)
