"""``nimctl bench``: load a running model over a sweep of concurrencies; ``history`` and ``compare``.

``nimctl bench [NAME] [options]`` is the group's default command (``run``, hidden), so the two
read commands sit beside it as words: ``nimctl bench history``, ``nimctl bench compare A B``.
The work is :mod:`nimctl.bench`'s; the views are :mod:`nimctl.cli.bench_view`'s; the two read
commands are :mod:`nimctl.cli.bench_history`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from nimctl.cli._common import CacheOption, FormatOption, model_cache, output
from nimctl.cli._target import ApiKeyOption, UrlOption, make_client, running_instance
from nimctl.cli.bench_history import register_history
from nimctl.output import Format

if TYPE_CHECKING:
    from nimctl.bench.profile_sweep import ProfileSweep
    from nimctl.bench.record import ServerFacts
    from nimctl.bench.slo import Slo
    from nimctl.bench.sweep import SweepResult
    from nimctl.bench.workload import Workload
    from nimctl.output import Output

DEFAULT_REQUESTS = 32
DEFAULT_TOKENS = 128
START_TIMEOUT_S = 900.0


class _RunByDefault(TyperGroup):
    """``nimctl bench ...`` is ``nimctl bench run ...`` unless its first word is a subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


class _BenchCommand(TyperCommand):
    """The hidden ``run`` says ``Usage: nimctl bench [OPTIONS] [NAME]``, as it is typed."""

    def format_usage(self, ctx: Any, formatter: Any) -> None:
        path = ctx.parent.command_path if ctx.parent is not None else ctx.command_path
        formatter.write_usage(path, " ".join(self.collect_usage_pieces(ctx)))


bench_app = typer.Typer(
    name="bench",
    cls=_RunByDefault,
    help="Measure a running model over a sweep of concurrencies; `history` and `compare` read past runs.",
)


@bench_app.command("run", hidden=True, cls=_BenchCommand)
def bench(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="[NAME]",
            help="The nimctl instance to bench (as `nimctl ps` names it); with --profiles, the MODEL.",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[
        str, typer.Option("--concurrency", "-c", help="Requests in flight, one level per value: 1,4,16.")
    ] = "1,4,16",
    requests: Annotated[
        int | None,
        typer.Option(
            "--requests", "-r", help=f"Requests per level [default {DEFAULT_REQUESTS}].", show_default=False
        ),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration", "-d", help="Seconds per level, instead of --requests.", show_default=False
        ),
    ] = None,
    input_tokens: Annotated[
        int | None,
        typer.Option(
            "--input-tokens",
            help=f"Prompt length, exact, built with the server's /tokenize [default {DEFAULT_TOKENS}].",
            show_default=False,
        ),
    ] = None,
    output_tokens: Annotated[
        int, typer.Option("--output-tokens", help="Tokens generated per request, exact (ignore_eos).")
    ] = DEFAULT_TOKENS,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="Stream the answers (TTFT, ITL).")
    ] = True,
    warmup: Annotated[int, typer.Option("--warmup", help="Requests sent first, not measured.")] = 2,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Repeat the same prompts [default: fresh ones].", show_default=False),
    ] = None,
    slo: Annotated[
        str | None,
        typer.Option("--slo", help="Objectives for goodput: ttft=200ms,itl=50ms,e2e=2s.", show_default=False),
    ] = None,
    dataset: Annotated[
        Path | None,
        typer.Option(
            "--dataset",
            help='Real prompts: JSON Lines of {"prompt": ...} or {"text": ...}.',
            show_default=False,
        ),
    ] = None,
    images: Annotated[int, typer.Option("--images", help="Images per request (a VLM's chat request).")] = 0,
    image_size: Annotated[str, typer.Option("--image-size", help="Each image's WxH in pixels.")] = "512x512",
    request_timeout: Annotated[
        float, typer.Option("--request-timeout", min=0.1, help="Seconds of silence before a request fails.")
    ] = 600.0,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Model name [default: the server's only model].", show_default=False
        ),
    ] = None,
    plot: Annotated[
        str | None,
        typer.Option(
            "--plot",
            help="Draw latency and throughput against concurrency: FILE.png (needs nimctl[bench]), "
            "or - for a chart in the terminal.",
            show_default=False,
        ),
    ] = None,
    profiles: Annotated[
        str | None,
        typer.Option(
            "--profiles",
            help="all or ID,ID: start MODEL with each runnable profile in turn, bench it, stop it, compare.",
            show_default=False,
        ),
    ] = None,
    runtime: Annotated[
        str, typer.Option("--runtime", help="With --profiles: where to start them (auto, docker, local).")
    ] = "auto",
    cache: CacheOption = None,
    no_history: Annotated[bool, typer.Option("--no-history", help="Do not record the run.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Load a running model over a sweep of concurrencies and print TTFT, ITL, latency, throughput
    and goodput per level, with the server's own view; every run is recorded
    (`nimctl bench history`, `nimctl bench compare A B`).

    Exit codes: as `nimctl health` for an unreachable (3) or loading (4) server; when every request
    of a level failed, by the first failure: 3 connection, 5 timeout, 6 HTTP 4xx, 7 HTTP 5xx;
    130 when interrupted (the figures so far are printed and recorded).
    """
    from nimctl.bench.slo import parse_slo
    from nimctl.bench.workload import Workload, parse_concurrency, parse_image_size
    from nimctl.errors import UsageError

    out = output(ctx, fmt)
    if requests is None and duration is None:
        requests = DEFAULT_REQUESTS
    if input_tokens is None and dataset is None:
        input_tokens = DEFAULT_TOKENS
    workload = Workload(
        parse_concurrency(concurrency),
        input_tokens,
        output_tokens,
        requests=requests,
        duration_s=duration,
        stream=stream,
        warmup=warmup,
        seed=seed,
        request_timeout_s=request_timeout,
        dataset=dataset,
        images=images,
        image_size=parse_image_size(image_size),
    )
    objectives = parse_slo(slo) if slo is not None else None
    if objectives is not None and not stream and (objectives.ttft_ms or objectives.itl_ms):
        raise UsageError(
            "--slo ttft and itl need streamed answers: --no-stream measures neither",
            hint="drop --no-stream, or give only e2e=... with it",
        )
    if dataset is not None:
        from nimctl.bench.dataset import load_dataset

        load_dataset(dataset)  # a bad file is said before the server is asked anything
    if plot is not None and plot != "-":
        from nimctl.bench.plot import check_plot_target

        check_plot_target(Path(plot))  # before minutes of measuring, not after
    if profiles is not None:
        if target is None:
            raise UsageError("--profiles needs the MODEL to start", hint="nimctl bench MODEL --profiles all")
        if url is not None:
            raise UsageError("--profiles starts its own instances: --url does not go with it")
        _profile_sweep(
            out, target, profiles, workload, objectives, runtime, model, plot, no_history, model_cache(cache)
        )
        return
    if runtime != "auto" or cache is not None:
        raise UsageError("--runtime and --cache go with --profiles (the instances bench starts)")
    _bench_one(out, target, url, api_key, model, workload, objectives, plot, no_history)


def _bench_one(
    out: Output,
    instance: str | None,
    url: str | None,
    api_key: str | None,
    model: str | None,
    workload: Workload,
    slo: Slo | None,
    plot: str | None,
    no_history: bool,
) -> None:
    from nimctl.bench.record import host_facts, server_facts
    from nimctl.bench.sweep import run_sweep
    from nimctl.cli.bench_view import SweepView
    from nimctl.errors import ServerNotReadyError, UsageError

    if instance is not None:
        if url is not None:
            raise UsageError("NAME and --url both name the server: give one of them")
        url = running_instance(instance).url
    with make_client(url, api_key) as client:
        report = client.health()
        if not report.ready:
            raise ServerNotReadyError(
                f"{report.url} is live but not ready: {report.message or 'loading'}",
                hint="wait for it with `nimctl health --wait`",
            )
        served = model or client.default_model()
        facts = server_facts(client, instance=instance)
        api_key, tls = client.api_key, client.tls
    host = host_facts()
    out.info(f"bench {served} at {facts.url}: {workload.describe()}")
    with SweepView(out) as view:
        result = run_sweep(facts.url, served, workload, api_key=api_key, slo=slo, on_event=view, tls=tls)
    record = _record(out, result, facts, host, workload, slo, no_history)
    _show(out, [record], plot)
    _finish(out, [result])


def _profile_sweep(
    out: Output,
    model: str,
    which: str,
    workload: Workload,
    slo: Slo | None,
    runtime: str,
    served: str | None,
    plot: str | None,
    no_history: bool,
    cache_dir: Path,
) -> None:
    from nimctl.bench.profile_sweep import plan_profiles, sweep_profiles
    from nimctl.bench.record import ServerFacts, host_facts
    from nimctl.cli.bench_view import SweepView
    from nimctl.engine_flags import masked

    if served is not None:
        from nimctl.errors import UsageError

        raise UsageError("--model names a served model; with --profiles the model is MODEL")
    chosen, note = plan_profiles(model, which, runtime=runtime)
    host = host_facts()
    # No signal handling here: the sweep stops its instance on Ctrl-C itself and returns the figures.
    with SweepView(out) as view:
        sweep = sweep_profiles(
            model,
            chosen,
            workload,
            runtime=runtime,
            slo=slo,
            on_event=view,
            on_status=view.status,
            cache_dir=cache_dir,
            note=note,
        )
    if sweep.note:
        out.info(sweep.note)
    records = []
    for run in sweep.runs:
        if run.result is None:
            out.warn(f"profile {run.profile_name} [{run.profile_id[:12]}]: {run.error}")
            continue
        facts = ServerFacts(
            url=run.url or run.result.base_url,
            instance=run.instance,
            profile_id=run.profile_id,
            profile_name=run.profile_name,
            engine_args=masked(run.engine_args),
            server_version=run.server_version,
        )
        records.append(_record(out, run.result, facts, host, workload, slo, no_history))
    _show(out, records, plot, sweep=True)
    _finish(out, [run.result for run in sweep.runs if run.result is not None], sweep=sweep)
    failed = [run for run in sweep.runs if run.result is None]
    if failed:
        from nimctl.errors import RuntimeFailure

        names = ", ".join(run.profile_name for run in failed)
        raise RuntimeFailure(
            f"{len(failed)} of {len(sweep.runs)} profiles could not be benched: {names}",
            hint="the reasons are above; the others' figures are recorded",
        )


def _record(
    out: Output,
    result: SweepResult,
    facts: ServerFacts,
    host: dict[str, Any],
    workload: Workload,
    slo: Slo | None,
    no_history: bool,
) -> dict[str, Any]:
    from nimctl.bench.history import append_run, new_run_id
    from nimctl.bench.record import bench_record

    record = bench_record(result, facts, host=host, workload=workload, slo=slo)
    if not no_history:
        try:
            return append_run(record)
        except OSError as exc:  # the figures are still printed: minutes of measuring are not thrown away
            out.warn(f"the run is not recorded in the history: {exc}")
    from datetime import UTC, datetime

    return {"id": new_run_id(), "time": datetime.now(UTC).isoformat(timespec="seconds"), **record}


def _show(out: Output, records: list[dict[str, Any]], plot: str | None, *, sweep: bool = False) -> None:
    """One run's record, or a profile sweep's list of them (a list even of one)."""
    from nimctl.cli.bench_view import print_profiles, print_run

    if out.is_json:
        out.json(records if sweep else records[0])
    elif len(records) == 1:
        print_run(out, records[0])
    elif records:
        print_profiles(out, records)
    if plot is None or not records:
        return
    runs = [(_label(record), record["results"]) for record in records]
    if plot == "-":
        from nimctl.bench.plot import terminal_chart

        for line in terminal_chart(runs):
            out.info(line) if out.is_json else out.text(line)
        return
    from nimctl.bench.plot import write_plot

    write_plot(runs, Path(plot), title=records[0]["model"])
    out.info(f"plot written to {plot}")


def _label(record: dict[str, Any]) -> str:
    profile = record.get("profile") or {}
    return str(profile.get("name") or record["id"])


def _finish(out: Output, results: list[SweepResult], *, sweep: ProfileSweep | None = None) -> None:
    """The exit: 130 after a Ctrl-C, the first failure's code when a level failed whole."""
    from nimctl.errors import EXIT_INTERRUPTED

    if any(result.interrupted for result in results) or (sweep is not None and sweep.interrupted):
        out.info("interrupted: the figures above are those measured so far")
        raise typer.Exit(EXIT_INTERRUPTED)
    for result in results:
        if (error := result.failure_error()) is not None:
            raise error


register_history(bench_app)  # once, at import: register() runs for every app built


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app)
