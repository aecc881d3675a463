"""Image references and the metrics summary (pure functions, and the client method that reads it)."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from nimctl.client import NimClient
from nimctl.client.images import image_to_url, user_message
from nimctl.client.metrics import MetricsSummary, histogram_quantile, summarize_metrics
from nimctl.errors import ClientError, UsageError
from nimctl.media import sniff_media_type

HEADS = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff\xe0",
    "image/gif": b"GIF89a",
    "image/webp": b"RIFF\x10\0\0\0WEBPVP8 ",
    "image/bmp": b"BM" + b"\0" * 12 + (40).to_bytes(4, "little"),  # BITMAPINFOHEADER
}


@pytest.mark.parametrize(("media_type", "head"), HEADS.items())
def test_media_type_from_content_not_name(tmp_path: Path, media_type: str, head: bytes) -> None:
    path = tmp_path / "picture.txt"
    path.write_bytes(head + b"\0" * 16)
    url = image_to_url(str(path))
    assert url.startswith(f"data:{media_type};base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == path.read_bytes()


def test_unknown_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("just text, not a picture")
    with pytest.raises(UsageError, match="not an image type"):
        image_to_url(str(path))


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="image not found"):
        image_to_url(str(tmp_path / "nope.png"))


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a file"):
        image_to_url(str(tmp_path))


def test_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(HEADS["image/png"] + b"\0" * 2048)
    with pytest.raises(UsageError, match="over the 0.0 MiB limit"):
        image_to_url(str(path), max_bytes=1024)
    assert image_to_url(str(path), max_bytes=4096).startswith("data:image/png")


def test_urls_pass_through_and_bad_data_urls_are_refused() -> None:
    assert image_to_url("https://example.com/cat.jpg") == "https://example.com/cat.jpg"
    assert image_to_url("data:image/png;base64,AAAA") == "data:image/png;base64,AAAA"
    with pytest.raises(UsageError):
        image_to_url("data:text/plain,hello")


def test_sniff_rejects_short_or_unknown() -> None:
    assert sniff_media_type(b"") is None
    assert sniff_media_type(b"RIFF\0\0\0\0WAVE") is None
    assert sniff_media_type(b"RIFF") is None
    assert sniff_media_type(b"BM and then some text, not a bitmap") is None
    assert sniff_media_type(b"GIF8") is None
    assert sniff_media_type(b"%PDF-1.7\n" + b"\0" * 64) is None


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_sniff_knows_what_pillow_writes(fmt: str) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format=fmt)
    assert sniff_media_type(buffer.getvalue()) == f"image/{fmt.lower()}"
    assert sniff_media_type(bytearray(buffer.getvalue())) == f"image/{fmt.lower()}"


def test_the_sniffer_module_is_light_enough_for_the_server() -> None:
    import subprocess
    import sys

    heavy = ("httpx", "pydantic", "rich", "typer", "docker", "PIL", "openai")
    code = (
        "import sys; from nimctl.media import sniff_media_type; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_user_message_shapes() -> None:
    assert user_message("hi", []) == {"role": "user", "content": "hi"}
    message = user_message("", ["data:image/png;base64,AA"])
    assert message["content"] == [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]


METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="tiny"} 120.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="tiny"} 64.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny"} 3.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="tiny"} 1.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="tiny"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="tiny"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="1.0",model_name="tiny"} 4.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 4.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"} 4.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="tiny"} 2.0
"""


def test_metrics_summary() -> None:
    summary = summarize_metrics(METRICS)
    assert summary.requests_running == 1.0
    assert summary.requests_waiting == 2.0
    assert summary.kv_cache_usage == 0.25
    assert summary.prompt_tokens_total == 120.0
    assert summary.generation_tokens_total == 64.0
    assert summary.requests_finished == {"length": 3.0, "stop": 1.0}
    ttft = summary.time_to_first_token
    assert ttft is not None and ttft.count == 4 and ttft.mean_s == 0.5
    assert ttft.p50_s == pytest.approx(0.5)
    assert summary.e2e_latency is None
    assert set(summary.as_dict()) >= {"requests_running", "kv_cache_usage", "time_to_first_token"}


def test_histogram_quantile_interpolates() -> None:
    buckets = [(1.0, 10.0), (2.0, 20.0), (float("inf"), 20.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(1.0)
    assert histogram_quantile(0.75, buckets) == pytest.approx(1.5)
    assert histogram_quantile(0.5, [(float("inf"), 0.0)]) is None
    assert histogram_quantile(0.99, [(1.0, 1.0), (float("inf"), 5.0)]) == 1.0


def test_bad_metrics_text() -> None:
    with pytest.raises(ClientError, match="not valid Prometheus"):
        summarize_metrics("this is { not prometheus")


def test_front_metrics_in_summary() -> None:
    text = METRICS + (
        "# HELP nimctl_ready 1 when ready\n# TYPE nimctl_ready gauge\nnimctl_ready 1.0\n"
        "# HELP nimctl_engine_starts_total starts\n# TYPE nimctl_engine_starts_total counter\n"
        "nimctl_engine_starts_total 1.0\n"
    )
    summary = summarize_metrics(text)
    assert summary.ready is True
    assert summary.engine_starts_total == 1.0
    assert summary.front_requests_in_flight is None
    assert summarize_metrics(METRICS).ready is None


def test_client_reads_the_metrics_endpoint_into_a_summary() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/metrics"
        return httpx.Response(200, text=METRICS, headers={"content-type": "text/plain; version=0.0.4"})

    with NimClient("http://nim.test:8000", transport=httpx.MockTransport(handler)) as client:
        assert client.metrics_text() == METRICS
        summary = client.metrics()
    assert isinstance(summary, MetricsSummary)
    assert summary.requests_running == 1.0 and summary.requests_finished == {"length": 3.0, "stop": 1.0}
