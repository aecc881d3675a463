"""nimctl.bench through the real server and the tiny model (the session's ``nim_server``)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from nimctl.bench.slo import Slo
from nimctl.bench.sweep import run_sweep
from nimctl.bench.workload import Workload
from nimctl.client import NimClient
from tests.server_process import ServerProcess


@pytest.mark.engine
def test_two_level_sweep_with_exact_token_counts(nim_server: ServerProcess) -> None:
    """The server's usage of every request equals the tokens asked for: 16 in, 8 out."""
    with NimClient(nim_server.url) as client:
        model = client.default_model()
    workload = Workload((1, 2), 16, 8, requests=4, warmup=1, seed=3, request_timeout_s=120)
    result = run_sweep(nim_server.url, model, workload, slo=Slo(ttft_ms=60_000))
    assert not result.stopped_early, result.failure
    assert result.prompts_verified == 9 and result.warmup == {"requests": 1, "ok": 1}
    assert [level.stats.concurrency for level in result.levels] == [1, 2]
    for level in result.levels:
        stats = level.stats
        assert (stats.requests, stats.ok, stats.errors) == (4, 4, {})
        assert (stats.input_tokens, stats.output_tokens) == (16 * 4, 8 * 4)
        assert (stats.input_mismatches, stats.output_mismatches) == (0, 0)
        assert stats.ttft.count == 4 and stats.itl.count == 4 and stats.e2e.count == 4
        assert 0 < stats.ttft.p50 <= stats.e2e.p50  # type: ignore[operator]
        assert stats.requests_per_s and stats.output_tokens_per_s and stats.slo_met == 4
        # The engine's own view of the level: every request, and the tokens counted alike.
        assert level.server is not None
        assert level.server.ttft_count == 4 and level.server.ttft_mean_ms
        assert (level.server.prompt_tokens, level.server.generation_tokens) == (16 * 4, 8 * 4)
    assert result.to_dict()["levels"][1]["token_mismatches"] == {"input": 0, "output": 0}


@pytest.mark.engine
def test_dataset_sweep(nim_server: ServerProcess, tmp_path: Path) -> None:
    """Real prompts: every request ok, exactly the output tokens each line asks for, and the input
    tokens those that the server's /tokenize counts for the prompts sent."""
    prompts = ["Once upon a time", "The capital of France is", "Write a haiku about the sea."]
    lines = [{"prompt": prompts[0]}, {"text": prompts[1], "output_tokens": 4}, {"prompt": prompts[2]}]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    with NimClient(nim_server.url) as client:
        model = client.default_model()
    counts = {text: _count(nim_server.url, model, text) for text in prompts}
    workload = Workload((2,), None, 8, requests=3, seed=1, dataset=path, request_timeout_s=120)
    result = run_sweep(nim_server.url, model, workload)
    assert not result.stopped_early, result.failure
    assert result.prompts_verified == 3
    (level,) = result.levels
    stats = level.stats
    assert (stats.requests, stats.ok, stats.errors, stats.output_mismatches) == (3, 3, {}, 0)
    assert (stats.input_tokens, stats.output_tokens) == (sum(counts.values()), 8 + 4 + 8)


@pytest.mark.engine
def test_image_sweep(nim_server: ServerProcess) -> None:
    """Chat completions with one 64x64 PNG each through the tiny VLM's image processor."""
    with NimClient(nim_server.url) as client:
        model = client.default_model()
    workload = Workload(
        (1, 2), 16, 8, requests=2, seed=4, images=1, image_size=(64, 64), request_timeout_s=120
    )
    result = run_sweep(nim_server.url, model, workload)
    assert not result.stopped_early, result.failure
    for level in result.levels:
        stats = level.stats
        assert (stats.requests, stats.ok, stats.errors, stats.output_mismatches) == (2, 2, {}, 0)
        assert stats.output_tokens == 2 * 8 and stats.ttft.count == 2
        # The chat template's and the image's tokens come on top of the prompt's 16.
        assert stats.input_tokens > 2 * (16 + 20)


def _count(url: str, model: str, text: str) -> int:
    answer = httpx.post(url + "/tokenize", json={"model": model, "prompt": text}, timeout=30)
    answer.raise_for_status()
    return int(answer.json()["count"])
