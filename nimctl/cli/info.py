"""What a running server says about itself: metadata, version, license, manifest, metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from nimctl.cli._common import FormatOption, output
from nimctl.cli._target import ApiKeyOption, TimeoutOption, UrlOption, make_client
from nimctl.errors import UsageError
from nimctl.output import Format

if TYPE_CHECKING:
    from nimctl.client.metrics import LatencySummary, MetricsSummary
    from nimctl.output import Output

RawOption = Annotated[bool, typer.Option("--raw", help="Print the server's text as it is.")]


def register(app: typer.Typer) -> None:
    app.command("metadata")(metadata)
    app.command("version")(version)
    app.command("license")(license_)
    app.command("manifest")(manifest)
    app.command("metrics")(metrics)


def metadata(
    ctx: typer.Context,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: TimeoutOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """The served model, profile, assets and license, as the server reports them."""
    out = output(ctx, fmt)
    with make_client(url, api_key, timeout=timeout) as client:
        meta = client.metadata()

    def show() -> None:
        rows: list[tuple[str, Any]] = [("version", meta.version)]
        for info in meta.model_info:
            rows.append(("model", f"{info.short_name} (max length {info.max_model_len}, {info.model_url})"))
        rows += [
            ("profile", f"{meta.profile_name} ({meta.profile_id})" if meta.profile_id else meta.profile_name),
            ("license", meta.license_info.name if meta.license_info else None),
            ("repository override", meta.repository_override),
        ]
        if (lora := meta.lora_adapters) is not None:  # `nimctl lora ls` has the details
            served = ", ".join(a.name for a in lora.loaded) or "none"
            rows.append(("lora adapters", f"{served} ({len(lora.skipped)} skipped; from {lora.source})"))
        rows += [("asset", asset) for asset in meta.asset_info]
        out.table(["FIELD", "VALUE"], rows)

    out.result(meta.raw(), show)


def version(
    ctx: typer.Context,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: TimeoutOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """The server's release and API version (nimctl --version is this client's)."""
    out = output(ctx, fmt)
    with make_client(url, api_key, timeout=timeout) as client:
        info = client.version()
    out.result(info.raw(), lambda: out.text(f"release: {info.release}\napi:     {info.api}"))


def license_(
    ctx: typer.Context,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: TimeoutOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """The model's license text (--format json: its name, path, SHA-1, size, URL, without the text)."""
    out = output(ctx, fmt)
    with make_client(url, api_key, timeout=timeout) as client:
        found = client.license()
    out.result(found.model_dump(mode="json", exclude={"content"}), lambda: out.text(found.content))


def manifest(
    ctx: typer.Context,
    raw: RawOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: TimeoutOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """The model's profiles (--raw: the manifest YAML)."""
    out = output(ctx, fmt)
    _check_raw(raw, out)
    with make_client(url, api_key, timeout=timeout) as client:
        found = client.manifest()
    if raw:
        if found.manifest_file is None:
            out.info("the server has no manifest (it serves a model folder without one)")
        else:
            out.text(found.manifest_file)
        return

    def show() -> None:
        rows = [
            (p.id, p.name, ", ".join(f"{key}={value}" for key, value in sorted(p.tags.items())))
            for p in found.profiles
        ]
        out.table(["ID", "NAME", "TAGS"], rows)

    out.result(found.raw(), show)


def metrics(
    ctx: typer.Context,
    raw: RawOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    timeout: TimeoutOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """A summary of the engine's metrics: load, KV cache, latency, tokens (--raw: Prometheus text)."""
    out = output(ctx, fmt)
    _check_raw(raw, out)
    with make_client(url, api_key, timeout=timeout) as client:
        if raw:
            out.text(client.metrics_text())
            return
        summary = client.metrics()
    out.result(summary.as_dict(), lambda: out.table(["METRIC", "VALUE"], _metric_rows(summary)))


def _metric_rows(summary: MetricsSummary) -> list[tuple[str, str]]:
    finished = ", ".join(f"{reason} {count:g}" for reason, count in sorted(summary.requests_finished.items()))
    kv = None if summary.kv_cache_usage is None else f"{summary.kv_cache_usage * 100:.1f} %"
    return [
        ("requests running", _number(summary.requests_running)),
        ("requests waiting", _number(summary.requests_waiting)),
        ("KV cache used", kv or "-"),
        ("time to first token", _latency(summary.time_to_first_token)),
        ("inter-token latency", _latency(summary.inter_token_latency, "tokens")),
        ("end-to-end latency", _latency(summary.e2e_latency)),
        ("prompt tokens (total)", _number(summary.prompt_tokens_total)),
        ("generated tokens (total)", _number(summary.generation_tokens_total)),
        ("prompt tokens/s (last 10 s)", _number(summary.prompt_tokens_per_s)),
        ("generated tokens/s (last 10 s)", _number(summary.generation_tokens_per_s)),
        ("finished requests", finished or "-"),
        ("ready", "-" if summary.ready is None else ("yes" if summary.ready else "no")),
        ("front requests in flight", _number(summary.front_requests_in_flight)),
        ("engine starts", _number(summary.engine_starts_total)),
    ]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _latency(latency: LatencySummary | None, counted: str = "requests") -> str:
    if latency is None or not latency.count:
        return "-"

    def s(value: float | None) -> str:
        return "?" if value is None else f"{value:.3f}"

    return (
        f"mean {s(latency.mean_s)} s, p50 {s(latency.p50_s)} s, p90 {s(latency.p90_s)} s, "
        f"p99 {s(latency.p99_s)} s ({latency.count} {counted})"
    )


def _check_raw(raw: bool, out: Output) -> None:
    # --raw prints the server's own text; JSON of it would be a string in quotes, so say so instead.
    if raw and out.is_json:
        hint = "give --raw or --format json"
        raise UsageError("--raw prints the server's text as it is, not JSON", hint=hint)
