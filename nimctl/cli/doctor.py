"""``nimctl doctor``: a preflight of ``nimctl run MODEL`` on this machine, item by item.

Thin: parse, call :mod:`nimctl.doctor`, print. Exit 14 when an item fails (a warning fails nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from nimctl import contract
from nimctl.cli._common import FormatOption, Preference, output
from nimctl.cli._run_options import (
    AssumeGpusOption,
    CacheOption,
    EnvOption,
    GpusOption,
    HostOption,
    ImageOption,
    MaxModelLenOption,
    OfflineOption,
    PortOption,
    PreferOption,
    ProfileOption,
    given,
)
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
            metavar="MODEL",
            help="What nimctl run would run: a name (tiny-vlm), a manifest, a URI (hf://ORG/NAME) or a "
            "folder. Without it, the machine only (the model's items are skipped).",
            show_default=False,
        ),
    ] = None,
    profile: ProfileOption = None,
    gpus: GpusOption = None,
    assume_gpus: AssumeGpusOption = None,
    prefer: PreferOption = Preference.throughput,
    max_model_len: MaxModelLenOption = None,
    runtime: Annotated[
        str,
        typer.Option("--runtime", help="docker, local (a host process), or auto (Docker when it answers)."),
    ] = "auto",
    port: PortOption = contract.CONTAINER_PORT,
    host: HostOption = "127.0.0.1",
    cache: CacheOption = None,
    env: EnvOption = None,
    image: ImageOption = None,
    offline: OfflineOption = False,
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
        prefer=given(ctx, "prefer", prefer.value),
        max_model_len=max_model_len,
        runtime=runtime,  # type: ignore[arg-type]
        port=port,
        host=host,
        cache=cache,
        env=tuple(env or ()),
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
