"""--images K --image-size WxH: the PNGs (read back with Pillow) and a chat sweep against the stand-in."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable

import pytest
from PIL import Image

from nimctl.bench.images import PREFIX, ImageSource
from nimctl.bench.sweep import run_sweep
from nimctl.bench.workload import CHAT_COMPLETIONS_PATH, Workload, parse_image_size
from nimctl.errors import UsageError
from tests.bench.conftest import StandIn
from tests.bench.standin import IMAGE_TOKENS


def decode(url: str) -> Image.Image:
    assert url.startswith(PREFIX)
    image = Image.open(io.BytesIO(base64.b64decode(url[len(PREFIX) :], validate=True)))
    image.load()
    return image


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (1, 4), (5, 7), (64, 64), (640, 480), (8192, 4)])
def test_images_are_pngs_of_the_size_asked_and_all_different(size: tuple[int, int]) -> None:
    source = ImageSource(2, size, seed=3)
    seen: set[bytes] = set()
    for index in range(4):
        urls = source.urls(index)
        assert len(urls) == 2
        for k, url in enumerate(urls):
            # The spliced text is the base64 of the PNG built whole.
            assert url == PREFIX + base64.b64encode(source.png(index, k)).decode()
            image = decode(url)
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", size)
            seen.add(image.tobytes())
    assert len(seen) == 8  # a server caching images by their pixels never sees one twice
    again = ImageSource(2, size, seed=3)
    assert again.urls(2) == source.urls(2)  # seeded: a run can be repeated
    assert ImageSource(2, size, seed=4).urls(2) != source.urls(2)


def test_parse_image_size() -> None:
    assert parse_image_size("640x480") == (640, 480)
    assert parse_image_size(" 64 X 32 ") == (64, 32)
    assert parse_image_size("8*8") == (8, 8)


@pytest.mark.parametrize(
    "text", ["", "640", "640x", "x480", "0x10", "10x0", "-1x5", "1.5x2", "9000x10", "axb"]
)
def test_bad_image_size(text: str) -> None:
    with pytest.raises(UsageError, match="--image-size") as caught:
        parse_image_size(text)
    assert "WIDTHxHEIGHT" in (caught.value.hint or "")


def test_chat_request_body() -> None:
    workload = Workload((1,), 16, 8, requests=1, images=2, image_size=(8, 8))
    assert workload.path == CHAT_COMPLETIONS_PATH and workload.exact_input_tokens is None
    body = workload.request_body("m", "the cat", images=["data:a", "data:b"])
    assert body == {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "the cat"},
                    {"type": "image_url", "image_url": {"url": "data:a"}},
                    {"type": "image_url", "image_url": {"url": "data:b"}},
                ],
            }
        ],
        "max_tokens": 8,
        "min_tokens": 8,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert workload.to_dict()["image_size"] == [8, 8] and workload.to_dict()["images"] == 2


@pytest.mark.parametrize("stream", [True, False])
def test_sweep_with_images(standin: Callable[..., StandIn], stream: bool) -> None:
    """Chat completions with the exact-size prompt and K images; the output count is still checked."""
    server = standin("--ttft", "0.01")
    workload = Workload((1, 2), 12, 3, requests=4, seed=2, stream=stream, images=2, image_size=(32, 16))
    result = run_sweep(server.url, "m", workload)
    assert not result.stopped_early, result.failure
    assert result.prompts_verified == 8
    for level in result.levels:
        stats = level.stats
        assert (stats.ok, stats.errors, stats.output_mismatches, stats.input_mismatches) == (4, {}, 0, 0)
        # The stand-in counts the text's tokens and IMAGE_TOKENS per image (and 400s a bad data URL).
        assert stats.input_tokens == 4 * (12 + 2 * IMAGE_TOKENS)
        assert stats.output_tokens == 12
        if stream:
            assert stats.ttft.count == 4


def test_image_workload_validation() -> None:
    with pytest.raises(UsageError, match="--images") as caught:
        Workload((1,), 8, 8, requests=1, images=-1)
    assert caught.value.hint
    with pytest.raises(UsageError, match="--image-size 0x5"):
        Workload((1,), 8, 8, requests=1, images=1, image_size=(0, 5))
    with pytest.raises(UsageError, match="two whole numbers"):
        Workload((1,), 8, 8, requests=1, images=1, image_size=(5,))  # type: ignore[arg-type]


@pytest.mark.parametrize("stream", [True, False])
def test_encoded_body_is_the_request_body(stream: bool) -> None:
    """The body spliced around the images reads back as the dict, whatever the prompt holds."""
    workload = Workload((1,), 8, 4, requests=1, images=2, image_size=(16, 8), stream=stream)
    source = ImageSource(2, (16, 8), seed=1)
    prompt = 'tricky "url": "" \\"url\\": \\"\\" {"url": ""} é \u2028'
    encoded = workload.encoded_body('m "x"', prompt, images=source.urls_bytes(5), output_tokens=3)
    assert encoded.stream is stream
    expected = workload.request_body('m "x"', prompt, images=source.urls(5), output_tokens=3)
    assert json.loads(encoded.content) == expected
