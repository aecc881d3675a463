"""``nimctl lora ls|add|rm|demo``: the LoRA adapters a running server serves, and demo ones."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nimctl.cli._common import CacheOption, FormatOption, model_cache, output
from nimctl.cli._target import ApiKeyOption, TimeoutOption, UrlOption, make_client, running_instance
from nimctl.output import Format

if TYPE_CHECKING:
    from nimctl.client.http import NimClient
    from nimctl.client.types import LoraAdapters
    from nimctl.output import Output
    from nimctl.runtime.instances import Instance
    from nimctl.runtime.lora_ops import Change

lora_app = typer.Typer(
    name="lora",
    help="LoRA adapters: list what a server serves, add and remove them while it runs, demo adapters.",
    no_args_is_help=True,
)
InstanceOption = Annotated[
    str | None,
    typer.Option(
        "--instance",
        "-n",
        help="The nimctl instance (as `nimctl ps` names it) instead of --url.",
        show_default=False,
    ),
]
NameArgument = Annotated[
    str, typer.Argument(help="The adapter's name: its folder's name, and the model name in requests.")
]


@lora_app.command("ls")
def list_adapters(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="[NAME]", help="The nimctl instance (as `nimctl ps` names it).", show_default=False
        ),
    ] = None,
    instance: InstanceOption = None,
    name: Annotated[
        str | None, typer.Option("--adapter", "-a", help="Only this adapter.", show_default=False)
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: TimeoutOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """The adapters the server serves or skipped (with why): name, base, rank, target modules."""
    from nimctl.errors import UsageError

    if target is not None and instance is not None:
        raise UsageError("the instance is named twice (NAME and --instance): give one of them")
    out = output(ctx, fmt)
    client, _ = _connect(target or instance, url, api_key, timeout, need_instance=False)
    with client:
        lora = client.metadata().lora_adapters
    rows = _rows(lora)
    if name is not None:
        rows = [row for row in rows if row["name"] == name]
        if not rows:
            raise UsageError(
                f"{client.base_url} has no adapter named {name}", hint="nimctl lora ls lists them"
            )
    data = {"url": client.base_url, **_settings(lora), "adapters": rows}

    def render() -> None:
        if lora is None:
            out.info(
                f"{client.base_url} serves no LoRA adapters (nimctl run MODEL --lora-dir DIR serves some)"
            )
            return
        out.info(_describe(lora))
        table = [
            (
                row["name"],
                row["base"] or "-",
                row["rank"] if row["rank"] is not None else "-",
                ",".join(row["target_modules"]) or "-",
                row["state"],
                row["reason"] if row["state"] == "skipped" else row["origin"] or "-",
            )
            for row in rows
        ]
        if table:
            out.table(("NAME", "BASE", "RANK", "TARGETS", "STATE", "REASON/ORIGIN"), table)
        else:
            out.info("no adapters yet")

    out.result(data, render)


@lora_app.command("add")
def add(
    ctx: typer.Context,
    name: NameArgument,
    path: Annotated[
        Path, typer.Argument(help="The adapter's folder (adapter_config.json, adapter_model.safetensors).")
    ],
    instance: InstanceOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: TimeoutOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Serve the adapter at PATH as NAME: copied into the server's folder when it rescans it
    (run --lora-refresh), else loaded at run time when the server allows it."""
    from nimctl.runtime.lora_ops import add_adapter

    out = output(ctx, fmt)
    client, found = _connect(instance, url, api_key, timeout, need_instance=True)
    with client:
        change = add_adapter(client, name, path, instance=found)
    _report(out, change, client.base_url)


@lora_app.command("rm")
def remove(
    ctx: typer.Context,
    name: NameArgument,
    instance: InstanceOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: TimeoutOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Stop serving adapter NAME: its folder removed (only one `nimctl lora add` copied), or
    unloaded at run time."""
    from nimctl.runtime.lora_ops import remove_adapter

    out = output(ctx, fmt)
    client, found = _connect(instance, url, api_key, timeout, need_instance=True)
    with client:
        change = remove_adapter(client, name, instance=found)
    _report(out, change, client.base_url)


@lora_app.command("demo")
def demo(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="The built-in base model.")] = "tiny-llm",
    cache_dir: CacheOption = None,
) -> None:
    """Print the folder of the demo adapters of a built-in model, generating them on first use:
    nimctl run tiny-llm --lora-dir "$(nimctl lora demo)"."""
    from nimctl.lora.demo import ensure_demo_adapters
    from nimctl.store.layout import demo_loras_dir

    base = model.removeprefix("builtin://")
    folder = ensure_demo_adapters(base, demo_loras_dir(model_cache(cache_dir)))
    output(ctx).text(str(folder))


def _connect(
    instance: str | None, url: str | None, api_key: str | None, timeout: float | None, *, need_instance: bool
) -> tuple[NimClient, Instance | None]:
    """The client for --instance or --url (else the one running instance), and the nimctl
    instance there when asked for: add and rm read its labels (its --lora-dir, its runtime)."""
    from nimctl.cli._target import resolve_url
    from nimctl.errors import UsageError

    if instance is not None and url is not None:
        raise UsageError("--instance and --url both name the server: give one of them")
    found: Instance | None = None
    if instance is not None:
        found = running_instance(instance)
        url = found.url
    else:
        url = resolve_url(url)
        if need_instance:
            from nimctl.runtime.lora_ops import instance_at

            found = instance_at(url)
    return make_client(url, api_key, timeout=timeout), found


def _rows(lora: LoraAdapters | None) -> list[dict[str, Any]]:
    """Served and skipped adapters as one list with stable keys, by name."""
    if lora is None:
        return []
    rows = [
        {
            "name": a.name,
            "state": "unloading" if a.unloading else "loaded",
            "base": a.base,
            "rank": a.rank,
            "alpha": a.alpha,
            "target_modules": list(a.target_modules),
            "origin": a.origin,
            "reason": None,
            "path": a.path,
        }
        for a in lora.loaded
    ]
    rows += [
        {
            "name": s.name,
            "state": "skipped",
            "base": None,
            "rank": None,
            "alpha": None,
            "target_modules": [],
            "origin": None,
            "reason": s.reason,
            "path": s.path,
        }
        for s in lora.skipped
    ]
    return sorted(rows, key=lambda row: row["name"])


def _settings(lora: LoraAdapters | None) -> dict[str, Any]:
    return {
        "lora": lora is not None,
        "source": lora.source if lora else None,
        "refresh_interval": lora.refresh_interval if lora else None,
        "runtime_updates": lora.runtime_updates if lora else False,
        "max_lora_rank": lora.max_lora_rank if lora else None,
        "max_loras": lora.max_loras if lora else None,
    }


def _describe(lora: LoraAdapters) -> str:
    """One line on how the server keeps its adapters: what `lora add` can do there."""
    scan = f"rescanned every {lora.refresh_interval:g} s" if lora.refresh_interval else "scanned at start"
    updates = "runtime updates on" if lora.runtime_updates else "runtime updates off"
    return f"adapters folder {lora.source} ({scan}; {updates}; largest rank {lora.max_lora_rank})"


def _report(out: Output, change: Change, url: str) -> None:
    how = {"folder": "in the server's folder", "runtime": "at run time"}[change.way]
    if change.action == "added":
        line = f"{change.name}: added {how} ({change.path}) after {change.seconds:.1f} s"
        line += f"; chat with it: nimctl chat --url {url} --model {change.name} 'Hello'"
    else:
        line = f"{change.name}: removed {how} ({change.path}) after {change.seconds:.1f} s"
    out.result(change.to_dict(), lambda: out.text(line))


def register(app: typer.Typer) -> None:
    app.add_typer(lora_app)
