"""--dataset FILE.jsonl: the file read and checked, and a sweep of its prompts against the stand-in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from nimctl.bench import dataset as dataset_module
from nimctl.bench._http import async_client
from nimctl.bench.dataset import Dataset, Entry, check_dataset, load_dataset, to_check
from nimctl.bench.sweep import run_sweep
from nimctl.bench.workload import Workload
from nimctl.errors import UsageError
from tests.bench.conftest import StandIn
from tests.bench.standin import MAX_MODEL_LEN, tokenize


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_both_peers_formats_blank_lines_and_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '{"prompt": "the cat sat", "output_tokens": 3}',
        "",
        '  {"text": "a dog ran", "max_tokens": 5, "images": ["x.png"]}',
        '{"prompt": "one more", "extra": 1}',
    )
    loaded = load_dataset(path)
    assert loaded.entries == (
        Entry(1, "the cat sat", 3),
        Entry(3, "a dog ran", 5),
        Entry(4, "one more", None),
    )
    order = loaded.order(7)
    assert sorted(order, key=lambda entry: entry.line) == list(loaded.entries)
    assert loaded.order(7) == order  # seeded
    assert {tuple(loaded.order(seed)) for seed in range(20)} != {tuple(order)}  # and the seed matters


@pytest.mark.parametrize(
    "lines, words",
    [
        ((), "holds no prompt: the file is empty"),
        (("", "  "), "holds no prompt"),
        (('{"prompt": "a"}', "{not json"), "line 2 is not JSON"),
        (('["a"]',), "line 1 is not a JSON object"),
        (('{"output_tokens": 3}',), 'line 1 has no prompt \\("prompt" or "text": none\\)'),
        (('{"prompt": "  "}',), "an empty one"),
        (('{"text": 5}',), "not a string"),
        (('{"prompt": "a", "max_tokens": 0}',), "line 1: invalid output tokens 0"),
        (('{"prompt": "a", "output_tokens": "8"}',), "invalid output tokens '8'"),
        (('{"prompt": "a", "output_tokens": true}',), "invalid output tokens True"),
        (("[" * 100_000,), "line 1 nests too deep"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path: Path, lines: tuple[str, ...], words: str) -> None:
    path = write(tmp_path, *lines) if lines else tmp_path / "empty.jsonl"
    if not lines:
        path.write_bytes(b"")
    with pytest.raises(UsageError, match=words) as caught:
        load_dataset(path)
    assert str(path) in str(caught.value) and caught.value.hint


def test_missing_directory_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_dataset(tmp_path / "nowhere.jsonl")
    with pytest.raises(UsageError, match="is a directory"):
        load_dataset(tmp_path)
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError, match="not UTF-8"):
        load_dataset(binary)
    with pytest.raises(UsageError, match="not a regular file"):
        load_dataset(Path("/dev/zero"))  # read for ever, were it read


def test_a_large_file_has_its_longest_prompts_counted(tmp_path: Path) -> None:
    entries = tuple(Entry(line, "w " * (line % 300), None) for line in range(1, 1001))
    big = Dataset(tmp_path / "big.jsonl", entries)
    counted = to_check(big)
    assert len(counted) == dataset_module.COUNT_LONGEST
    assert min(len(entry.prompt) for entry in counted) >= max(
        len(entry.prompt) for entry in entries if entry not in counted
    )
    small = Dataset(big.path, entries[: dataset_module.COUNT_ALL])
    assert to_check(small) == list(small.entries)


def test_a_prompt_too_long_for_the_context(standin: Callable[..., StandIn], tmp_path: Path) -> None:
    server = standin()
    words = MAX_MODEL_LEN - 10  # with BOS: MAX_MODEL_LEN - 9 tokens
    path = write(
        tmp_path, '{"prompt": "short"}', json.dumps({"prompt": " ".join(["w"] * words), "output_tokens": 9})
    )

    async def check(output_tokens: int) -> int:
        async with async_client(server.url) as client:
            return await check_dataset(client, "m", load_dataset(path), output_tokens)

    assert asyncio.run(check(1000)) == 2  # the long line's own 9 output tokens fit exactly
    path.write_text(json.dumps({"prompt": " ".join(["w"] * words)}) + "\n", encoding="utf-8")
    with pytest.raises(UsageError, match=f"line 1: its prompt of {words + 1} tokens and 10 output") as caught:
        asyncio.run(check(10))
    assert str(path) in str(caught.value)
    # The sweep checks before its first level: nothing is sent.
    with pytest.raises(UsageError, match="above the model's context"):
        run_sweep(server.url, "m", Workload((1,), None, 10, requests=1, dataset=path))


def test_sweep_of_a_dataset(standin: Callable[..., StandIn], tmp_path: Path) -> None:
    """Round robin over the lines; each request's output count is its line's, or --output-tokens."""
    server = standin("--ttft", "0.01")
    prompts = ["the cat sat on the mat", "a b c", "one two three four five six seven"]
    path = write(
        tmp_path,
        json.dumps({"prompt": prompts[0], "output_tokens": 3}),
        json.dumps({"text": prompts[1]}),
        json.dumps({"prompt": prompts[2], "max_tokens": 2}),
    )
    workload = Workload((1, 2), None, 4, requests=6, warmup=1, seed=11, dataset=path)
    assert workload.exact_input_tokens is None
    result = run_sweep(server.url, "m", workload)
    assert not result.stopped_early and result.prompts_verified == 3
    tokens = {text: len(tokenize(text)) for text in prompts}
    outputs = {prompts[0]: 3, prompts[1]: 4, prompts[2]: 2}
    order = [entry.prompt for entry in load_dataset(path).order(11)]
    # Request 0 is the warm-up; level 1 sends requests 1..6, level 2 requests 7..12: each line twice.
    for level, first in zip(result.levels, (1, 7), strict=True):
        sent = [order[index % 3] for index in range(first, first + 6)]
        stats = level.stats
        assert (stats.ok, stats.errors, stats.output_mismatches) == (6, {}, 0)
        assert stats.input_tokens == sum(tokens[prompt] for prompt in sent)
        assert stats.output_tokens == sum(outputs[prompt] for prompt in sent) == 18
    data = result.to_dict()["workload"]
    assert (data["dataset"], data["input_tokens"], data["images"]) == (str(path), None, 0)


def test_a_bad_dataset_is_said_before_the_server_is_asked(tmp_path: Path) -> None:
    """No server at this URL: the file's error comes first."""
    path = write(tmp_path, "{}")
    with pytest.raises(UsageError, match="line 1 has no prompt"):
        run_sweep("http://127.0.0.1:9", "m", Workload((1,), None, 4, requests=1, dataset=path))
