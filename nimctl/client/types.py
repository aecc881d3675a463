"""Typed results of the server's endpoints.

Lenient on purpose (``extra="allow"``, most fields optional): a newer server or a real
NIM may add fields, and the client must keep working. ``raw`` dumps (``model_dump``)
keep those extra fields, so ``--format json`` shows everything the server said.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)

    def raw(self) -> dict[str, Any]:
        """The object as the server sent it (extra fields included)."""
        return self.model_dump(mode="json", by_alias=True)


# -- management ------------------------------------------------------------------
class HealthStatus(_Lenient):
    object: str | None = None
    message: str | None = None
    status: str | None = None


class HealthReport(_Lenient):
    """What ``nimctl health`` reports: both probes of one server."""

    url: str
    live: bool
    ready: bool
    message: str | None = None


class ModelInfo(_Lenient):
    short_name: str | None = Field(default=None, alias="shortName")
    model_url: str | None = Field(default=None, alias="modelUrl")
    max_model_len: int | None = Field(default=None, alias="maxModelLen")


class LicenseSummary(_Lenient):
    name: str | None = None
    path: str | None = None
    sha: str | None = None
    size: int | None = None
    url: str | None = None
    type: str | None = None


class License(LicenseSummary):
    content: str = ""


class LoraAdapter(_Lenient):
    """One adapter the server serves; ``origin``: found in its folder, or loaded at run time."""

    name: str
    path: str | None = None
    base: str | None = None
    rank: int | None = None
    alpha: float | None = None
    target_modules: list[str] = Field(default_factory=list)
    origin: str | None = None  # "folder" | "runtime"
    unloading: bool = False  # removed, and waiting for its requests in flight to end


class SkippedLoraAdapter(_Lenient):
    """An adapter folder the server does not serve, and why (a bad config, missing weights...)."""

    name: str
    path: str | None = None
    reason: str | None = None


class LoraAdapters(_Lenient):
    """``/v1/metadata``'s ``loraAdapters``: the adapters folder, how it is kept up to date, and what
    is served or skipped."""

    source: str | None = None
    refresh_interval: float | None = Field(default=None, alias="refreshInterval")  # None: scanned once
    runtime_updates: bool = Field(default=False, alias="runtimeUpdates")
    max_lora_rank: int | None = Field(default=None, alias="maxLoraRank")
    max_loras: int | None = Field(default=None, alias="maxLoras")
    loaded: list[LoraAdapter] = Field(default_factory=list)
    skipped: list[SkippedLoraAdapter] = Field(default_factory=list)

    def find(self, name: str) -> LoraAdapter | SkippedLoraAdapter | None:
        """The adapter called ``name``, served or skipped; None when the server has neither."""
        return next((a for a in [*self.loaded, *self.skipped] if a.name == name), None)


class LoraAdapterResult(_Lenient):
    """The answer to a runtime load or unload (vLLM's routes, answered by the front)."""

    object: str | None = None
    name: str | None = None
    unloaded: bool | None = None  # False: requests on it are in flight; it goes after the last one
    unloading: bool | None = None


class Metadata(_Lenient):
    version: str | None = None
    model_info: list[ModelInfo] = Field(default_factory=list, alias="modelInfo")
    asset_info: list[str] = Field(default_factory=list, alias="assetInfo")
    license_info: LicenseSummary | None = Field(default=None, alias="licenseInfo")
    profile_id: str | None = None
    profile_name: str | None = None
    repository_override: str | None = None
    engine_args: list[str] | None = Field(default=None, alias="engineArgs")  # None: an older server's
    # None when the server serves no LoRA adapters (no NIM_PEFT_SOURCE).
    lora_adapters: LoraAdapters | None = Field(default=None, alias="loraAdapters")


class VersionInfo(_Lenient):
    release: str | None = None
    api: str | None = None


class ManifestProfile(_Lenient):
    id: str | None = None
    name: str | None = None
    tags: dict[str, Any] = Field(default_factory=dict)


class Manifest(_Lenient):
    # None when the server runs a local model folder that came without a manifest.
    manifest_file: str | None = None
    repository_override: str | None = None
    profiles: list[ManifestProfile] = Field(default_factory=list)


# -- inference -------------------------------------------------------------------
class ModelCard(_Lenient):
    id: str
    object: str | None = None
    created: int | None = None
    owned_by: str | None = None
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None


class ModelList(_Lenient):
    object: str | None = None
    data: list[ModelCard] = Field(default_factory=list)


class TokenizeResult(_Lenient):
    count: int
    max_model_len: int | None = None
    tokens: list[int] = Field(default_factory=list)
    token_strs: list[str] | None = None


class DetokenizeResult(_Lenient):
    prompt: str


class RenderResult(_Lenient):
    """vLLM's render answer (token ids, sampling params...) plus the ``prompt`` text the front adds."""

    prompt: str | None = None


class Usage(_Lenient):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class ChatMessage(_Lenient):
    role: str | None = None
    content: str | None = None


class ChatChoice(_Lenient):
    index: int = 0
    message: ChatMessage = Field(default_factory=ChatMessage)
    finish_reason: str | None = None


class ChatCompletion(_Lenient):
    id: str | None = None
    object: str | None = None
    created: int | None = None
    model: str | None = None
    choices: list[ChatChoice] = Field(default_factory=list)
    usage: Usage | None = None

    @property
    def text(self) -> str:
        return (self.choices[0].message.content or "") if self.choices else ""


class ChatDelta(_Lenient):
    role: str | None = None
    content: str | None = None


class ChatChunkChoice(_Lenient):
    index: int = 0
    delta: ChatDelta = Field(default_factory=ChatDelta)
    finish_reason: str | None = None


class ChatCompletionChunk(_Lenient):
    id: str | None = None
    object: str | None = None
    created: int | None = None
    model: str | None = None
    choices: list[ChatChunkChoice] = Field(default_factory=list)
    usage: Usage | None = None

    @property
    def text(self) -> str:
        return "".join(choice.delta.content or "" for choice in self.choices)
