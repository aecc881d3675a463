"""``nimctl bench history`` and ``nimctl bench compare``: read the runs ``nimctl bench`` recorded."""

from __future__ import annotations

from typing import Annotated

import typer

from nimctl.cli._common import FormatOption, output
from nimctl.output import Format


def history(
    ctx: typer.Context,
    last: Annotated[int | None, typer.Option("--last", "-n", min=0, help="Only the latest N runs.")] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """The runs recorded, oldest first: id, time, model, profile, levels and the best throughput."""
    from nimctl.bench.history import history_path, list_runs
    from nimctl.cli.bench_view import print_history

    out = output(ctx, fmt)
    runs = list_runs()
    if last is not None:
        runs = runs[len(runs) - last :]
    out.result(runs, lambda: print_history(out, runs, history_path()))


def compare(
    ctx: typer.Context,
    run_a: Annotated[str, typer.Argument(metavar="RUN_A", help="A run id (or its unique start).")],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B", help="The run to set beside it.")],
    fmt: FormatOption = Format.table,
) -> None:
    """Two recorded runs side by side, level by level, with B/A ratios."""
    from nimctl.bench.compare import compare_runs
    from nimctl.bench.history import load_run
    from nimctl.cli.bench_view import print_compare

    out = output(ctx, fmt)
    a, b = load_run(run_a), load_run(run_b)
    rows = compare_runs(a, b)
    data = {"a": a["id"], "b": b["id"], "rows": [row.to_dict() for row in rows]}
    out.result(data, lambda: print_compare(out, a, b, rows))


def register_history(bench_app: typer.Typer) -> None:
    bench_app.command("history")(history)
    bench_app.command("compare")(compare)
