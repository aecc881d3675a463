"""nimctl.bench through the real server and the tiny model (the session's ``nim_server``)."""

from __future__ import annotations

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
