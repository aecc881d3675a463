"""The contract between the host (``nimctl run``) and the container (``nim-serve``).

One fact in one place: the variables ``nim-serve`` reads, the paths inside nimctl's images, the
default model, the default model cache and the labels nimctl puts on what it starts. The runtime,
the server, the CLI and the profile loader import these; none of them spells the values itself.
This module imports nothing of nimctl, so every layer may use it.

The images' Dockerfiles (``container/``) repeat the paths in ``ENV`` and ``mkdir`` lines, since a
Dockerfile cannot import Python; ``tests/runtime/test_contract.py`` checks they agree.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Final

# --- Variables nim-serve reads (NIM's own names where NIM has one) -------------------------------
MODEL_PATH: Final = "NIM_MODEL_PATH"
MODEL_PROFILE: Final = "NIM_MODEL_PROFILE"
SERVED_MODEL_NAME: Final = "NIM_SERVED_MODEL_NAME"
CACHE_PATH: Final = "NIM_CACHE_PATH"
SERVER_PORT: Final = "NIM_SERVER_PORT"
SERVER_HOST: Final = "NIMCTL_SERVER_HOST"
LOG_LEVEL: Final = "NIM_LOG_LEVEL"
JSONL_LOGGING: Final = "NIM_JSONL_LOGGING"
MAX_MODEL_LEN: Final = "NIM_MAX_MODEL_LEN"
TENSOR_PARALLEL_SIZE: Final = "NIM_TENSOR_PARALLEL_SIZE"
PASSTHROUGH_ARGS: Final = "NIM_PASSTHROUGH_ARGS"
REPOSITORY_OVERRIDE: Final = "NIM_REPOSITORY_OVERRIDE"
PEFT_SOURCE: Final = "NIM_PEFT_SOURCE"
PEFT_REFRESH_INTERVAL: Final = "NIM_PEFT_REFRESH_INTERVAL"
MAX_LORA_RANK: Final = "NIM_MAX_LORA_RANK"
MAX_GPU_LORAS: Final = "NIM_MAX_GPU_LORAS"
MAX_CPU_LORAS: Final = "NIM_MAX_CPU_LORAS"
# vLLM's own switch for its runtime adapter routes; on the front it opens the same routes there.
ALLOW_LORA_UPDATES: Final = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
DISABLE_MODEL_DOWNLOAD: Final = "NIM_DISABLE_MODEL_DOWNLOAD"
ENGINE_PORT: Final = "NIMCTL_ENGINE_PORT"
SHUTDOWN_TIMEOUT: Final = "NIMCTL_SHUTDOWN_TIMEOUT"
ENGINE_HUNG_TIMEOUT: Final = "NIMCTL_ENGINE_HUNG_TIMEOUT"
PROFILES_DIR: Final = "NIMCTL_PROFILES_DIR"
PROFILE_PREFERENCE: Final = "NIMCTL_PROFILE_PREFERENCE"
MAX_IMAGE_PIXELS: Final = "NIMCTL_MAX_IMAGE_PIXELS"
MEDIA_URLS: Final = "NIMCTL_MEDIA_URLS"
ALLOWED_MEDIA_DOMAINS: Final = "NIMCTL_ALLOWED_MEDIA_DOMAINS"
MEDIA_FETCH_TIMEOUT: Final = "NIMCTL_MEDIA_FETCH_TIMEOUT"
MEDIA_MAX_MB: Final = "NIMCTL_MEDIA_MAX_MB"
MEDIA_LOCAL_DIR: Final = "NIMCTL_MEDIA_LOCAL_DIR"
MEDIA_ALLOWED_NETWORKS: Final = "NIMCTL_MEDIA_ALLOWED_NETWORKS"
MEDIA_HOSTS_FILE: Final = "NIMCTL_MEDIA_HOSTS_FILE"
# Request limits (docs/security.md, "Request limits").
MAX_BODY_BYTES: Final = "NIMCTL_MAX_BODY_BYTES"
MAX_HEADER_BYTES: Final = "NIMCTL_MAX_HEADER_BYTES"
BODY_TIMEOUT: Final = "NIMCTL_BODY_TIMEOUT"
MAX_MESSAGES: Final = "NIMCTL_MAX_MESSAGES"
MAX_CONTENT_PARTS: Final = "NIMCTL_MAX_CONTENT_PARTS"
MAX_TOKENS_CAP: Final = "NIMCTL_MAX_TOKENS_CAP"
MAX_N: Final = "NIMCTL_MAX_N"
MAX_CONCURRENT_REQUESTS: Final = "NIMCTL_MAX_CONCURRENT_REQUESTS"
QUEUE_TIMEOUT: Final = "NIMCTL_QUEUE_TIMEOUT"
RATE_LIMIT_RPM: Final = "NIMCTL_RATE_LIMIT_RPM"
# CORS (NIM's names; off unless origins are given).
CORS_ALLOW_ORIGINS: Final = "NIM_CORS_ALLOW_ORIGINS"
CORS_ALLOW_METHODS: Final = "NIM_CORS_ALLOW_METHODS"
CORS_ALLOW_HEADERS: Final = "NIM_CORS_ALLOW_HEADERS"
CORS_ALLOW_CREDENTIALS: Final = "NIM_CORS_ALLOW_CREDENTIALS"
API_KEY: Final = "NIMCTL_API_KEY"
API_KEY_FILE: Final = "NIMCTL_API_KEY_FILE"
PUBLIC_METRICS: Final = "NIMCTL_PUBLIC_METRICS"
FRONT_DATA_PATH: Final = "NIMCTL_FRONT_DATA_PATH"
SSL_MODE: Final = "NIM_SSL_MODE"
SSL_KEY_PATH: Final = "NIM_SSL_KEY_PATH"
SSL_CERTS_PATH: Final = "NIM_SSL_CERTS_PATH"
SSL_CA_CERTS_PATH: Final = "NIM_SSL_CA_CERTS_PATH"
# Multi-node serving (docs/multinode.md): NIM's node count, and the role of this node in the group.
NUM_COMPUTE_NODES: Final = "NIM_NUM_COMPUTE_NODES"
NODE_RANK: Final = "NIM_NODE_RANK"
LEADER_ADDRESS: Final = "NIM_LEADER_ADDRESS"
LEADER_PORT: Final = "NIM_LEADER_PORT"
NODE_ADDRESS: Final = "NIM_NODE_ADDRESS"
LEADER_WAIT: Final = "NIMCTL_LEADER_WAIT"
# Idle stop (docs/operate.md): NIM has no such variable, hence nimctl's prefix.
IDLE_STOP: Final = "NIMCTL_IDLE_STOP"
# Set to 1 by nimctl's images; /.dockerenv is not used since CI sandboxes may be containers too.
IN_CONTAINER: Final = "NIMCTL_IN_CONTAINER"

# What each variable means, for documentation and error messages.
VARIABLES: Final[dict[str, str]] = {
    MODEL_PATH: "the model: a manifest's source URI, hf://ORG/NAME[@REV], builtin://NAME or a folder",
    MODEL_PROFILE: "pin a profile by id, unique id prefix or name ('default': choose automatically)",
    SERVED_MODEL_NAME: "the model name clients use (default: the manifest's served_name)",
    CACHE_PATH: "the model cache (downloads, generated built-in models, engine caches)",
    SERVER_PORT: "the port the front listens on",
    SERVER_HOST: "the address the front listens on (0.0.0.0 in a container, else 127.0.0.1)",
    LOG_LEVEL: "DEBUG, INFO, WARNING, ERROR or CRITICAL",
    JSONL_LOGGING: "1: log JSON lines",
    MAX_MODEL_LEN: "the context length (also the context profiles are judged at)",
    TENSOR_PARALLEL_SIZE: "the engine's tensor-parallel size",
    PASSTHROUGH_ARGS: "more engine arguments, shell-quoted; they win over the NIM_* variables",
    REPOSITORY_OVERRIDE: "reported in /v1/metadata and /v1/manifest",
    PEFT_SOURCE: "a folder of LoRA adapters (one sub-folder each, in PEFT format); selects a LoRA profile",
    PEFT_REFRESH_INTERVAL: "seconds between rescans of NIM_PEFT_SOURCE (dynamic mode); unset: scanned once",
    MAX_LORA_RANK: "the largest adapter rank (vLLM's --max-lora-rank); default: fitted to the adapters",
    MAX_GPU_LORAS: "adapters in one batch (vLLM's --max-loras); default: the adapters found, up to 8",
    MAX_CPU_LORAS: "adapters kept loaded in memory (vLLM's --max-cpu-loras); default: at least 16",
    ALLOW_LORA_UPDATES: "true: POST /v1/load_lora_adapter and /v1/unload_lora_adapter are answered",
    DISABLE_MODEL_DOWNLOAD: "1: never download; a model not in the cache fails at once, naming its files",
    ENGINE_PORT: "fix the engine's loopback port (default: a free one at launch)",
    SHUTDOWN_TIMEOUT: "seconds a SIGTERM drain waits for requests in flight",
    ENGINE_HUNG_TIMEOUT: "seconds without a health check answer before a ready engine counts as hung",
    PROFILES_DIR: "folders searched for manifests first, separated by ':'",
    PROFILE_PREFERENCE: "throughput (the fewest GPUs) or latency (the most) between runnable profiles",
    MAX_IMAGE_PIXELS: "the most pixels (width x height) an input image may have; the engine gets it too",
    MEDIA_URLS: "fetch (default): the front fetches http(s) media URLs under its checks; none: refuses them",
    ALLOWED_MEDIA_DOMAINS: "comma-separated host names media URLs may name (default: any public host)",
    MEDIA_FETCH_TIMEOUT: "seconds to resolve, connect and read one media URL (default 5)",
    MEDIA_MAX_MB: "the most megabytes one media URL may hold (default 20)",
    MEDIA_LOCAL_DIR: "a folder file:// media URLs may read from (default: file:// refused)",
    MEDIA_ALLOWED_NETWORKS: "TESTS ONLY: comma-separated networks (127.0.0.0/8) media may be fetched from",
    MEDIA_HOSTS_FILE: "an /etc/hosts-style file: names found there resolve from it, not DNS, for media URLs",
    MAX_BODY_BYTES: "the largest request body in bytes (413 beyond it)",
    MAX_HEADER_BYTES: "the most bytes of request headers in all (431 beyond it)",
    BODY_TIMEOUT: "seconds a client has to send the whole request body (408 after)",
    MAX_MESSAGES: "the most messages in one chat request (400 beyond it)",
    MAX_CONTENT_PARTS: "the most content parts in one chat request, all messages together (400 beyond it)",
    MAX_TOKENS_CAP: "the largest max_tokens or max_completion_tokens accepted (default: the context length)",
    MAX_N: "the largest n (choices per request) accepted",
    MAX_CONCURRENT_REQUESTS: "inference requests handled at once; more wait NIMCTL_QUEUE_TIMEOUT, then 429",
    QUEUE_TIMEOUT: "seconds a request over NIMCTL_MAX_CONCURRENT_REQUESTS waits for a slot before a 429",
    RATE_LIMIT_RPM: "inference requests per minute per API key (else per client address); unset: no limit",
    CORS_ALLOW_ORIGINS: "comma-separated origins browsers may call from ('*': any); unset: CORS off",
    CORS_ALLOW_METHODS: "comma-separated methods allowed cross-origin (default '*')",
    CORS_ALLOW_HEADERS: "comma-separated request headers allowed cross-origin (default '*')",
    CORS_ALLOW_CREDENTIALS: "1/true: browsers may send cookies and auth headers cross-origin (default false)",
    API_KEY: "a key clients must send as 'Authorization: Bearer KEY' (none set, no key file: open)",
    API_KEY_FILE: "a file of keys, one a line, plain or sha256:HEX (nimctl run writes one per instance)",
    PUBLIC_METRICS: "1: /v1/metrics answers without a key (for a Prometheus scraper)",
    FRONT_DATA_PATH: "lean (default): inference routes skip the framework; framework: as before (benchmarks)",
    SSL_MODE: "DISABLED, TLS or MTLS (TLS, and clients must show a certificate the CA signed)",
    SSL_KEY_PATH: "the server's private key (PEM), for TLS and MTLS",
    SSL_CERTS_PATH: "the server's certificate chain (PEM), for TLS and MTLS",
    SSL_CA_CERTS_PATH: "the CA certificates client certificates are checked against (MTLS)",
    NUM_COMPUTE_NODES: "nodes in a multi-node group (default 1); selects a profile for that many nodes",
    NODE_RANK: "this node's rank in the group: 0 is the leader (serves the API), 1..N-1 are workers",
    LEADER_ADDRESS: "the leader's address, as every node of the group reaches it (workers need it)",
    LEADER_PORT: "the leader's join port (default 29500); the engine's torch.distributed store uses the next",
    NODE_ADDRESS: "this node's address as the others reach it (default: the one that routes to the leader)",
    LEADER_WAIT: "seconds a worker waits for the leader to answer before it fails (default 300)",
    IDLE_STOP: "stop cleanly (exit 0) after this long without an inference request: 90s, 30m, 1h30m; 0: off",
    IN_CONTAINER: "1 inside nimctl's images (set by the image)",
}

# huggingface_hub's own switch: set for nim-serve's fetch and the engine when downloads are off.
HF_HUB_OFFLINE: Final = "HF_HUB_OFFLINE"

# Credentials passed through from the caller's environment when set (NIM's own names).
PASSTHROUGH_SECRETS: Final = ("NGC_API_KEY", "HF_TOKEN")

# --- Paths and ports inside nimctl's images -----------------------------------------------------
CONTAINER_PORT: Final = 8000
CONTAINER_CACHE: Final = "/opt/nim/.cache"
CONTAINER_PROFILES: Final = "/opt/nim/profiles"
# Where a manifest given by path is mounted; searched before the image's own manifests.
CONTAINER_USER_PROFILES: Final = "/opt/nim/user-profiles"
# Where a model folder given by path is mounted.
CONTAINER_MODEL: Final = "/opt/nim/model"
# Where `nimctl run --lora-dir DIR` mounts the adapters folder (NIM_PEFT_SOURCE points there).
CONTAINER_LORA: Final = "/opt/nim/loras"
# Where `nimctl lora add` copies an adapter into a container before loading it at run time.
CONTAINER_LORA_UPLOADS: Final = "/tmp/nimctl-lora-uploads"

# Where `nimctl run` mounts the instance's credentials folder (read-only): its API key file and
# TLS files, under the names below. A host process is told the host folder's paths instead.
CONTAINER_CREDENTIALS: Final = "/run/nimctl"
API_KEYS_FILE_NAME: Final = "api-keys"
SERVER_KEY_FILE_NAME: Final = "server.key"
SERVER_CERT_FILE_NAME: Final = "server.crt"
CA_CERT_FILE_NAME: Final = "ca.crt"

# --- Multi-node -----------------------------------------------------------------------------------
DEFAULT_LEADER_PORT: Final = 29500
# The engine's torch.distributed store listens on the port after the join port.
ENGINE_MASTER_PORT_OFFSET: Final = 1


def node_environment(
    nodes: int,
    rank: int,
    leader_address: str,
    *,
    leader_port: int = DEFAULT_LEADER_PORT,
    node_address: str | None = None,
) -> dict[str, str]:
    """The variables that make one ``nim-serve`` a member of a multi-node group.

    ``nimctl run --nodes``, the generated LeaderWorkerSet and the docs' by-hand commands all
    describe members with this; ``nim-serve`` reads the same names (nimctl.server.nodes).
    """
    env = {
        NUM_COMPUTE_NODES: str(nodes),
        NODE_RANK: str(rank),
        LEADER_ADDRESS: leader_address,
        LEADER_PORT: str(leader_port),
    }
    if node_address:
        env[NODE_ADDRESS] = node_address
    return env


# --- Durations ------------------------------------------------------------------------------------
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")
DURATION_FORMS: Final = "90s, 30m, 1h, 1h30m or bare seconds"


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``90s``, ``30m``, ``1h``, ``1h30m`` (hours, minutes, seconds in that
    order, each optional) or bare seconds (``90``, ``2.5``). ValueError for anything else.

    The one reading of :data:`IDLE_STOP`, shared by ``nimctl run --idle-stop`` and ``nim-serve``.
    """
    value = text.strip().lower()
    found = _DURATION.fullmatch(value) if value else None
    if found is not None:
        hours, minutes, seconds = (float(part) if part else 0.0 for part in found.groups())
        return hours * 3600 + minutes * 60 + seconds
    try:
        bare = float(value)
    except ValueError:
        bare = -1.0
    if bare >= 0 and math.isfinite(bare):
        return bare
    raise ValueError(f"{text!r} is not a duration: give {DURATION_FORMS}")


def format_duration(seconds: float) -> str:
    """``seconds`` as :func:`parse_duration` reads it back: 5400 is ``1h30m``, 2.5 is ``2.5s``."""
    whole = int(seconds)
    if whole != seconds or whole == 0:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)


# What an idle stop's log line begins with: `ps` tells an idle stop from another exit 0 by it.
IDLE_STOP_LOG_MARK: Final = "idle stop:"


# --- Defaults ------------------------------------------------------------------------------------
# The model nim-serve and `nimctl run` serve when none is named (a built-in random-weight VLM).
DEFAULT_MODEL: Final = "builtin://tiny-vlm"


def in_container() -> bool:
    return os.environ.get(IN_CONTAINER) == "1"


def host_cache_dir() -> Path:
    """The model cache on the host: ``$XDG_CACHE_HOME/nimctl``, else ``~/.cache/nimctl``.

    ``nimctl run`` mounts it at :data:`CONTAINER_CACHE`, and ``nim-serve`` run on the host uses it,
    so both find the same downloads.
    """
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "nimctl"


def server_cache_dir() -> Path:
    """``nim-serve``'s cache when ``NIM_CACHE_PATH`` is unset: the image's, else the host's."""
    return Path(CONTAINER_CACHE) if in_container() else host_cache_dir()


# --- Labels on what nimctl starts ----------------------------------------------------------------
LABEL_PREFIX: Final = "ai.nimctl"
MANAGED_LABEL: Final = f"{LABEL_PREFIX}.managed"
MODEL_LABEL: Final = f"{LABEL_PREFIX}.model"
PORT_LABEL: Final = f"{LABEL_PREFIX}.port"
HOST_LABEL: Final = f"{LABEL_PREFIX}.host"
URL_LABEL: Final = f"{LABEL_PREFIX}.url"
VERSION_LABEL: Final = f"{LABEL_PREFIX}.version"
PROFILE_LABEL: Final = f"{LABEL_PREFIX}.profile"
PROFILE_NAME_LABEL: Final = f"{LABEL_PREFIX}.profile-name"
# The model source the server reads and the host cache it reads it from: `nimctl cache rm` refuses
# to remove a model an instance is serving.
SOURCE_LABEL: Final = f"{LABEL_PREFIX}.source"
CACHE_LABEL: Final = f"{LABEL_PREFIX}.cache"
# The host folder of LoRA adapters an instance serves, and its rescan interval (dynamic mode only):
# `nimctl lora add/rm` write there.
LORA_DIR_LABEL: Final = f"{LABEL_PREFIX}.lora-dir"
LORA_REFRESH_LABEL: Final = f"{LABEL_PREFIX}.lora-refresh"
# A multi-node group: every member carries the group's name, its rank and the node count. The
# leader (rank 0) is the instance `nimctl ps` shows; the workers are listed as its members.
GROUP_LABEL: Final = f"{LABEL_PREFIX}.group"
NODE_RANK_LABEL: Final = f"{LABEL_PREFIX}.node-rank"
NODES_LABEL: Final = f"{LABEL_PREFIX}.nodes"
# `run --idle-stop`'s seconds (NIMCTL_IDLE_STOP as the server reads it); absent when off.
IDLE_STOP_LABEL: Final = f"{LABEL_PREFIX}.idle-stop"
