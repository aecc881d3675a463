"""``nimctl cache ls|du|verify|rm|prune``: the model cache ``nimctl run`` and ``pull`` share."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from nimctl.cli._common import CacheOption, FormatOption, model_cache, output
from nimctl.output import Format, format_bytes

if TYPE_CHECKING:
    from pathlib import Path

    from nimctl.output import Output
    from nimctl.store.inventory import CachedModel
    from nimctl.store.removal import Removal

cache_app = typer.Typer(
    name="cache",
    help="The model cache: what is on disk, whether it is whole, and freeing space.",
    no_args_is_help=True,
)
ModelArgument = Annotated[
    str, typer.Argument(help="hf://ORG/NAME, builtin://NAME or a manifest name.", show_default=False)
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")]


@cache_app.command("ls")
def list_cache(ctx: typer.Context, cache_dir: CacheOption = None, fmt: FormatOption = Format.table) -> None:
    """List cached models: source, revision, size on disk, last used, the profiles they serve."""
    from nimctl.store.inventory import cached_models

    out = output(ctx, fmt)
    cache = model_cache(cache_dir)
    models = cached_models(cache)

    def render() -> None:
        if not models:
            out.info(f"the cache at {cache} holds no model (nimctl pull MODEL fetches one)")
            return
        rows = [
            (
                model.uri,
                model.kind,
                ", ".join(_revision(r.refs, r.commit) for r in model.revisions) or "-",
                format_bytes(model.size_bytes) + (" (+partial)" if model.partial_bytes else ""),
                model.last_used.strftime("%Y-%m-%d %H:%M") if model.last_used else "-",
                ", ".join(model.profiles) or "-",
            )
            for model in models
        ]
        out.table(("MODEL", "SOURCE", "REVISION", "SIZE", "LAST USED", "PROFILES"), rows)

    out.result({"cache": str(cache), "models": [model.to_dict() for model in models]}, render)


@cache_app.command("du")
def disk_usage(ctx: typer.Context, cache_dir: CacheOption = None, fmt: FormatOption = Format.table) -> None:
    """The cache's total size on disk, and each model's."""
    from nimctl.store.inventory import cached_models

    out = output(ctx, fmt)
    cache = model_cache(cache_dir)
    models = cached_models(cache)
    total = sum(model.size_bytes + model.partial_bytes for model in models)
    data = {
        "cache": str(cache),
        "total_bytes": total,
        "models": [
            {"model": m.uri, "size_bytes": m.size_bytes, "partial_bytes": m.partial_bytes} for m in models
        ],
    }

    def render() -> None:
        rows = [(format_bytes(m.size_bytes + m.partial_bytes), m.uri) for m in models]
        out.table(("SIZE", "MODEL"), [*rows, (format_bytes(total), f"total ({cache})")])

    out.result(data, render)


@cache_app.command("verify")
def verify(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Argument(help="One model (default: every cached model).", show_default=False)
    ] = None,
    fix: Annotated[
        bool,
        typer.Option(
            "--fix", help="Delete the truncated and corrupt files, so that nimctl pull fetches them again."
        ),
    ] = False,
    cache_dir: CacheOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Check every file against the hashes the hub recorded (LFS sha256, git blob id); exit 13 when a
    file is missing, truncated or corrupt. Nothing is fetched."""
    from nimctl.errors import IntegrityError
    from nimctl.store.inventory import cached_models
    from nimctl.store.verify import discard_bad_files, verify_model

    out = output(ctx, fmt)
    cache = model_cache(cache_dir)
    models = [_find(cache, model)] if model else cached_models(cache)
    verdicts = [verdict for entry in models for verdict in verify_model(cache, entry)]
    bad = [verdict for verdict in verdicts if not verdict.ok]
    removed = discard_bad_files(cache, bad) if fix else []

    def render() -> None:
        for verdict in verdicts:
            where = f"@{verdict.commit[:12]}" if verdict.commit else ""
            state = "ok" if verdict.ok else f"{len(verdict.problems)} bad"
            out.text(f"{verdict.uri}{where}: {verdict.checked} files, {state}")
            for problem in verdict.problems:
                out.text(f"  {problem.problem:9} {problem.path}: {problem.detail}")

    data = {"cache": str(cache), "ok": not bad, "models": [v.to_dict() for v in verdicts]}
    if fix:
        data["removed"] = [str(path) for path in removed]
    out.result(data, render)
    if bad:
        count = sum(len(verdict.problems) for verdict in bad)
        first = bad[0].problems[0]
        fetch = f"nimctl pull {bad[0].uri}" + (f"@{bad[0].commit}" if bad[0].commit else "")
        raise IntegrityError(
            f"{count} file(s) failed verification; first: {bad[0].uri} {first.path} is {first.problem}",
            hint=f"{len(removed)} bad file(s) deleted: {fetch} fetches them again"
            if fix
            else f"nimctl cache verify --fix deletes the bad files, then {fetch} fetches them again",
        )


@cache_app.command("rm")
def remove(
    ctx: typer.Context,
    model: ModelArgument,
    yes: YesOption = False,
    cache_dir: CacheOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Remove one model from the cache (asks first, unless --yes). A model a running instance
    serves is refused."""
    from nimctl.store.removal import plan_rm

    out = output(ctx, fmt)
    cache = model_cache(cache_dir)
    entry = _find(cache, model)
    removal = plan_rm(entry, cache, _running_instances(out))
    _confirm_and_remove(out, removal, yes)


@cache_app.command("prune")
def prune(
    ctx: typer.Context,
    yes: YesOption = False,
    cache_dir: CacheOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Remove every cached model no manifest lists and no running instance serves (asks first,
    unless --yes), and what interrupted removals left."""
    from nimctl.store.inventory import cached_models
    from nimctl.store.removal import plan_prune

    out = output(ctx, fmt)
    cache = model_cache(cache_dir)
    removal = plan_prune(cached_models(cache), cache, _running_instances(out))
    if not removal.models and not removal.leftovers:
        out.result(removal.to_dict(), lambda: out.text("nothing to prune"))
        return
    _confirm_and_remove(out, removal, yes)


def _confirm_and_remove(out: Output, removal: Removal, yes: bool) -> None:
    from nimctl.errors import UsageError
    from nimctl.store.removal import carry_out

    what = ", ".join(model.uri for model in removal.models) or "leftovers of interrupted removals"
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"not removing {what} without confirmation", hint="pass --yes to remove it")
        if not typer.confirm(f"Remove {what} ({format_bytes(removal.size_bytes)})?", err=True):
            raise typer.Exit(1)
    carry_out(removal)
    out.result(
        removal.to_dict(), lambda: out.text(f"removed {what}: {format_bytes(removal.size_bytes)} freed")
    )


def _find(cache: Path, model: str) -> CachedModel:
    from nimctl.errors import UsageError
    from nimctl.store.inventory import find_cached

    entry = find_cached(cache, model)
    if entry is None:
        raise UsageError(f"{model} is not in the cache at {cache}", hint="nimctl cache ls lists what is")
    return entry


def _running_instances(out: Output) -> list:
    from nimctl.runtime.manage import list_instances

    instances, note = list_instances(readiness=False)
    if note:
        out.warn(note)
    return instances


def _revision(refs: tuple[str, ...], commit: str) -> str:
    return f"{','.join(refs)} ({commit[:8]})" if refs else commit[:8]


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app)
