"""--plot: the PNG drawn from real sweep results (built from known timings), its errors, the text chart."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from nimctl.bench.generator import LevelRun, RequestResult
from nimctl.bench.plot import check_plot_target, terminal_chart, write_plot
from nimctl.bench.stats import level_stats
from nimctl.bench.sweep import LevelResult, SweepResult
from nimctl.bench.workload import Workload
from nimctl.errors import UsageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# matplotlib's first two cycle colours (C0, C1): the lines of the first and second run.
BLUE = (0x1F, 0x77, 0xB4)
ORANGE = (0xFF, 0x7F, 0x0E)


def level(concurrency: int, requests: int, ttft_s: float, e2e_s: float, *, stream: bool = True) -> LevelRun:
    """``requests`` requests of 9 output tokens, one after another, each ``e2e_s`` long."""
    results = [
        RequestResult(
            index,
            index * e2e_s,
            (index + 1) * e2e_s,
            first_token=index * e2e_s + ttft_s if stream else None,
            input_tokens=16,
            output_tokens=9,
        )
        for index in range(requests)
    ]
    return LevelRun(concurrency, 0.0, requests * e2e_s, results)


def failed_level(concurrency: int) -> LevelRun:
    results = [RequestResult(n, 0.0, 0.1, error_kind="http_5xx", error="boom", status=503) for n in range(3)]
    return LevelRun(concurrency, 0.0, 0.1, results)


def sweep(*runs: LevelRun, model: str = "tiny-vlm") -> dict[str, Any]:
    """A real SweepResult.to_dict() around the levels' real figures."""
    concurrency = tuple(run.concurrency for run in runs)
    result = SweepResult("http://127.0.0.1:8000", model, Workload(concurrency, 16, 9, requests=4), seed=1)
    result.levels = [LevelResult(level_stats(run, input_tokens=16, output_tokens=9)) for run in runs]
    return result.to_dict()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def pixels_of(path: Path, colour: tuple[int, int, int]) -> int:
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        counts = {found: count for count, found in rgb.getcolors(rgb.width * rgb.height)}
    return counts.get(colour, 0)


def test_one_sweep_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "bench.png"
    write_plot([("", sweep(level(1, 4, 0.02, 0.2), level(4, 8, 0.05, 0.1), level(16, 16, 0.1, 0.05)))], path)
    width, height = png_size(path)
    assert (width, height) == (1300, 800)
    assert 20_000 < path.stat().st_size < 2_000_000
    with Image.open(path) as image:
        image.verify()  # a whole, well-formed PNG, not just its header
    assert pixels_of(path, BLUE) > 500  # the run's lines
    assert pixels_of(path, ORANGE) == 0  # and no second one
    assert not list(tmp_path.glob(".*partial"))


def test_several_runs_are_several_lines(tmp_path: Path) -> None:
    a = sweep(level(1, 4, 0.02, 0.2), level(8, 8, 0.05, 0.1))
    b = sweep(level(1, 4, 0.01, 0.1), level(8, 8, 0.03, 0.05))
    path = tmp_path / "compare.png"
    write_plot([("profile a", a), ("profile b", b)], path, title="tiny-vlm: two profiles")
    png_size(path)
    assert pixels_of(path, BLUE) > 500
    assert pixels_of(path, ORANGE) > 500


def test_overwrites_an_earlier_plot(tmp_path: Path) -> None:
    path = tmp_path / "bench.PNG"  # the suffix in any case
    path.write_bytes(b"old")
    write_plot([("", sweep(level(1, 4, 0.02, 0.2)))], path)
    png_size(path)


def test_levels_without_figures_are_skipped(tmp_path: Path) -> None:
    # A failed level (no latencies), a level cut short before it measured any time (no rates
    # either), a level without streaming (no TTFT).
    cut = LevelRun(8, 5.0, 5.0, [], cancelled=True)
    mixed = sweep(level(1, 4, 0.02, 0.2), failed_level(2), level(4, 4, 0.05, 0.1, stream=False), cut)
    assert mixed["levels"][1]["ttft_ms"]["p50"] is None
    assert mixed["levels"][2]["ttft_ms"]["p50"] is None
    assert mixed["levels"][3]["output_tokens_per_s"] is None
    path = tmp_path / "mixed.png"
    write_plot([("mixed", mixed)], path)
    png_size(path)
    # A run in which nothing succeeded: its throughput is 0 (drawn, on the axis), its latency
    # panels say "no figures": a few pixels of its colour where a measured run has hundreds.
    empty = tmp_path / "empty.png"
    write_plot([("", sweep(failed_level(1), failed_level(4)))], empty)
    png_size(empty)
    assert pixels_of(empty, BLUE) < 100


def test_a_history_record_is_taken_too(tmp_path: Path) -> None:
    results = sweep(level(1, 4, 0.02, 0.2), level(4, 8, 0.05, 0.1))
    record = {"id": "r1", "model": "tiny-vlm", "results": results}
    assert terminal_chart([("r1", record)]) == terminal_chart([("r1", results)])
    path = tmp_path / "record.png"
    write_plot([("r1", record)], path)
    assert pixels_of(path, BLUE) > 500


@pytest.mark.parametrize("name", ["bench.jpg", "bench", "bench.png.txt"])
def test_a_path_that_is_not_a_png_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError, match=r"does not end in \.png") as caught:
        write_plot([("", sweep(level(1, 4, 0.02, 0.2)))], tmp_path / name)
    assert caught.value.hint
    assert list(tmp_path.iterdir()) == []


def test_missing_or_unfit_folders_are_refused(tmp_path: Path) -> None:
    runs = [("", sweep(level(1, 4, 0.02, 0.2)))]
    with pytest.raises(UsageError, match="does not exist"):
        write_plot(runs, tmp_path / "nowhere" / "bench.png")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is not a folder"):
        write_plot(runs, tmp_path / "file" / "bench.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(UsageError, match="is a folder"):
        write_plot(runs, tmp_path / "dir.png")


def test_an_unwritable_folder_is_refused(tmp_path: Path) -> None:
    runs = [("", sweep(level(1, 4, 0.02, 0.2)))]
    if os.geteuid() == 0:
        # Permission bits do not bind root; sysfs refuses new files to everyone, and os.access does
        # not know it: this is the write's own error, turned into a UsageError.
        if not Path("/sys/kernel").is_dir():
            pytest.skip("running as root without sysfs: no folder here is unwritable to root")
        with pytest.raises(UsageError, match=r"cannot write the plot to /sys/nimctl-bench\.png"):
            write_plot(runs, Path("/sys/nimctl-bench.png"))
        assert not Path("/sys/nimctl-bench.png").exists()
        return
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(UsageError, match="is not writable"):
            write_plot(runs, folder / "bench.png")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_missing_matplotlib_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import matplotlib` raise ImportError, as when it is not installed.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    path = tmp_path / "bench.png"
    with pytest.raises(UsageError, match="--plot needs matplotlib") as caught:
        write_plot([("", sweep(level(1, 4, 0.02, 0.2)))], path)
    assert caught.value.hint == "pip install 'nimctl[bench]'"
    with pytest.raises(UsageError, match="--plot needs matplotlib"):
        check_plot_target(path)
    assert not path.exists()
    # The text chart needs no matplotlib.
    assert terminal_chart([("", sweep(level(1, 4, 0.02, 0.2)))])


def test_check_plot_target_passes_a_good_path(tmp_path: Path) -> None:
    check_plot_target(tmp_path / "bench.png")
    assert list(tmp_path.iterdir()) == []  # checking writes nothing


def test_no_runs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nothing to plot"):
        write_plot([], tmp_path / "bench.png")
    with pytest.raises(UsageError, match="nothing to chart"):
        terminal_chart([])
    with pytest.raises(UsageError, match="width"):
        terminal_chart([("", sweep(level(1, 4, 0.02, 0.2)))], width=0)


def test_terminal_chart_lines() -> None:
    # 9 tokens per 0.2 s at c=1 is 45 tok/s; 9 per 0.1 s at c=4 is 90 tok/s: half the bar.
    a = sweep(level(1, 4, 0.02, 0.2), level(4, 4, 0.05, 0.1), failed_level(16))
    b = sweep(level(1, 4, 0.01, 0.1, stream=False))
    lines = terminal_chart([("profile a", a), ("profile b", b)], width=20)
    assert lines == [
        "output tokens/s by concurrency, TTFT p50 alongside",
        "profile a",
        "   1 │██████████          │ 45.0 tok/s  TTFT p50 20.0 ms",
        "   4 │████████████████████│ 90.0 tok/s  TTFT p50 50.0 ms",
        "  16 │                    │ no successful requests (3 errors: http_5xx)",
        "profile b",
        "   1 │████████████████████│ 90.0 tok/s  TTFT p50 n/a",
    ]
    assert terminal_chart([("profile a", a), ("profile b", b)], width=20) == lines  # deterministic


def test_terminal_chart_draws_to_an_eighth() -> None:
    # 45 of 90 tok/s over 3 characters: 1.5 characters, one full block and a half one.
    lines = terminal_chart([("", sweep(level(1, 4, 0.02, 0.2), level(2, 4, 0.02, 0.1)))], width=3)
    assert lines[1] == "run"
    assert lines[2].startswith("  1 │█▌ │ 45.0 tok/s")
    assert lines[3].startswith("  2 │███│ 90.0 tok/s")
