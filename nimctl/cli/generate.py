"""``nimctl generate TARGET MODEL``: the NIM ``nimctl run`` would start, as deployment files.

The options are ``run``'s (spelled again here: run's live in its function's signature), so the
same command line that worked on one box describes the deployment. ``--gpus`` also takes the
target node's GPUs by name (``H100-80GB:8``), since the files are for another machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nimctl import contract
from nimctl.cli._common import Preference, output
from nimctl.cli.gpus import ASSUME_GPUS_GRAMMAR

TARGET_HELP = (
    "compose (Docker Compose), kube (Deployment or StatefulSet, Service, PVC), lws (LeaderWorkerSet, "
    "for a multi-node profile), nim-operator (NIMCache + NIMService), helm-values (nim-llm chart values)."
)


def generate(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help=TARGET_HELP, show_default=False)],
    model: Annotated[
        str | None,
        typer.Argument(
            help="Model, as for nimctl run: a name, a manifest file or a URI [tiny-vlm].", show_default=False
        ),
    ] = None,
    output_dir: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            metavar="DIR",
            help="Folder to write the files to; - writes one YAML stream to stdout.",
        ),
    ] = ".",
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="Profile id or name [chosen for the GPUs].", show_default=False),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            "--gpus",
            metavar="SPEC",
            help="GPUs of each target node: NAME[:COUNT] (H100-80GB:8, L40S:2) or none; or, as for run, "
            "all, a count or ids of this machine's [this machine's].",
            show_default=False,
        ),
    ] = None,
    assume_gpus: Annotated[
        str | None,
        typer.Option(
            "--assume-gpus", metavar="SPEC", help=f"As for run: {ASSUME_GPUS_GRAMMAR}", show_default=False
        ),
    ] = None,
    prefer: Annotated[
        Preference | None,
        typer.Option(
            "--prefer",
            envvar=contract.PROFILE_PREFERENCE,
            show_envvar=False,
            case_sensitive=False,
            help="Between runnable profiles: throughput (the fewest GPUs) or latency (the most).",
            show_default=False,
        ),
    ] = None,
    nodes: Annotated[int, typer.Option("--nodes", help="Nodes of a multi-node group (target lws).")] = 1,
    max_model_len: Annotated[
        int | None,
        typer.Option("--max-model-len", min=1, help=f"Sets {contract.MAX_MODEL_LEN}.", show_default=False),
    ] = None,
    port: Annotated[
        int, typer.Option("--port", help="Published port (Compose) or the Service's port.")
    ] = contract.CONTAINER_PORT,
    host: Annotated[str, typer.Option("--host", help="Host address Compose publishes on.")] = "127.0.0.1",
    name: Annotated[
        str | None,
        typer.Option("--name", help="Name of the service and objects [nimctl-MODEL].", show_default=False),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache", help="Host model cache Compose mounts [~/.cache/nimctl].", show_default=False
        ),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env", "-e", help="KEY=VALUE for the server (repeatable); credentials become references."
        ),
    ] = None,
    image: Annotated[
        str | None, typer.Option("--image", help="Image [nimctl/nim-DEVICE:VERSION].", show_default=False)
    ] = None,
    restart: Annotated[str, typer.Option("--restart", help="Compose restart policy.")] = "no",
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve without an API key.")] = False,
    i_know: Annotated[
        bool, typer.Option("--i-know", help="With --no-auth on a non-loopback --host.")
    ] = False,
    tls: Annotated[
        bool, typer.Option("--tls", help="Serve https (the TLS files come from the secrets).")
    ] = False,
    tls_host: Annotated[
        list[str] | None,
        typer.Option("--tls-host", metavar="NAME", help="Implies --tls.", show_default=False),
    ] = None,
    mtls: Annotated[bool, typer.Option("--mtls", help="Mutual TLS. Implies --tls.")] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Serve from the cache only.")] = False,
    lora_dir: Annotated[
        Path | None,
        typer.Option("--lora-dir", help="Folder of LoRA adapters (Compose only).", show_default=False),
    ] = None,
    lora_refresh: Annotated[
        float | None, typer.Option("--lora-refresh", metavar="S", help="Rescan --lora-dir every S seconds.")
    ] = None,
    cache_per_replica: Annotated[
        bool,
        typer.Option(
            "--cache-per-replica",
            help="kube: a StatefulSet, each pod with a cache of its own (not a Deployment sharing one).",
        ),
    ] = False,
) -> None:
    """Write deployment files for the NIM `nimctl run` would start; arguments after -- go to the engine."""
    from nimctl.generate import as_stream, render
    from nimctl.generate.plan import Request, plan

    out = output(ctx)
    engine_args = list(ctx.args)
    chosen_gpus, assumed = _split_gpus(gpus, assume_gpus)
    request = Request(
        model=model,
        profile=profile,
        gpus=chosen_gpus,
        assume_gpus=assumed,
        prefer=prefer.value if prefer is not None else None,
        max_model_len=max_model_len,
        nodes=nodes,
        port=port,
        host=host,
        name=name,
        cache=cache,
        env=tuple(env or ()),
        image=image,
        engine_args=tuple(engine_args),
        restart=restart,
        no_auth=no_auth,
        i_know=i_know,
        tls=tls,
        mtls=mtls,
        tls_hosts=tuple(tls_host or ()),
        offline=offline,
        lora_dir=lora_dir,
        lora_refresh=lora_refresh,
    )
    from nimctl.errors import UsageError
    from nimctl.generate import TARGETS

    if target not in TARGETS:  # before planning: a typo costs no profile selection
        raise UsageError(f"unknown target {target!r}", hint=f"use one of: {', '.join(TARGETS)}")
    deployment = plan(request)
    files = render(target, deployment, cache_per_replica=cache_per_replica)
    out.info(f"profile: {deployment.selection}" if deployment.profile_id else "profile: none")
    if output_dir == "-":
        out.write(as_stream(files))
        return
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, text in files:
        path = folder / file_name
        path.write_text(text, encoding="utf-8")
        out.text(str(path))


def _split_gpus(gpus: str | None, assume_gpus: str | None) -> tuple[str | None, str | None]:
    """``--gpus`` as run's request (all, a count, ids) or, given by name, as the assumed GPUs."""
    if gpus is None:
        return None, assume_gpus
    value = gpus.strip().lower()
    if value == "none" and assume_gpus is None:
        return None, "none"  # no GPU at all: nothing of this machine to read
    if value == "all" or value.isdigit() or all(part.strip().isdigit() for part in value.split(",")):
        return gpus, assume_gpus
    if assume_gpus is not None:
        from nimctl.errors import UsageError

        raise UsageError(
            f"--gpus {gpus} and --assume-gpus {assume_gpus}: give the target's GPUs once",
            hint="--gpus H100-80GB:8 describes each target node",
        )
    return None, gpus


def register(app: typer.Typer) -> None:
    app.command("generate", context_settings={"allow_extra_args": True})(generate)
