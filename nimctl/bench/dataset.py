"""Real prompts for a bench run (``--dataset FILE.jsonl``): JSON Lines, one request per line.

A line is an object with the prompt under ``"prompt"`` (vLLM's custom dataset for
``vllm bench serve``) or ``"text"`` (AIPerf's single-turn files), and optionally the tokens to
generate for it under ``"output_tokens"`` or ``"max_tokens"`` (else ``--output-tokens``). Other keys
are ignored (images in a dataset are not read: ``--images`` adds generated ones). Blank lines are
skipped. For example::

    {"prompt": "Summarise the plot of Hamlet.", "output_tokens": 200}
    {"text": "Translate 'good morning' into French."}

Request ``i`` of a run sends line ``order[i % lines]``, where ``order`` is the file's lines shuffled
with the run's seed: every line is sent once before any is sent again, and a repeated run with the
same seed sends the same sequence. (A line sent again may find its prompt in the server's prefix
cache; give a file with as many lines as the run sends requests to avoid that.)

Before the first level each prompt is counted with the server's ``/tokenize`` and checked against
the model's context: all of them when the file has up to :data:`COUNT_ALL` lines, else the
:data:`COUNT_LONGEST` longest (by characters; a prompt's tokens grow with its text). A server
without ``/tokenize`` gets no check: the requests that do not fit are then counted as errors.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nimctl.bench.prompts import count_tokens, gather
from nimctl.errors import HTTPStatusError, UsageError

if TYPE_CHECKING:
    from nimctl._httpx import httpx

COUNT_ALL = 256
COUNT_LONGEST = 64
_PROMPT_KEYS = ("prompt", "text")
_OUTPUT_KEYS = ("output_tokens", "max_tokens")
_FORMAT = (
    'one JSON object a line: {"prompt": "...", "output_tokens": 128} ("text" and "max_tokens" also read)'
)


@dataclass(frozen=True)
class Entry:
    line: int  # 1-based, in the file
    prompt: str
    output_tokens: int | None = None


@dataclass(frozen=True)
class Dataset:
    path: Path
    entries: tuple[Entry, ...]

    def order(self, seed: int) -> list[Entry]:
        """The lines in the order a run with ``seed`` sends them (request ``i``: ``[i % len]``)."""
        shuffled = list(self.entries)
        random.Random(f"dataset:{seed}").shuffle(shuffled)
        return shuffled


def load_dataset(path: Path) -> Dataset:
    """Read and check the whole file; any bad line raises :class:`UsageError` naming it."""
    if path.exists() and not path.is_dir() and not path.is_file():
        # A device or a pipe (/dev/zero) would be read for ever.
        raise UsageError(f"--dataset {path} is not a regular file", hint="give the path of a .jsonl file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--dataset {path}: no such file", hint="give the path of a .jsonl file") from None
    except IsADirectoryError:
        raise UsageError(f"--dataset {path} is a directory", hint="give the path of a .jsonl file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"--dataset {path} is not UTF-8 text ({exc.reason})", hint=_FORMAT) from None
    except OSError as exc:
        raise UsageError(f"--dataset {path}: {exc.strerror or exc}", hint="check the path") from None
    entries = [_entry(path, number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not entries:
        raise UsageError(f"--dataset {path} holds no prompt: the file is empty", hint=_FORMAT)
    return Dataset(path, tuple(entries))


def _entry(path: Path, number: int, line: str) -> Entry:
    where = f"--dataset {path}, line {number}"
    try:
        item = json.loads(line)
    except ValueError as exc:
        raise UsageError(f"{where} is not JSON ({exc})", hint=_FORMAT) from None
    except RecursionError:  # thousands of nested brackets
        raise UsageError(f"{where} nests too deep to be a prompt's object", hint=_FORMAT) from None
    if not isinstance(item, dict):
        raise UsageError(f"{where} is not a JSON object", hint=_FORMAT)
    prompt = next((item[key] for key in _PROMPT_KEYS if key in item), None)
    if not isinstance(prompt, str) or not prompt.strip():
        found = "an empty one" if isinstance(prompt, str) else "none" if prompt is None else "not a string"
        raise UsageError(f'{where} has no prompt ("prompt" or "text": {found})', hint=_FORMAT)
    output = next((item[key] for key in _OUTPUT_KEYS if key in item), None)
    if output is not None and (not isinstance(output, int) or isinstance(output, bool) or output < 1):
        raise UsageError(
            f"{where}: invalid output tokens {output!r}, a whole number, 1 or more", hint=_FORMAT
        )
    return Entry(number, prompt, output)


def to_check(dataset: Dataset) -> list[Entry]:
    """The lines whose prompts are counted before the run (see the module's docstring)."""
    if len(dataset.entries) <= COUNT_ALL:
        return list(dataset.entries)
    return sorted(dataset.entries, key=lambda entry: len(entry.prompt), reverse=True)[:COUNT_LONGEST]


async def check_dataset(
    client: httpx.AsyncClient, model: str, dataset: Dataset, output_tokens: int, concurrency: int = 8
) -> int:
    """Count the prompts of :func:`to_check` with ``/tokenize``; one that cannot fit the model's context
    with its answer raises :class:`UsageError` naming its line. Returns how many were counted (0: the
    server has no ``/tokenize``)."""
    entries = to_check(dataset)
    gate = asyncio.Semaphore(concurrency)

    async def check(entry: Entry) -> None:
        async with gate:
            answer = await count_tokens(client, model, entry.prompt)
        limit = answer.get("max_model_len")
        wanted = entry.output_tokens or output_tokens
        tokens = int(answer["count"])
        if isinstance(limit, int) and tokens + wanted > limit:
            raise UsageError(
                f"--dataset {dataset.path}, line {entry.line}: its prompt of {tokens} tokens and "
                f"{wanted} output tokens make {tokens + wanted}, above the model's context of {limit}",
                hint="shorten or remove that line, or lower the output tokens",
            )

    try:
        await check(entries[0])
    except HTTPStatusError as exc:
        if exc.status == 404:  # not a vLLM-based server: real prompts need no tokenizer of ours
            return 0
        raise
    await gather(check(entry) for entry in entries[1:])
    return len(entries)
