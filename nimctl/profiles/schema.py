"""The pydantic schema of a model manifest (``profiles/<model>.yaml``).

A manifest names one model (where it comes from, what it is called when served, its licence,
its size and the architecture figures the memory estimate needs) and lists its *profiles*: the
pre-validated engine configurations, each with a 64-hex id, string tags close to NIM's, and the
engine arguments and environment the profile implies. Every field is checked here; the loader
turns a validation failure into one line naming the file, the place and the problem.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    StringConstraints,
    field_validator,
    model_validator,
)

from nimctl.engine_flags import flag_value
from nimctl.profiles.tags import (  # re-exported: the schema's public names
    MIN_COMPUTE_CAPABILITY,
    PRECISION_BITS,
    QUALIFIERS,
    Precision,
    ProfileTags,
    StrictModel,
    profile_name,
)

__all__ = [
    "MIN_COMPUTE_CAPABILITY",
    "MIN_ID_PREFIX",
    "PRECISION_BITS",
    "License",
    "Manifest",
    "ModelInfo",
    "Precision",
    "Profile",
    "ProfileTags",
    "profile_name",
]

_HEX64 = r"^[0-9a-f]{64}$"
_SLUG = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# Ids are shown shortened to 12 digits in tables; any unambiguous prefix this long is accepted.
MIN_ID_PREFIX = 6

Slug = Annotated[str, StringConstraints(pattern=_SLUG, min_length=1, max_length=128)]


def _parse_count(value: Any) -> Any:
    """Parameter counts may be written ``8_292_166_656``, ``8.29e9`` or ``"8.29B"``."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMBT]?)\s*", value, re.IGNORECASE)
        if not match:
            raise ValueError("write a number, e.g. 8292166656, 8.29e9 or '8.29B'")
        scale = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}[match.group(2).upper()]
        return int(Decimal(match.group(1)) * scale)  # Decimal: 8.29B is exactly 8_290_000_000
    if isinstance(value, float):
        return round(value)
    return value


ParameterCount = Annotated[int, BeforeValidator(_parse_count), Field(gt=0)]


class License(StrictModel):
    name: str = Field(min_length=1)
    url: str | None = None


class ModelInfo(StrictModel):
    """The model, and the figures of its language model that the memory estimate needs."""

    name: Slug
    source: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9+.-]*://\S+$")]
    served_name: str = Field(min_length=1)
    description: str | None = None
    license: License | None = None
    modalities: list[Literal["text", "image", "video", "audio"]] = Field(default_factory=lambda: ["text"])
    parameters: ParameterCount
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    max_context: int = Field(gt=0)
    # Models that interleave sliding-window layers (Gemma 3) keep only `sliding_window` tokens of
    # KV in those layers; `full_attention_layers` counts the layers that keep the whole context.
    sliding_window: int | None = Field(default=None, gt=0)
    full_attention_layers: int | None = Field(default=None, ge=0)
    tool_call_parser: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelInfo:
        if self.num_attention_heads % self.num_kv_heads:
            raise _FieldError("num_kv_heads", "must divide num_attention_heads")
        if (self.sliding_window is None) != (self.full_attention_layers is None):
            raise _FieldError("sliding_window", "give sliding_window and full_attention_layers together")
        if self.full_attention_layers is not None and self.full_attention_layers > self.num_layers:
            raise _FieldError("full_attention_layers", "more than num_layers")
        return self


class Profile(StrictModel):
    """One engine configuration. ``tags`` is kept as the plain ``dict[str, str]`` it was written as."""

    id: Annotated[str, StringConstraints(pattern=_HEX64)]
    name: str = ""
    description: str | None = None
    tags: dict[str, str]
    engine_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("tags", mode="before")
    @classmethod
    def _string_tags(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key, tag in value.items():
                if not isinstance(tag, str):
                    raise ValueError(f'tag {key!r} must be a string: write {key}: "{_yaml_scalar(tag)}"')
        return value

    @field_validator("tags")
    @classmethod
    def _known_tags(cls, value: dict[str, str]) -> dict[str, str]:
        ProfileTags.model_validate(value)
        return value

    @field_validator("engine_args", mode="before")
    @classmethod
    def _string_args(cls, value: Any) -> Any:
        if isinstance(value, list):
            for arg in value:
                if not isinstance(arg, str):
                    raise ValueError(f"engine arguments are strings: quote {_yaml_scalar(arg)!r}")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _string_env(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(item, str):
                    raise ValueError(f'environment values are strings: write {key}: "{_yaml_scalar(item)}"')
        return value

    @model_validator(mode="after")
    def _parallelism_in_args(self) -> Profile:
        # The tags drive selection and the arguments drive vLLM: they must say the same thing.
        for flag, tag in (("--tensor-parallel-size", "tp"), ("--pipeline-parallel-size", "pp")):
            value = self.engine_arg(flag)
            wanted = self.tags.get(tag, "1")
            if value is None and wanted != "1":
                raise _FieldError("engine_args", f"tag {tag} is {wanted} but {flag} {wanted} is missing")
            if value is not None and value != wanted:
                raise _FieldError("engine_args", f"{flag} {value} disagrees with tag {tag}: {wanted!r}")
        return self

    # The name a manifest wrote, checked by Manifest once it knows which names need qualifying.
    _declared_name: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _named(self) -> Profile:
        self._declared_name = self.name
        object.__setattr__(self, "name", profile_name(self.tags))
        return self

    # -- derived figures --------------------------------------------------------------------
    @property
    def precision(self) -> str:
        return self.tags["precision"]

    @property
    def tp(self) -> int:
        return int(self.tags["tp"])

    @property
    def pp(self) -> int:
        return int(self.tags["pp"])

    @property
    def gpu_count(self) -> int:
        """GPUs the profile needs (tp x pp) across all its nodes; 0 for a CPU profile."""
        return 0 if self.device == "cpu" else self.tp * self.pp

    @property
    def nodes(self) -> int:
        """Nodes the profile spans (the ``nodes`` tag, default 1)."""
        return int(self.tags.get("nodes", "1"))

    @property
    def gpus_per_node(self) -> int:
        """GPUs each node needs (tp x pp / nodes; the schema checks it divides); 0 for a CPU profile."""
        return self.gpu_count // self.nodes

    @property
    def device(self) -> str:
        return self.tags.get("device", "cuda")

    @property
    def lora(self) -> bool:
        return self.tags.get("feat_lora") == "true"

    @property
    def gpu_specific(self) -> bool:
        return bool(self.tags.get("gpu") or self.tags.get("gpu_device"))

    def engine_arg(self, flag: str) -> str | None:
        """The value ``flag`` gets from the engine arguments, as vLLM reads them (the last one given)."""
        return flag_value(self.engine_args, flag)

    def to_public_dict(self) -> dict[str, Any]:
        """The JSON form served at ``/v1/manifest`` and printed by ``--format json``."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "tags": dict(self.tags),
            "engine_args": list(self.engine_args),
            "env": dict(self.env),
        }


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Manifest(StrictModel):
    """A parsed manifest; ``path`` and ``text`` (the raw YAML) are kept beside the fields."""

    schema_version: Literal[1] = 1
    model: ModelInfo
    profiles: list[Profile] = Field(min_length=1)

    _path: Path = PrivateAttr(default=Path("<memory>"))
    _text: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _unique(self) -> Manifest:
        seen_ids: dict[str, int] = {}
        for index, profile in enumerate(self.profiles):
            if profile.id in seen_ids:
                raise _DuplicateError(
                    index, "id", f"duplicate id (already used by profiles[{seen_ids[profile.id]}])"
                )
            seen_ids[profile.id] = index
        self._name_profiles()
        return self

    def _name_profiles(self) -> None:
        """Give each profile its name: the short one, qualified where profiles would share it."""
        by_short: dict[str, list[int]] = {}
        for index, profile in enumerate(self.profiles):
            by_short.setdefault(profile.name, []).append(index)
        seen: dict[str, int] = {}
        for short, indices in by_short.items():
            qualify = [
                tag for tag in QUALIFIERS if len({self.profiles[i].tags.get(tag) for i in indices}) > 1
            ]
            for index in indices:
                profile = self.profiles[index]
                name = profile_name(profile.tags, qualify)
                declared = profile._declared_name
                if declared and declared != name:
                    other = next((i for i in indices if i != index), None)
                    why = "" if other is None else f", as profiles[{other}] shares {short!r}"
                    raise _DuplicateError(
                        index, "name", f"{declared!r} does not match its tags (expected {name!r}{why})"
                    )
                if name in seen:
                    raise _DuplicateError(
                        index,
                        "tags",
                        f"duplicate profile {name!r}: same engine, precision, tp, pp, profile, GPU, nodes "
                        f"and LoRA tags as profiles[{seen[name]}]",
                    )
                seen[name] = index
                object.__setattr__(profile, "name", name)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def text(self) -> str:
        return self._text

    @property
    def name(self) -> str:
        return self.model.name

    def profile_by_id_or_name(self, ref: str) -> Profile | None:
        """The profile whose id or name is ``ref``, or whose id alone starts with ``ref`` (6+ hex digits)."""
        ref = ref.strip()
        for profile in self.profiles:
            if ref in (profile.id, profile.name):
                return profile
        if len(ref) >= MIN_ID_PREFIX and re.fullmatch(r"[0-9a-f]+", ref):
            matches = [profile for profile in self.profiles if profile.id.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
        return None

    def to_public_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "path": str(self.path),
            "model": self.model.model_dump(mode="json"),
            "profiles": [profile.to_public_dict() for profile in self.profiles],
        }


class _FieldError(ValueError):
    """A model-level check that blames one field: the loader appends ``field`` to the error's place."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _DuplicateError(ValueError):
    """Carries the place of a duplicate so the loader can point at the right profile."""

    def __init__(self, index: int, field: str, message: str) -> None:
        super().__init__(message)
        self.loc: tuple[str | int, ...] = ("profiles", index, field)
