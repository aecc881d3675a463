"""``nimctl doctor``: a preflight of ``nimctl run MODEL`` on this machine, item by item.

Thin: parse, call :mod:`nimctl.doctor`, print. Exit 14 when an item fails (a warning fails nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from nimctl import contract
from nimctl.cli._common import CacheOption, FormatOption, Preference, output
from nimctl.cli.gpus import AssumeGpusOption
from nimctl.errors import ChecksFailedError, UsageError
from nimctl.output import Format

if TYPE_CHECKING:
    from nimctl.doctor import Report
    from nimctl.output import Output

_MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def doctor(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="[MODEL]",
            help="What nimctl run would run: a model name, source URI or manifest. Without it, the machine "
            "only (the model's items are skipped).",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile", "-p", metavar="ID|NAME", help="As nimctl run --profile.", show_default=False
        ),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            "--gpus",
            help="As nimctl run --gpus: devices of this machine (all|none|2|0,1).",
            show_default=False,
        ),
    ] = None,
    assume_gpus: AssumeGpusOption = None,
    prefer: Annotated[
        Preference | None,
        typer.Option("--prefer", case_sensitive=False, help="As nimctl run --prefer.", show_default=False),
    ] = None,
    max_model_len: Annotated[
        int | None,
        typer.Option("--max-model-len", min=1, help="As nimctl run --max-model-len.", show_default=False),
    ] = None,
    runtime: Annotated[
        str, typer.Option("--runtime", help="docker, local, or auto (Docker when it answers), as nimctl run.")
    ] = "auto",
    port: Annotated[
        int, typer.Option("--port", help="The host port nimctl run would publish.")
    ] = contract.CONTAINER_PORT,
    host: Annotated[
        str, typer.Option("--host", help="The address nimctl run would publish on.")
    ] = "127.0.0.1",
    cache: CacheOption = None,
    image: Annotated[
        str | None, typer.Option("--image", help="As nimctl run --image (Docker only).", show_default=False)
    ] = None,
    offline: Annotated[bool, typer.Option("--offline", help="As nimctl run --offline.")] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Check whether nimctl run MODEL can work here: driver and CUDA, container toolkit, Docker, disk,
    /dev/shm, port, profile, credentials, clock, image. Exit 14 when an item fails."""
    from nimctl.doctor import Request, run_doctor

    out = output(ctx, fmt)
    if runtime not in ("auto", "docker", "local"):
        raise UsageError(f"bad --runtime {runtime!r}: use auto, docker or local")
    request = Request(
        model=model,
        profile=profile,
        gpus=gpus,
        assume_gpus=assume_gpus,
        prefer=prefer.value if prefer else None,
        max_model_len=max_model_len,
        runtime=runtime,  # type: ignore[arg-type]
        port=port,
        host=host,
        cache=cache,
        image=image,
        offline=offline,
    )
    report = run_doctor(request)
    out.result(report.to_dict(), lambda: _show(out, report))
    if report.failed:
        names = ", ".join(check.name for check in report.failed)
        raise ChecksFailedError(
            f"{len(report.failed)} of {len(report.checks)} checks failed: {names}",
            hint="each failed item above says what to do",
        )


def _show(out: Output, report: Report) -> None:
    rows: list[tuple[str, str, str]] = []
    for check in report.checks:
        rows.append((_MARK[check.verdict.value], check.name, check.detail))
        if check.hint and check.verdict.value in ("warn", "fail"):
            rows.append(("", "", f"-> {check.hint}"))
    what = f"nimctl run {report.model}" if report.model else "this machine"
    out.table(["", "CHECK", "FOUND"], rows, title=None)
    counts = report.counts()
    summary = ", ".join(f"{counts[v]} {v}" for v in ("ok", "warn", "fail", "skip") if counts[v])
    verdict = "cannot work until the failed items are fixed" if report.failed else "should work"
    runtime = f" ({report.runtime})" if report.runtime else ""
    out.text(f"{summary}: {what}{runtime} {verdict}")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
