"""Prompts of exactly N tokens, all different, built with the server's own tokenizer (``/tokenize``).

Text prompts, counted and checked by the server, rather than token-id prompts. vLLM accepts
``"prompt": [ids]`` and that would be exact by construction, but it skips the tokenizer (whose cost
is part of every real request's time to first token), NIMs on other engines and OpenAI-compatible
proxies do not all accept it, and chat requests and real prompts (a dataset, images) are text anyway.
Text is exact too, when built this way:

- a fixed head word (``the``): its token count alone, special tokens included (a BOS, say), is
  ``head_tokens``;
- a vocabulary of words that the tokenizer reads as one token each after a space, found by asking
  ``/tokenize`` (byte-level BPE and SentencePiece split on spaces, so such a word stays one token
  whatever is around it);
- prompt ``i`` is the head and ``N - head_tokens`` of those words: the first few spell ``i`` in
  base len(vocabulary), least significant first, so no two prompts share more than the head (a
  server's prefix cache caches whole blocks, 16 tokens in vLLM, and the head is shorter); the rest
  are drawn from a generator seeded with ``(seed, i)``, so a run can be repeated exactly.

Every prompt a sweep of N requests sends is then counted by ``/tokenize`` before the first level,
up to :data:`VERIFY_AT_MOST` (a duration sweep, whose count is not known, has its first
:data:`VERIFY_SAMPLE` counted); the server's ``usage`` of each request is checked again by
:mod:`.stats`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from nimctl.bench._http import call_json
from nimctl.errors import UnreadableAnswerError, UsageError

if TYPE_CHECKING:
    from nimctl._httpx import httpx
    from nimctl.bench.workload import Workload

_T = TypeVar("_T")

HEAD = "the"
# Common words first (one token in any real tokenizer's vocabulary), then single letters for the
# tiny demo tokenizers, whose 500-odd tokens hold few whole words.
_WORDS = """of and to in is you that it he was for on are as with his they at be this have from or one
    had by word but not what all were we when your can said there use an each which she do how
    their if will up other about out many then them these so some her would make like him into
    time has look two more write go see number no way could people my than first water been call
    who its now find long down day did get come made may part over new sound take only little work
    know place year live me back give most very after thing our just name good sentence man think
    say great where help through much before line right too mean old any same tell boy follow came
    want show also around form three small set put end does another well large must big even such
    because turn here why ask went men read need land different home us move try kind hand picture
    again change off play spell air away animal house point page letter mother answer found study
    still learn should world"""
CANDIDATES: tuple[str, ...] = (*_WORDS.split(), *"abcdefghijklmnopqrstuvwxyz")
MIN_WORDS = 8
# Prompts of a duration sweep counted before it starts; the rest are built the same way, unchecked.
VERIFY_SAMPLE = 32
# At most this many are counted before a sweep of N requests: each is a round trip (about 2 ms
# here), and --requests 100000 would spend minutes counting before the first level. The server's
# usage of every request is checked all the same (stats' token_mismatches).
VERIFY_AT_MOST = 1024
# How many requests to /tokenize at once while building (a remote server answers each in one round trip).
TOKENIZE_CONCURRENCY = 8
_INDEX_WORDS = 3
_NO_TOKENIZE = (
    "the server has no /tokenize (or not this model): exact prompt sizes need a vLLM-based server, "
    "NIM or vLLM; check the model name with `nimctl models`"
)
_SPACE_MARKERS = ("Ġ", "▁", " ")  # byte-level BPE, SentencePiece, plain


class PromptBuildError(UsageError):
    """No exact prompts of the size asked can be built with this server's tokenizer."""


@dataclass(frozen=True)
class Vocabulary:
    head: str
    head_tokens: int
    words: tuple[str, ...]
    max_model_len: int | None = None


class PromptFactory:
    """Prompt ``i`` of exactly ``input_tokens`` tokens, the same for the same seed and vocabulary."""

    def __init__(self, vocabulary: Vocabulary, input_tokens: int, seed: int) -> None:
        if input_tokens < vocabulary.head_tokens:
            raise UsageError(
                f"--input-tokens {input_tokens} is below the {vocabulary.head_tokens} tokens this server's "
                "tokenizer makes of the shortest prompt (its special tokens included)",
                hint=f"pass --input-tokens {vocabulary.head_tokens} or more",
            )
        self.vocabulary = vocabulary
        self.input_tokens = input_tokens
        self.seed = seed

    def prompt(self, index: int) -> str:
        words = self.vocabulary.words
        count = self.input_tokens - self.vocabulary.head_tokens
        chosen: list[str] = []
        rest = index
        for _ in range(min(_INDEX_WORDS, count)):
            rest, digit = divmod(rest, len(words))
            chosen.append(words[digit])
        rng = random.Random(f"{self.seed}:{index}")
        # One call for the lot: built on the event loop between requests, a long prompt must be quick
        # (choices() takes half the time of choice() in a loop: about 1 ms for 8,192 tokens here).
        chosen.extend(rng.choices(words, k=count - len(chosen)))
        return self.vocabulary.head + "".join(" " + word for word in chosen)


async def build_prompts(
    client: httpx.AsyncClient, model: str, workload: Workload, seed: int
) -> tuple[PromptFactory, int]:
    """The factory of the sweep's prompts, and how many of them ``/tokenize`` counted (all, for a
    sweep of N requests per level, up to :data:`VERIFY_AT_MOST`; :data:`VERIFY_SAMPLE` for one that
    runs for a duration)."""
    vocabulary = await discover_vocabulary(client, model)
    check_context(vocabulary, workload.input_tokens, workload.output_tokens)
    factory = PromptFactory(vocabulary, workload.input_tokens, seed)
    needed = workload.prompts_needed()
    verified = min(needed, VERIFY_AT_MOST) if needed is not None else VERIFY_SAMPLE
    await verify_prompts(client, model, factory, range(verified))
    return factory, verified


async def count_tokens(client: httpx.AsyncClient, model: str, text: str) -> dict[str, Any]:
    """``/tokenize``'s answer for ``text``: ``count``, ``max_model_len``, ``token_strs``."""
    payload = {"model": model, "prompt": text, "return_token_strs": True}
    body = await call_json(client, "POST", "/tokenize", payload, not_found_hint=_NO_TOKENIZE)
    if not isinstance(body, dict) or not isinstance(body.get("count"), int):
        raise UnreadableAnswerError(
            "the server's answer to /tokenize has no token count", hint="is the URL a vLLM/NIM server?"
        )
    return body


async def discover_vocabulary(client: httpx.AsyncClient, model: str) -> Vocabulary:
    """The head's size and the one-token words of this server's tokenizer (two or three calls, usually)."""
    head = await count_tokens(client, model, HEAD)
    head_tokens = int(head["count"])
    max_len = head.get("max_model_len")
    max_model_len = max_len if isinstance(max_len, int) else None
    probe = await count_tokens(client, model, _join(CANDIDATES))
    words = _one_token_words(probe.get("token_strs"), head_tokens)
    if words is None or len(words) < MIN_WORDS or not await _all_single(client, model, words, head_tokens):
        words = await _one_token_words_by_asking(client, model, head_tokens)
    if len(words) < MIN_WORDS:
        raise PromptBuildError(
            f"this server's tokenizer reads only {len(words)} of nimctl's {len(CANDIDATES)} probe words as "
            "one token each: too few to build distinct prompts of an exact size",
            hint="benchmark with real prompts instead (a dataset file)",
        )
    return Vocabulary(HEAD, head_tokens, tuple(words), max_model_len)


def _join(words: tuple[str, ...] | list[str]) -> str:
    return HEAD + "".join(" " + word for word in words)


def _one_token_words(token_strs: object, head_tokens: int) -> list[str] | None:
    """The probe's words that came out as one token, read from the token strings; None when they
    cannot be lined up with the words (an unknown space marker, or a tokenizer adding tokens at the end)."""
    if not isinstance(token_strs, list) or not all(isinstance(token, str) for token in token_strs):
        return None
    sizes: list[int] = []
    for token in token_strs[head_tokens:]:
        if token.startswith(_SPACE_MARKERS):
            sizes.append(1)
        elif sizes:
            sizes[-1] += 1
        else:
            return None
    if len(sizes) != len(CANDIDATES):
        return None
    return [word for word, size in zip(CANDIDATES, sizes, strict=True) if size == 1]


async def _all_single(client: httpx.AsyncClient, model: str, words: list[str], head_tokens: int) -> bool:
    answer = await count_tokens(client, model, _join(words))
    return int(answer["count"]) == head_tokens + len(words)


async def _one_token_words_by_asking(client: httpx.AsyncClient, model: str, head_tokens: int) -> list[str]:
    """One ``/tokenize`` per candidate word: slower, but assumes nothing about the token strings."""
    gate = asyncio.Semaphore(TOKENIZE_CONCURRENCY)

    async def single(word: str) -> bool:
        async with gate:
            return await _all_single(client, model, [word], head_tokens)

    flags = await gather(single(word) for word in CANDIDATES)
    return [word for word, ok in zip(CANDIDATES, flags, strict=True) if ok]


async def verify_prompts(
    client: httpx.AsyncClient, model: str, factory: PromptFactory, indices: range
) -> None:
    """Count each prompt with ``/tokenize``; one of the wrong size raises :class:`PromptBuildError`."""
    gate = asyncio.Semaphore(TOKENIZE_CONCURRENCY)

    async def check(index: int) -> None:
        async with gate:
            answer = await count_tokens(client, model, factory.prompt(index))
        if int(answer["count"]) != factory.input_tokens:
            raise PromptBuildError(
                f"prompt {index} came out as {answer['count']} tokens instead of {factory.input_tokens}: "
                "this server's tokenizer joins words across spaces",
                hint="benchmark with real prompts instead (a dataset file)",
            )

    await gather(check(index) for index in indices)


async def gather(coroutines: Iterable[Coroutine[Any, Any, _T]]) -> list[_T]:
    """All of them; the first failure cancels the rest (none left running against a closed client)."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def check_context(vocabulary: Vocabulary, input_tokens: int, output_tokens: int) -> None:
    """A prompt and its answer must fit the model's context, or every request would be refused."""
    limit = vocabulary.max_model_len
    if limit is not None and input_tokens + output_tokens > limit:
        raise UsageError(
            f"--input-tokens {input_tokens} and --output-tokens {output_tokens} make "
            f"{input_tokens + output_tokens} tokens, above the model's context of {limit}",
            hint="lower --input-tokens or --output-tokens",
        )
