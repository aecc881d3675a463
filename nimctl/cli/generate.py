"""``nimctl generate TARGET MODEL``: the NIM ``nimctl run`` would start, as deployment files.

The options are ``run``'s (declared once, in :mod:`nimctl.cli._run_options`, next to the ones
whose meaning differs here), so the same command line that worked on one box describes the
deployment. ``--gpus`` also takes the target node's GPUs by name (``H100-80GB:8``), since the
files are for another machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nimctl import contract
from nimctl.cli._common import Preference, output
from nimctl.cli._run_options import (
    GenerateAssumeGpusOption,
    GenerateCacheOption,
    GenerateEnvOption,
    GenerateGpusOption,
    GenerateHostOption,
    GenerateImageOption,
    GenerateLoraDirOption,
    GenerateLoraRefreshOption,
    GenerateNameOption,
    GenerateNoAuthOption,
    GenerateNodesOption,
    GenerateOfflineOption,
    GeneratePortOption,
    GenerateTlsHostOption,
    GenerateTlsOption,
    IKnowOption,
    MaxModelLenOption,
    ModelArgument,
    MtlsOption,
    PreferOption,
    ProfileOption,
    RestartOption,
    given,
)

TARGET_HELP = (
    "compose (Docker Compose), kube (Deployment or StatefulSet, Service, PVC), lws (LeaderWorkerSet, "
    "for a multi-node profile), nim-operator (NIMCache + NIMService), helm-values (nim-llm chart values)."
)


def generate(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help=TARGET_HELP, show_default=False)],
    model: ModelArgument = None,
    output_dir: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            metavar="DIR",
            help="Folder to write the files to; - writes one YAML stream to stdout.",
        ),
    ] = ".",
    profile: ProfileOption = None,
    gpus: GenerateGpusOption = None,
    assume_gpus: GenerateAssumeGpusOption = None,
    prefer: PreferOption = Preference.throughput,
    nodes: GenerateNodesOption = 1,
    max_model_len: MaxModelLenOption = None,
    port: GeneratePortOption = contract.CONTAINER_PORT,
    host: GenerateHostOption = "127.0.0.1",
    name: GenerateNameOption = None,
    cache: GenerateCacheOption = None,
    env: GenerateEnvOption = None,
    image: GenerateImageOption = None,
    restart: RestartOption = "no",
    no_auth: GenerateNoAuthOption = False,
    i_know: IKnowOption = False,
    tls: GenerateTlsOption = False,
    tls_host: GenerateTlsHostOption = None,
    mtls: MtlsOption = False,
    offline: GenerateOfflineOption = False,
    lora_dir: GenerateLoraDirOption = None,
    lora_refresh: GenerateLoraRefreshOption = None,
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
        # Given or from the variable; the default is nim-serve's own, as for run.
        prefer=given(ctx, "prefer", prefer.value),
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
