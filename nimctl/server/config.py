"""The server's configuration, read from NIM's environment variables.

Every value is checked at start: a bad one stops the server with one line naming the
variable (``ConfigError``), before anything is loaded.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from nimctl import contract
from nimctl.errors import ConfigError

# Environment variable -> field name. Unknown NIM_* variables are ignored, as NIM does.
ENV_FIELDS: dict[str, str] = {
    contract.MODEL_PATH: "model_path",
    contract.MODEL_PROFILE: "model_profile",
    contract.SERVED_MODEL_NAME: "served_model_name",
    contract.CACHE_PATH: "cache_path",
    contract.SERVER_PORT: "server_port",
    contract.SERVER_HOST: "host",
    contract.LOG_LEVEL: "log_level",
    contract.JSONL_LOGGING: "jsonl_logging",
    contract.MAX_MODEL_LEN: "max_model_len",
    contract.TENSOR_PARALLEL_SIZE: "tensor_parallel_size",
    contract.PASSTHROUGH_ARGS: "passthrough_args",
    contract.REPOSITORY_OVERRIDE: "repository_override",
    contract.PEFT_SOURCE: "peft_source",
    contract.PEFT_REFRESH_INTERVAL: "peft_refresh_interval",
    contract.MAX_LORA_RANK: "max_lora_rank",
    contract.MAX_GPU_LORAS: "max_gpu_loras",
    contract.MAX_CPU_LORAS: "max_cpu_loras",
    contract.ALLOW_LORA_UPDATES: "allow_lora_updates",
    contract.DISABLE_MODEL_DOWNLOAD: "disable_model_download",
    contract.ENGINE_PORT: "engine_port",
    contract.SHUTDOWN_TIMEOUT: "shutdown_timeout",
    contract.ENGINE_HUNG_TIMEOUT: "engine_hung_timeout",
    contract.PROFILES_DIR: "profiles_dir",
    contract.PROFILE_PREFERENCE: "profile_preference",
    contract.MAX_IMAGE_PIXELS: "max_image_pixels",
    contract.MEDIA_URLS: "media_urls",
    contract.ALLOWED_MEDIA_DOMAINS: "allowed_media_domains",
    contract.MEDIA_FETCH_TIMEOUT: "media_fetch_timeout",
    contract.MEDIA_MAX_MB: "media_max_mb",
    contract.MEDIA_LOCAL_DIR: "media_local_dir",
    contract.MEDIA_ALLOWED_NETWORKS: "media_allowed_networks",
    contract.MEDIA_HOSTS_FILE: "media_hosts_file",
    contract.MAX_BODY_BYTES: "max_body_bytes",
    contract.MAX_HEADER_BYTES: "max_header_bytes",
    contract.BODY_TIMEOUT: "body_timeout",
    contract.MAX_MESSAGES: "max_messages",
    contract.MAX_CONTENT_PARTS: "max_content_parts",
    contract.MAX_TOKENS_CAP: "max_tokens_cap",
    contract.MAX_N: "max_n",
    contract.MAX_CONCURRENT_REQUESTS: "max_concurrent_requests",
    contract.QUEUE_TIMEOUT: "queue_timeout",
    contract.RATE_LIMIT_RPM: "rate_limit_rpm",
    contract.CORS_ALLOW_ORIGINS: "cors_allow_origins",
    contract.CORS_ALLOW_METHODS: "cors_allow_methods",
    contract.CORS_ALLOW_HEADERS: "cors_allow_headers",
    contract.CORS_ALLOW_CREDENTIALS: "cors_allow_credentials",
    contract.API_KEY: "api_key",
    contract.API_KEY_FILE: "api_key_file",
    contract.PUBLIC_METRICS: "public_metrics",
    contract.FRONT_DATA_PATH: "front_data_path",
    contract.SSL_MODE: "ssl_mode",
    contract.SSL_KEY_PATH: "ssl_key_path",
    contract.SSL_CERTS_PATH: "ssl_certs_path",
    contract.SSL_CA_CERTS_PATH: "ssl_ca_certs_path",
    contract.NUM_COMPUTE_NODES: "num_compute_nodes",
    contract.NODE_RANK: "node_rank",
    contract.LEADER_ADDRESS: "leader_address",
    contract.LEADER_PORT: "leader_port",
    contract.NODE_ADDRESS: "node_address",
    contract.LEADER_WAIT: "leader_wait",
    contract.IDLE_STOP: "idle_stop",
}


class ServerConfig(BaseModel):
    """What ``nim-serve`` runs with; see ``ENV_FIELDS`` for the variable behind each field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_path: str = contract.DEFAULT_MODEL
    model_profile: str | None = None
    served_model_name: str | None = None
    cache_path: Path = Field(default_factory=contract.server_cache_dir)
    server_port: int = Field(default=contract.CONTAINER_PORT, ge=1, le=65535)
    host: str = Field(default_factory=lambda: "0.0.0.0" if contract.in_container() else "127.0.0.1")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    jsonl_logging: bool = False
    max_model_len: int | None = Field(default=None, gt=0)
    tensor_parallel_size: int | None = Field(default=None, gt=0)
    passthrough_args: list[str] = Field(default_factory=list)
    repository_override: str | None = None
    peft_source: str | None = None  # LoRA adapters folder: selects a LoRA profile
    # LoRA (docs/lora.md): rescans of the folder (dynamic mode), the engine's sizes, runtime updates.
    peft_refresh_interval: float | None = Field(default=None, gt=0)
    max_lora_rank: int | None = None
    max_gpu_loras: int | None = Field(default=None, ge=1)
    max_cpu_loras: int | None = Field(default=None, ge=1)
    allow_lora_updates: bool = False
    disable_model_download: bool = False  # offline: the cache only (NIM's air-gap switch)
    engine_port: int | None = Field(default=None, ge=1, le=65535)
    shutdown_timeout: float = Field(default=30.0, gt=0)
    # A ready engine that answers no health check for this long is hung: requests in flight end.
    engine_hung_timeout: float = Field(default=5.0, gt=0)
    profiles_dir: Path | None = None
    # The automatic choice between runnable profiles: throughput (fewest GPUs) or latency (most).
    profile_preference: Literal["throughput", "latency"] = "throughput"
    # 8192x8192: above every 50-megapixel camera photo, 5x the most any model in profiles/ looks at
    # (Qwen2.5-VL's 12.8 MP; Gemma 3, Mistral Small 3.1 and Phi-3.5-vision scale to ~2 MP or less),
    # and far below the decompression bombs it is for (one RGB copy of the largest is 200 MB).
    max_image_pixels: int = Field(default=8192 * 8192, gt=0)
    # Media URLs, fetched by the front under nimctl.server.media_fetch's checks (docs/security.md).
    media_urls: Literal["fetch", "none"] = "fetch"
    allowed_media_domains: list[str] = Field(default_factory=list)
    media_fetch_timeout: float = Field(default=5.0, gt=0, le=300)
    media_max_mb: float = Field(default=20.0, gt=0)
    media_local_dir: Path | None = None
    media_allowed_networks: list[str] = Field(default_factory=list)
    media_hosts_file: Path | None = None

    @field_validator("max_lora_rank")
    @classmethod
    def _lora_rank(cls, value: int | None) -> int | None:
        from nimctl.lora.folder import ENGINE_RANKS

        if value is not None and value not in ENGINE_RANKS:
            raise ValueError(f"vLLM serves ranks {', '.join(map(str, ENGINE_RANKS))}")
        return value

    @field_validator("allowed_media_domains", "media_allowed_networks", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip().lower().rstrip(".") for item in value.split(",") if item.strip()]
        return value

    @field_validator("media_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)  # a ValueError names the bad one
        return value

    @field_validator("media_local_dir")
    @classmethod
    def _a_folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError("no such folder")
        return value

    @field_validator("media_hosts_file")
    @classmethod
    def _a_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("no such file")
        return value

    # Request limits; the reasons for each default are in docs/security.md ("Request limits").
    # 32 MiB: a 50 MP camera JPEG (10-20 MB) inline in base64 (x4/3), the pixel cap's real use, fits.
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)  # h11's own default, made settable
    body_timeout: float = Field(default=60.0, gt=0)  # 32 MiB at ~5 Mbit/s
    max_messages: int = Field(default=2048, gt=0)  # OpenAI's own limit
    max_content_parts: int = Field(default=2048, gt=0)
    max_tokens_cap: int | None = Field(default=None, gt=0)  # the engine refuses beyond the context
    max_n: int = Field(default=128, gt=0)  # OpenAI's own limit
    max_concurrent_requests: int = Field(default=1024, gt=0)
    queue_timeout: float = Field(default=5.0, ge=0)
    rate_limit_rpm: int | None = Field(default=None, gt=0)
    # CORS is off while no origin is allowed.
    cors_allow_origins: list[str] = Field(default_factory=list)
    cors_allow_methods: list[str] = Field(default_factory=lambda: ["*"])
    cors_allow_headers: list[str] = Field(default_factory=lambda: ["*"])
    cors_allow_credentials: bool = False
    # SecretStr: the key never shows in a repr, a log line or an error message.
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    public_metrics: bool = False
    # The inference routes' path through the front; "framework" is kept to measure against.
    front_data_path: Literal["lean", "framework"] = "lean"
    ssl_mode: Literal["DISABLED", "TLS", "MTLS"] = "DISABLED"
    ssl_key_path: Path | None = None
    ssl_certs_path: Path | None = None
    ssl_ca_certs_path: Path | None = None

    # Multi-node (docs/multinode.md): one group of identical nodes; rank 0 leads and serves the API.
    num_compute_nodes: int = Field(default=1, ge=1, le=64)
    node_rank: int = Field(default=0, ge=0)
    leader_address: str | None = None
    leader_port: int = Field(default=contract.DEFAULT_LEADER_PORT, ge=1, le=65534)
    node_address: str | None = None
    leader_wait: float = Field(default=300.0, gt=0)
    # Seconds without an inference request before the server stops itself (exit 0); None: off.
    idle_stop: float | None = None

    @field_validator("idle_stop", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str):
            value = contract.parse_duration(value)  # its ValueError names the forms it takes
        return value or None  # 0: off

    @field_validator("idle_stop")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value < float("inf"):
            raise ValueError("must be a positive duration (0: off)")
        return value

    @model_validator(mode="after")
    def _node_role(self) -> ServerConfig:
        nodes, rank = self.num_compute_nodes, self.node_rank
        if rank >= nodes:
            raise ValueError(
                f"{contract.NODE_RANK}={rank} is outside the group: {contract.NUM_COMPUTE_NODES}={nodes} "
                f"has ranks 0 to {nodes - 1}"
            )
        if rank > 0 and not self.leader_address:
            raise ValueError(f"a worker ({contract.NODE_RANK}={rank}) needs {contract.LEADER_ADDRESS}")
        return self

    @field_validator("log_level", "ssl_mode", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("profile_preference", "media_urls", "front_data_path", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("passthrough_args", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return shlex.split(value)
            except ValueError as exc:
                raise ValueError(f"cannot split into arguments ({exc})") from None
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> ServerConfig:
        if self.ssl_mode == "DISABLED":
            return self
        needed = [contract.SSL_KEY_PATH, contract.SSL_CERTS_PATH]
        if self.ssl_mode == "MTLS":
            needed.append(contract.SSL_CA_CERTS_PATH)
        for variable in needed:
            path = getattr(self, ENV_FIELDS[variable])
            if path is None or not Path(path).is_file():
                what = "is not set" if path is None else f"is {path}, not a file"
                raise ValueError(f"{contract.SSL_MODE}={self.ssl_mode} needs {variable}, which {what}")
        return self

    @field_validator("cors_allow_origins", "cors_allow_methods", "cors_allow_headers", mode="before")
    @classmethod
    def _cors_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("model_path")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> ServerConfig:
        """Build from the environment (empty variables count as unset); ``overrides`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            field: env[name] for name, field in ENV_FIELDS.items() if env.get(name, "").strip() != ""
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        try:
            return cls(**values)
        except ValidationError as exc:
            raise _config_error(exc) from None


def _config_error(exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    if not first["loc"]:  # a check across fields: its input is every value, secrets included
        message = first["msg"].removeprefix("Value error, ")
        return ConfigError(message, hint="fix or unset the variables it names")
    field = str(first["loc"][0]) if first["loc"] else "?"
    variable = next((name for name, f in ENV_FIELDS.items() if f == field), field)
    message = first["msg"].removeprefix("Value error, ")
    return ConfigError(
        f"invalid {variable}={first.get('input')!r}: {message}",
        hint=f"fix or unset {variable}",
    )
