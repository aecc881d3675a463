"""From configuration to the exact engine launch: manifest, profile, arguments, environment.

Engine arguments are assembled in rising precedence (argparse keeps the last value):
profile arguments < the manifest's model-level arguments (tool-call parser) < what the
front itself needs < ``NIM_*`` variables < ``NIM_PASSTHROUGH_ARGS`` < arguments given
after ``nim-serve``. The flags the front owns (model, name, host, port, ...) come before
all of these and users may not set them (:mod:`nimctl.server.engine_args`).

The engine's port is chosen at launch, after the model fetch, unless ``NIMCTL_ENGINE_PORT``
fixes it: a port picked minutes earlier may have been taken since.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimctl import contract
from nimctl.errors import ConfigError, ManifestError, UsageError
from nimctl.server.config import ServerConfig
from nimctl.server.engine import engine_command
from nimctl.server.engine_args import CLI_ORIGIN, PASSTHROUGH_ORIGIN, check_user_engine_args
from nimctl.server.lora_settings import ENGINE_ENV, LoraSettings, lora_engine_args, lora_folder, lora_settings
from nimctl.server.nodes import (
    NodeRole,
    check_profile_nodes,
    engine_group_args,
    engine_group_env,
    headless_command,
)
from nimctl.server.selection_inputs import ServeInputs, inputs_from_config
from nimctl.store.source import ModelSource, parse_model_source

if TYPE_CHECKING:
    from nimctl.profiles import Manifest, Profile

# The front fetches every media URL itself (nimctl.server.media_fetch) and relays data: URLs; the
# engine allows remote media from one domain that cannot exist (.invalid, RFC 2606), so a URL that
# reached it some other way is refused there, not fetched from inside the server's network.
ENGINE_MEDIA_DOMAIN = "front-fetches-media.nimctl.invalid"
# /v1/chat/completions/render only exists in vLLM 0.32 with the first flag.
FRONT_ENGINE_ARGS = ["--enable-scale-out", "--allowed-media-domains", ENGINE_MEDIA_DOMAIN]
# Where the dry run's command line shows a port that is only chosen at launch.
PORT_AT_LAUNCH = "<free-port-at-launch>"
# ... and the leader's address, which a worker learns when it joins.
LEADER_IP_AT_LAUNCH = "<leader-ip-at-launch>"
_PORT_NOTE = f"a free loopback port is chosen at launch ({PORT_AT_LAUNCH}); NIMCTL_ENGINE_PORT fixes it"
# How the engine fetches the http(s) images a request names. vLLM's defaults try 3 times with a
# timeout that grows 4-fold (5 + 20 + 80 s): a URL that never answers held a request for 111 s.
# One try of a few seconds, and no redirects (a redirect may lead to an address the client could
# not name itself). vLLM's own variables, when set, win.
MEDIA_FETCH_ENV = {
    "VLLM_IMAGE_FETCH_TIMEOUT": "5",
    "VLLM_MEDIA_FETCH_MAX_RETRIES": "1",
    "VLLM_MEDIA_URL_ALLOW_REDIRECTS": "0",
}


@dataclass(frozen=True)
class LaunchPlan:
    config: ServerConfig
    source: ModelSource
    served_name: str
    manifest: Manifest | None
    profile: Profile | None
    selection_reason: str
    engine_args: list[str]
    engine_env: dict[str, str] = field(default_factory=dict)
    engine_port: int | None = None  # NIMCTL_ENGINE_PORT; None: a free port chosen at launch
    lora: LoraSettings | None = None  # NIM_PEFT_SOURCE set: the adapters are served
    node: NodeRole = field(default_factory=lambda: NodeRole(1, 0, None, 0, None, 0.0))  # one node: no group

    @property
    def profile_id(self) -> str | None:
        return self.profile.id if self.profile else None

    @property
    def profile_name(self) -> str | None:
        return self.profile.name if self.profile else None

    def model_argument(self) -> str:
        """What ``--model`` gets before the files are fetched (dry run) or when they cannot be."""
        known = self.source.local_dir(self.config.cache_path)
        return str(known) if known else self.source.name

    def command(self, model_dir: Path | str, port: int | str, leader_ip: str | None = None) -> list[str]:
        """The engine's command line; in a group, placed in it (a worker's runs headless, no port)."""
        args = self.engine_args
        if self.node.multi_node:
            args = args + engine_group_args(self.node, leader_ip or LEADER_IP_AT_LAUNCH)
        if self.node.is_worker:
            return headless_command(str(model_dir), self.served_name, args)
        return engine_command(str(model_dir), self.served_name, port, args)

    def describe(self) -> dict[str, Any]:
        """The resolved configuration, as ``nim-serve --dry-run`` prints it."""
        return {
            "config": self.config.model_dump(mode="json"),
            "model_source": self.source.uri,
            "served_model_name": self.served_name,
            "manifest": str(self.manifest.path) if self.manifest else None,
            "profile_id": self.profile_id,
            "profile_name": self.profile_name,
            "selection": self.selection_reason,
            "engine_env": self.engine_env,
            "engine_port": self.engine_port,
            **({} if self.engine_port else {"engine_port_note": _PORT_NOTE}),
            "engine_command": self.command(self.model_argument(), self.engine_port or PORT_AT_LAUNCH),
            "lora": self.lora.to_dict() if self.lora else None,
            **({"node": self.node.describe()} if self.node.multi_node else {}),
        }


def build_plan(
    config: ServerConfig,
    cli_engine_args: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LaunchPlan:
    cli_engine_args = list(cli_engine_args or [])
    check_user_engine_args(config.passthrough_args, PASSTHROUGH_ORIGIN)
    check_user_engine_args(cli_engine_args, CLI_ORIGIN)
    _check_environment(os.environ if environ is None else environ)
    source = parse_model_source(config.model_path)
    source.check()
    adapters = lora_folder(config)  # a missing folder is an error before anything is chosen
    manifest = _find_manifest(source, config)
    profile, reason = _select(manifest, inputs_from_config(config, cli_engine_args))
    node = NodeRole.from_config(config)
    check_profile_nodes(node, profile)
    served_name = config.served_model_name or (
        manifest.model.served_name if manifest else source.default_served_name
    )

    args: list[str] = list(profile.engine_args) if profile else []
    parser = manifest.model.tool_call_parser if manifest else None
    if parser:
        args += ["--enable-auto-tool-choice", "--tool-call-parser", parser]
    args += FRONT_ENGINE_ARGS
    if adapters is not None:
        args += lora_engine_args(config, adapters, profile.engine_args if profile else [])
    if config.max_model_len:
        args += ["--max-model-len", str(config.max_model_len)]
    if config.tensor_parallel_size:
        args += ["--tensor-parallel-size", str(config.tensor_parallel_size)]
    args += config.passthrough_args
    args += cli_engine_args

    env = dict(profile.env) if profile else {}
    lora = None
    if adapters is not None:
        env.update(ENGINE_ENV)
        names = [served_name, source.name, manifest.model.name if manifest else ""]
        lora = lora_settings(config, adapters, args, names)
    return LaunchPlan(
        config=config,
        source=source,
        served_name=served_name,
        manifest=manifest,
        profile=profile,
        selection_reason=reason,
        engine_args=args,
        engine_env=env,
        engine_port=config.engine_port,
        lora=lora,
        node=node,
    )


def engine_environment(plan: LaunchPlan, node_ip: str | None = None) -> dict[str, str]:
    """The engine's environment: ours, the profile's defaults under it, caches in NIM_CACHE_PATH;
    in a group, the address this node's engine advertises to the others."""
    cache = plan.config.cache_path
    env = {**plan.engine_env, **os.environ}
    env.setdefault("HF_HOME", str(cache / "huggingface"))
    env.setdefault("VLLM_CACHE_ROOT", str(cache / "vllm"))
    env.setdefault("XDG_CACHE_HOME", str(cache / "xdg"))
    for name, value in MEDIA_FETCH_ENV.items():
        env.setdefault(name, value)
    # The front refuses larger inline images; the engine applies the same cap to the ones it fetches.
    env["VLLM_MAX_IMAGE_PIXELS"] = str(plan.config.max_image_pixels)
    # The engine gets media inline from the front, within the front's byte cap; the same cap, in whole MB.
    env["VLLM_MAX_MEDIA_DOWNLOAD_SIZE_MB"] = str(max(1, math.ceil(plan.config.media_max_mb)))
    env["PYTHONUNBUFFERED"] = "1"
    if plan.node.multi_node and node_ip:
        env.update(engine_group_env(node_ip))
    if plan.config.disable_model_download:
        # The files are all in the cache (the fetch checked): the engine must not reach for the hub either.
        env[contract.HF_HUB_OFFLINE] = "1"
    return env


def _check_environment(environ: Mapping[str, str]) -> None:
    # vLLM reads this as --api-key: the engine would refuse the front's own health checks.
    if environ.get("VLLM_API_KEY"):
        raise ConfigError(
            "VLLM_API_KEY is set: the engine would refuse the front's own requests; unset it",
            hint="the engine listens on 127.0.0.1 only, behind the front",
        )


def _find_manifest(source: ModelSource, config: ServerConfig) -> Manifest | None:
    from nimctl.profiles import find_manifest

    try:
        return find_manifest(source.uri, profiles_dir=config.profiles_dir)
    except ManifestError:
        raise
    except UsageError:
        return None  # a model without a manifest runs on the engine's defaults (NIM's model-free mode)


def _select(manifest: Manifest | None, inputs: ServeInputs) -> tuple[Profile | None, str]:
    if manifest is None:
        return None, "no manifest lists this model: the engine's defaults apply"
    from nimctl.gpu import detect_inventory
    from nimctl.profiles import select_profile

    # The profile is judged at the context the engine will run with, which the user may shorten.
    selection = select_profile(
        manifest,
        detect_inventory(),
        requested=inputs.profile,
        prefer=inputs.prefer,
        lora=inputs.lora,
        max_model_len=inputs.max_model_len,
        nodes=inputs.nodes,
    )
    return selection.profile, selection.reason
