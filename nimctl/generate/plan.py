"""From ``nimctl run``'s options to the :class:`~nimctl.generate.deployment.Deployment` every
target renders: through ``run``'s own planner (:func:`~nimctl.runtime.planning.plan_run`) and
container description (:func:`~nimctl.runtime.container.describe_container`), nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nimctl import contract
from nimctl.errors import ProfileError, UsageError
from nimctl.generate.deployment import Deployment, build_deployment


@dataclass(frozen=True)
class Request:
    """``nimctl run``'s options that shape a deployment (the ones about a local start are not here)."""

    model: str | None = None
    profile: str | None = None
    gpus: str | None = None  # run's --gpus: all, none, a count, ids
    assume_gpus: str | None = None  # the target node's GPUs: H100-80GB:8, L40S:2, none
    prefer: str | None = None
    max_model_len: int | None = None
    nodes: int = 1
    port: int = contract.CONTAINER_PORT
    host: str = "127.0.0.1"
    name: str | None = None
    cache: Path | None = None
    env: tuple[str, ...] = ()
    image: str | None = None
    engine_args: tuple[str, ...] = ()
    restart: str = "no"
    no_auth: bool = False
    i_know: bool = False
    tls: bool = False
    mtls: bool = False
    tls_hosts: tuple[str, ...] = field(default_factory=tuple)
    offline: bool = False
    lora_dir: Path | None = None
    lora_refresh: float | None = None


def plan(request: Request) -> Deployment:
    """The deployment ``nimctl run`` with these options would start (in a container).

    No runnable profile is a usage error here (exit 2, with the hint the selection gave): the
    command generates for hardware the user describes, so the fix is in the arguments.
    """
    from nimctl.gpu import detect_inventory
    from nimctl.runtime.container import describe_container
    from nimctl.runtime.credentials import Security
    from nimctl.runtime.planning import plan_run
    from nimctl.runtime.spec import parse_env, resolve_model

    security = Security(
        api_key=not request.no_auth,
        tls=request.tls or request.mtls or bool(request.tls_hosts),
        mtls=request.mtls,
        tls_hosts=request.tls_hosts,
        open_to_network=request.i_know,
    )
    try:
        spec = plan_run(
            model=request.model,
            runtime="docker",  # every target runs nimctl's image, as run's Docker runtime does
            profile=request.profile,
            gpus=request.gpus,
            prefer=request.prefer,
            lora_dir=request.lora_dir,
            lora_refresh=request.lora_refresh,
            max_model_len=request.max_model_len,
            port=request.port,
            host=request.host,
            name=request.name,
            cache_dir=request.cache,
            env_pairs=list(request.env),
            image=request.image,
            engine_args=list(request.engine_args),
            restart=request.restart,
            inventory=detect_inventory(request.assume_gpus) if request.assume_gpus is not None else None,
            security=security,
            offline=request.offline,
            nodes=request.nodes,
        )
    except ProfileError as exc:
        hint = exc.hint or "nimctl profiles list MODEL --gpus SPEC shows what runs where"
        raise UsageError(
            f"no profile to generate for: {exc.message}",
            hint=f"{hint}; describe the target node's GPUs with --gpus NAME:COUNT (e.g. H100-80GB:8)",
        ) from exc
    manifest = resolve_model(spec.model).manifest
    profile = manifest.profile_by_id_or_name(spec.profile_id) if manifest and spec.profile_id else None
    requested = tuple(parse_env(list(request.env)).keys())
    return build_deployment(
        spec,
        describe_container(spec),
        profile,
        manifest.model if manifest else None,
        requested_secrets=requested,
    )
