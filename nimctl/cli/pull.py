"""``nimctl pull``: fetch a model into the cache ``nimctl run`` mounts, ahead of the run."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer

from nimctl.cli._common import CacheOption, FormatOption, Preference, model_cache, output
from nimctl.output import Format, format_bytes

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from nimctl.cli.transfer_bar import TransferBar
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

    The profile is chosen as nimctl run would choose it, so a model that cannot run here is
    refused before anything is fetched. HF_TOKEN is used for gated and private models and is
    never printed. Ctrl-C keeps what was fetched: the same command again resumes."""
    from nimctl.cli.transfer_bar import TransferBar
    from nimctl.store.target import pull_model, pull_target

    out = output(ctx, fmt)
    target = pull_target(model, revision=revision, profile=profile, gpus=gpus, prefer=prefer.value)
    if target.note:
        out.warn(target.note)
    cache = model_cache(cache_dir)
    bar = TransferBar(out, f"pulling {target.source.uri}")
    started = time.time()
    try:
        with bar:
            result = _in_background(
                lambda: pull_model(
                    target,
                    cache,
                    on_progress=lambda p: bar.update(
                        p.bytes_done, p.bytes_total, p.files_done, p.files_total
                    ),
                )
            )
    except KeyboardInterrupt:
        _interrupted(out, bar, target, cache, started)
    _summary(out, result, target)


def _in_background(work: Callable[[], PullResult]) -> PullResult:
    """Run ``work`` in a thread while this one waits in short, interruptible steps: waiting on
    huggingface_hub's download pool directly, Ctrl-C would only land when its reads return."""
    import threading

    outcome: list[PullResult | BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # handed to the waiting thread, which raises it
            outcome.append(exc)

    worker = threading.Thread(target=run, name="nimctl-pull", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _interrupted(out: Output, bar: TransferBar, target: PullTarget, cache: Path, started: float) -> None:
    """Ctrl-C: the finished files stay and the same command fetches only the rest. The download
    threads may sit in a read that only the network ends, so the process leaves at once instead
    of waiting for them, dropping the partial files they were writing."""
    from nimctl.errors import EXIT_INTERRUPTED
    from nimctl.store.pull import drop_partial

    bar.stop()
    if target.source.kind == "hf":
        drop_partial(cache, target.source.name, since=started)
    out.error(
        f"interrupted: the pull of {target.source.uri} stopped",
        hint="the finished files are kept; run the same command again to fetch the rest",
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


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
