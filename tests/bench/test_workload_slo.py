"""Workload and SLO input: what is accepted, and the UsageError (with a hint) for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from nimctl.bench.slo import Slo, parse_slo
from nimctl.bench.workload import Workload, parse_concurrency
from nimctl.errors import UsageError


def test_parse_concurrency_keeps_the_order() -> None:
    assert parse_concurrency("1,4,16") == (1, 4, 16)
    assert parse_concurrency(" 8, 2 ") == (8, 2)


@pytest.mark.parametrize("text", ["", "1,,4", "0", "1,-2", "a", "1.5", "4,4"])
def test_bad_concurrency(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_concurrency(text)
    assert caught.value.hint


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"concurrency": ()}, "no concurrency"),
        ({"concurrency": (1, 0)}, "invalid concurrency 0"),
        ({"concurrency": (2, 2)}, "twice"),
        ({"requests": None}, "neither"),
        ({"duration_s": 10.0}, "both"),
        ({"requests": 0}, "--requests"),
        ({"input_tokens": 0}, "--input-tokens"),
        ({"output_tokens": 0}, "--output-tokens"),
        ({"warmup": -1}, "--warmup"),
        ({"input_tokens": None}, "no prompt size given"),
        ({"dataset": "p.jsonl"}, "--input-tokens and --dataset both say what to send: give one"),
        ({"images": -1}, "--images"),
        ({"images": 1, "image_size": (640, 0)}, "--image-size 640x0"),
    ],
)
def test_bad_workload(kwargs: dict[str, object], words: str) -> None:
    settings: dict[str, object] = {"concurrency": (1,), "requests": 4, "input_tokens": 8, "output_tokens": 8}
    settings.update(kwargs)
    with pytest.raises(UsageError, match=words) as caught:
        Workload(**settings)  # type: ignore[arg-type]
    assert caught.value.hint


def test_duration_workload_and_request_body() -> None:
    workload = Workload(concurrency=(1, 4), duration_s=5.0, input_tokens=16, output_tokens=8)
    assert workload.prompts_needed() is None
    assert Workload((1, 4), 16, 8, requests=10, warmup=2).prompts_needed() == 22
    body = workload.request_body("m", "the cat")
    assert body == {
        "model": "m",
        "prompt": "the cat",
        "max_tokens": 8,
        "min_tokens": 8,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    whole = Workload((1,), 16, 8, requests=1, stream=False).request_body("m", "x")
    assert "stream_options" not in whole and whole["stream"] is False
    assert workload.to_dict()["concurrency"] == [1, 4]
    assert workload.path == "/v1/completions" and workload.exact_input_tokens == 16
    data = workload.to_dict()
    assert (data["dataset"], data["images"], data["image_size"]) == (None, 0, [512, 512])


def test_dataset_workload(tmp_path: Path) -> None:
    workload = Workload((1,), None, 8, requests=2, dataset=tmp_path / "p.jsonl")
    assert workload.exact_input_tokens is None and workload.path == "/v1/completions"
    assert workload.to_dict()["dataset"] == str(tmp_path / "p.jsonl")
    body = workload.request_body("m", "hi", output_tokens=3)
    assert (body["max_tokens"], body["min_tokens"], body["prompt"]) == (3, 3, "hi")


def test_parse_slo() -> None:
    assert parse_slo("ttft=200ms,itl=50ms,e2e=2s") == Slo(ttft_ms=200.0, itl_ms=50.0, e2e_ms=2000.0)
    assert parse_slo(" TTFT = 0.5s ") == Slo(ttft_ms=500.0)
    assert parse_slo("itl=20") == Slo(itl_ms=20.0)


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "empty"),
        ("ttft", "NAME=TIME"),
        ("tpot=5ms", "unknown objective 'tpot'"),
        ("ttft=fast", "not a time"),
        ("ttft=0ms", "above 0"),
        ("ttft=-1s", "above 0"),
        ("ttft=1s,ttft=2s", "twice"),
        ("ttft=nan", "above 0"),
    ],
)
def test_bad_slo(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words) as caught:
        parse_slo(text)
    assert "--slo" in (caught.value.hint or "")


def test_slo_met() -> None:
    slo = Slo(ttft_ms=100.0, itl_ms=10.0)
    assert slo.met(0.1, 0.01, 5.0)
    assert not slo.met(0.101, 0.01, 5.0)
    assert not slo.met(0.05, 0.02, 5.0)
    assert slo.met(None, None, 5.0)  # not streamed, one token: nothing to miss
