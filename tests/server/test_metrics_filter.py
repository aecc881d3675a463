"""``/v1/metrics?name[]=...``: the engine's part narrowed to the samples asked for (what ps and top
send), the front's own part whole; against the real engine."""

from __future__ import annotations

import httpx
import pytest

from nimctl.client.metrics import SUMMARY_QUERY, summarize_metrics
from tests.server_process import ServerProcess

pytestmark = pytest.mark.engine


def test_a_filtered_scrape_has_what_ps_reads_and_little_else(nim_server: ServerProcess) -> None:
    whole = httpx.get(nim_server.url + "/v1/metrics", timeout=10)
    narrowed = httpx.get(nim_server.url + "/v1/metrics", params=SUMMARY_QUERY, timeout=10)
    assert whole.status_code == narrowed.status_code == 200
    assert len(narrowed.text) < len(whole.text) / 3, (len(narrowed.text), len(whole.text))
    # An engine family nobody asked for is left out; the asked ones and the front's own stay.
    assert "vllm:request_prompt_tokens" in whole.text and "vllm:request_prompt_tokens" not in narrowed.text
    for line in ("vllm:kv_cache_usage_perc", "vllm:num_requests_running", "nimctl_ready"):
        assert line in narrowed.text
    summary = summarize_metrics(narrowed.text)
    assert summary.kv_cache_usage is not None and summary.ready is True
    assert summary.time_to_first_token is not None  # the histogram, buckets and all
