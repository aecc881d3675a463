"""``nimctl bundle export|import``: one archive carries a model, its manifest and the server image
to a machine without network access. Thin: parse, call :mod:`nimctl.store.bundle`, print."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nimctl.cli._common import CacheOption, FormatOption, model_cache, output
from nimctl.output import Format, format_bytes

if TYPE_CHECKING:
    from nimctl.cli.transfer_bar import TransferBar
    from nimctl.output import Output

bundle_app = typer.Typer(
    name="bundle",
    help="Carry a model (files, manifest, server image) to an air-gapped machine in one archive.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(bundle_app, name="bundle")


@bundle_app.command("export")
def export(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL|MANIFEST",
            help="A manifest name or path, hf://ORG/NAME[@REV] or builtin://NAME; it must be in the cache "
            "(nimctl pull MODEL).",
            show_default=False,
        ),
    ],
    file: Annotated[
        Path,
        typer.Option("--output", "-o", metavar="FILE.tar", help="The archive to write.", show_default=False),
    ],
    no_image: Annotated[bool, typer.Option("--no-image", help="Leave the server image out.")] = False,
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            metavar="TAG",
            help="The image to include [the one `nimctl run MODEL` would start here].",
            show_default=False,
        ),
    ] = None,
    cache: CacheOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Write MODEL's files from the cache, its manifest, the server image (docker save) and a
    SHA256SUMS list into one tar (written as FILE.tar.partial, renamed when complete)."""
    from nimctl.errors import UsageError
    from nimctl.store.bundle import export_bundle, export_target

    out = output(ctx, fmt)
    if no_image and image:
        raise UsageError("--image and --no-image contradict each other", hint="give one of them")
    root = model_cache(cache)
    target = export_target(model)
    tag = None if no_image else image or _server_image(model, root)
    with _bar(out, f"exporting {target.source.uri}") as bar:
        result = export_bundle(target, root, file.expanduser(), image=tag, on_progress=_listener(out, bar))
    data = result.to_dict()
    out.result(data, lambda: out.text(_export_text(data)))


@bundle_app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE.tar", help="An archive `nimctl bundle export` wrote.", show_default=False
        ),
    ],
    no_image: Annotated[bool, typer.Option("--no-image", help="Do not load the bundle's image.")] = False,
    cache: CacheOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Check every checksum of FILE.tar, then load its image (docker load) and put the model into the
    cache; a corrupt or truncated archive is refused (exit 13) with nothing imported."""
    from nimctl.store.bundle import import_bundle

    out = output(ctx, fmt)
    with _bar(out, f"checking {file.name}") as bar:
        result = import_bundle(
            file.expanduser(),
            model_cache(cache),
            load_image=not no_image,
            on_progress=_listener(out, bar),
        )
    data = result.to_dict()
    out.result(data, lambda: out.text(_import_text(data)))


def _server_image(model: str, cache: Path) -> str:
    """The image ``nimctl run MODEL`` would start here (its profile decides CPU or CUDA). Chosen
    here, not in the store: the store sits below the runtime's planning, which imports it."""
    from nimctl.errors import ProfileError
    from nimctl.runtime.planning import plan_run

    try:
        spec = plan_run(model=model, runtime="docker", cache_dir=cache)
    except ProfileError as exc:
        raise ProfileError(
            f"{exc.message}, so the image `nimctl run` would use is unknown",
            hint="name the image with --image TAG (nimctl/nim-cuda:VERSION for a GPU machine), or --no-image",
        ) from None
    assert spec.image is not None, "the Docker placement always names an image"
    return spec.image


def _export_text(data: dict[str, Any]) -> str:
    commit = f" at {data['commit'][:12]}" if data.get("commit") else ""
    image = data["image"] or "no image"
    return (
        f"wrote {data['file']} ({format_bytes(data['size_bytes'])}, {data['members']} members, "
        f"in {data['elapsed_s']:.0f}s)\n"
        f"  model: {data['model']}{commit} ({format_bytes(data['model_bytes'])})\n"
        f"  image: {image}\n"
        f"  on the other machine: nimctl bundle import {Path(data['file']).name}"
    )


def _import_text(data: dict[str, Any]) -> str:
    image = data["image"] or "none in the bundle"
    if data["image"] and not data["image_loaded"]:
        image += " (not loaded: --no-image)"
    lines = [
        f"imported {data['model']} into {data['folder']}",
        f"  {data['files']} files, {format_bytes(data['size_bytes'])}",
        f"  image: {image}",
    ]
    if data["manifest"]:
        lines.append(f"  manifest: {data['manifest']}")
    lines.append(f"  run it: {data['run']}")
    return "\n".join(lines)


def _bar(out: Output, description: str) -> TransferBar:
    from nimctl.cli.transfer_bar import TransferBar

    return TransferBar(out, description, show_files=False)


def _listener(out: Output, bar: TransferBar) -> Any:
    """Bytes move the bar; a step of unknown length (docker load) ends it with a line saying so."""

    def listen(label: str, done: int, total: int | None) -> None:
        if total is None:
            bar.stop()
            if out.interactive and not out.is_json:  # a pipe gets the summary only
                out.info(f"{label} ...")
        else:
            bar.update(done, total)

    return listen
