"""``/v1/metrics?name[]=...``: the engine's part and the front's own narrowed to the samples asked
for (what ps and top send); against the real engine."""

from __future__ import annotations

import httpx
import pytest

from nimctl.client.metrics import SUMMARY_QUERY, summarize_metrics
from nimctl.server.metrics import only_samples
from tests.server_process import ServerProcess


def test_the_fronts_own_part_keeps_only_the_samples_named() -> None:
    text = (
        '# HELP a_total x\n# TYPE a_total counter\na_total{r="1"} 3.0\n'
        '# HELP h y\n# TYPE h histogram\nh_bucket{le="1"} 1.0\nh_sum 2.0\nh_count 1.0\n'
        "# HELP g z\n# TYPE g gauge\ng 1.0\n"
    )
    kept = only_samples(text, frozenset({"g", "h_sum", "h_count"}))
    assert (
        kept == "# HELP h y\n# TYPE h histogram\nh_sum 2.0\nh_count 1.0\n# HELP g z\n# TYPE g gauge\ng 1.0\n"
    )


@pytest.mark.engine
def test_a_filtered_scrape_has_what_ps_reads_and_little_else(nim_server: ServerProcess) -> None:
    whole = httpx.get(nim_server.url + "/v1/metrics", timeout=10)
    narrowed = httpx.get(nim_server.url + "/v1/metrics", params=SUMMARY_QUERY, timeout=10)
    assert whole.status_code == narrowed.status_code == 200
    assert len(narrowed.text) < len(whole.text) / 3, (len(narrowed.text), len(whole.text))
    # A family nobody asked for is left out, the engine's and the front's; the asked ones stay.
    assert "nimctl_http_request_duration_seconds" not in narrowed.text
    assert "vllm:request_prompt_tokens" in whole.text and "vllm:request_prompt_tokens" not in narrowed.text
    for line in ("vllm:kv_cache_usage_perc", "vllm:num_requests_running", "nimctl_ready"):
        assert line in narrowed.text
    summary = summarize_metrics(narrowed.text)
    assert summary.kv_cache_usage is not None and summary.ready is True
    assert summary.time_to_first_token is not None  # the histogram, buckets and all
