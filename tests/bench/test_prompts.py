"""Prompts of exactly N tokens from the server's /tokenize (the stand-in's toy tokenizer)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from nimctl.bench import prompts
from nimctl.bench._http import async_client
from nimctl.bench.prompts import (
    CANDIDATES,
    PromptBuildError,
    PromptFactory,
    Vocabulary,
    build_prompts,
    count_tokens,
    discover_vocabulary,
    verify_prompts,
)
from nimctl.bench.workload import Workload
from nimctl.errors import ServerUnreachableError, UsageError
from tests.bench.conftest import StandIn
from tests.bench.standin import tokenize


def test_vocabulary_has_only_one_token_words(standin: Callable[..., StandIn]) -> None:
    server = standin()

    async def discover() -> Vocabulary:
        async with async_client(server.url) as client:
            return await discover_vocabulary(client, "m")

    vocabulary = asyncio.run(discover())
    assert vocabulary.head_tokens == 2  # BOS and "the"
    assert vocabulary.max_model_len == 4096
    assert "sentence" not in vocabulary.words and "different" not in vocabulary.words  # two tokens each
    assert vocabulary.words == tuple(word for word in CANDIDATES if len(word) <= 7)


def test_vocabulary_without_token_strings(standin: Callable[..., StandIn]) -> None:
    """A server that gives no token strings: one /tokenize per word finds the same vocabulary."""
    server = standin("--no-token-strs")

    async def discover() -> Vocabulary:
        async with async_client(server.url) as client:
            return await discover_vocabulary(client, "m")

    assert asyncio.run(discover()).words == tuple(word for word in CANDIDATES if len(word) <= 7)


@pytest.mark.parametrize("input_tokens", [2, 3, 5, 16, 200])
def test_prompts_are_exact_distinct_and_seeded(standin: Callable[..., StandIn], input_tokens: int) -> None:
    server = standin()
    workload = Workload((1, 2), input_tokens, 4, requests=10, warmup=3)

    async def build() -> tuple[PromptFactory, int, list[int]]:
        async with async_client(server.url) as client:
            factory, verified = await build_prompts(client, "m", workload, seed=7)
            counts = [(await count_tokens(client, "m", factory.prompt(i)))["count"] for i in range(verified)]
            return factory, verified, counts

    factory, verified, counts = asyncio.run(build())
    assert verified == 23
    assert counts == [input_tokens] * 23
    prompts = [factory.prompt(i) for i in range(23)]
    if input_tokens >= 5:  # room for three words spelling the index: all distinct
        assert len(set(prompts)) == 23
        # no two share more than the head: the first word after it already differs between neighbours
        assert len({prompt.split(" ")[1] for prompt in prompts[:5]}) == 5
    same_seed = PromptFactory(factory.vocabulary, input_tokens, 7)
    assert [same_seed.prompt(i) for i in range(23)] == prompts
    other_seed = PromptFactory(factory.vocabulary, input_tokens, 8)
    if input_tokens > 5:
        assert other_seed.prompt(0) != prompts[0]


def test_prompt_below_the_head_or_above_the_context(standin: Callable[..., StandIn]) -> None:
    server = standin()

    async def build(workload: Workload) -> None:
        async with async_client(server.url) as client:
            await build_prompts(client, "m", workload, seed=0)

    with pytest.raises(UsageError, match="below the 2 tokens") as caught:
        asyncio.run(build(Workload((1,), 1, 4, requests=1)))
    assert caught.value.hint == "pass --input-tokens 2 or more"
    with pytest.raises(UsageError, match="above the model's context of 4096"):
        asyncio.run(build(Workload((1,), 4000, 200, requests=1)))


def test_a_tokenizer_that_joins_words_is_caught(standin: Callable[..., StandIn]) -> None:
    server = standin()
    words = tuple(word for word in CANDIDATES if len(word) <= 7)
    # Claim "of" is one token after the head when it is written with another word glued on.
    vocabulary = Vocabulary("the", 2, ("ofandtothe", *words[1:]))
    factory = PromptFactory(vocabulary, 12, seed=0)

    async def verify() -> None:
        async with async_client(server.url) as client:
            await verify_prompts(client, "m", factory, range(400))

    with pytest.raises(PromptBuildError, match="instead of 12"):
        asyncio.run(verify())
    assert len(tokenize(factory.prompt(0))) != 12


def test_unreachable_server_raises_the_clients_error() -> None:
    async def build() -> None:
        async with async_client("http://127.0.0.1:9") as client:
            await discover_vocabulary(client, "m")

    with pytest.raises(ServerUnreachableError):
        asyncio.run(build())


def test_a_server_without_tokenize(standin: Callable[..., StandIn]) -> None:
    from nimctl.errors import RequestRejectedError

    server = standin()

    async def build() -> None:
        async with async_client(server.url) as client:
            client.base_url = client.base_url.join("/nothing-here")  # every path is a 404 below it
            await discover_vocabulary(client, "m")

    with pytest.raises(RequestRejectedError) as caught:
        asyncio.run(build())
    assert "no /tokenize" in (caught.value.hint or "")


def test_a_long_sweep_counts_at_most_the_cap_first(
    standin: Callable[..., StandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prompts, "VERIFY_AT_MOST", 6)
    server = standin()

    async def build() -> int:
        async with async_client(server.url) as client:
            _, verified = await build_prompts(client, "m", Workload((1,), 8, 4, requests=100_000), seed=1)
            return verified

    assert asyncio.run(build()) == 6
