"""``nimctl pull``: fetch a model into the cache ``nimctl run`` mounts, ahead of the run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from nimctl.cli._common import CacheOption, FormatOption, Preference, model_cache, output
from nimctl.output import Format, format_bytes

if TYPE_CHECKING:
    from nimctl.output import Output
    from nimctl.store.pull import PullResult
    from nimctl.store.target import PullTarget


def pull(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Argument(
            help="A manifest name (tiny-vlm) or file, hf://ORG/NAME[@REVISION] or builtin://NAME.",
            show_default=False,
        ),
    ],
    revision: Annotated[
        str | None,
        typer.Option(
            "--revision",
            help="A branch, tag or commit of the hub repository [default: main].",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help="Pin the profile by id, id prefix or name, as nimctl run does.",
            show_default=False,
        ),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            "--gpus",
            help="The GPUs the profile is chosen for, as nimctl run takes them: "
            "all, none, a count or indices (0,1).",
            show_default=False,
        ),
    ] = None,
    prefer: Annotated[
        Preference, typer.Option("--prefer", help="Between runnable profiles, as nimctl run.")
    ] = Preference.throughput,
    cache_dir: CacheOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Fetch MODEL into the model cache (what nimctl run mounts, NIM_CACHE_PATH in the container).

    The profile is chosen as nimctl run would choose it and named in the summary; when none
    would run here, a note says why and the files (the same for every profile) are fetched all
    the same. HF_TOKEN is used for gated and private models and is never printed. Ctrl-C keeps
    the finished files: the same command again fetches only the rest."""
    from nimctl.cli.fetch_view import fetch_with_bar
    from nimctl.store.target import pull_model, pull_target

    out = output(ctx, fmt)
    inventory = None
    if gpus is not None:
        from nimctl.gpu import detect_inventory
        from nimctl.runtime.gpu_request import GpuRequest

        inventory = GpuRequest.parse(gpus).visible(detect_inventory())
    target = pull_target(model, revision=revision, profile=profile, inventory=inventory, prefer=prefer.value)
    if target.note:
        out.warn(target.note)
    cache = model_cache(cache_dir)
    result = fetch_with_bar(
        out, target.source, cache, lambda on_progress: pull_model(target, cache, on_progress=on_progress)
    )
    _summary(out, result, target)


def _summary(out: Output, result: PullResult, target: PullTarget) -> None:
    data = result.to_dict()
    data["profile"] = target.profile.name if target.profile else None
    data["profile_id"] = target.profile.id if target.profile else None
    data["note"] = target.note

    def render() -> None:
        where = f"@{result.revision} ({result.commit[:12]})" if result.commit else ""
        fetched = (
            f", {format_bytes(result.fetched_bytes)} fetched"
            if result.fetched_bytes
            else ", all in the cache"
        )
        out.text(f"{result.uri}{where}: {format_bytes(result.size_bytes)} in {result.files} files{fetched}")
        out.text(f"folder:  {result.folder}")
        if target.profile is not None:
            out.text(f"profile: {target.profile.name} ({target.profile.id[:12]})")

    out.result(data, render)


def register(app: typer.Typer) -> None:
    app.command("pull")(pull)
