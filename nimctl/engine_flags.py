"""Reading vLLM's command-line flags as vLLM's own parser reads them.

Shared by the manifests' engine arguments (:mod:`nimctl.profiles`) and the ones a user passes
to ``nim-serve`` (:mod:`nimctl.server.engine_args`): underscores are dashes, ``--flag V`` and
``--flag=V`` are the same, and the last value wins, as in argparse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence


def flag_name(arg: str) -> str | None:
    """``--flag`` or ``--flag=value`` as vLLM reads the name (underscores become dashes)."""
    if not arg.startswith("--") or arg == "--":
        return None
    name = arg.split("=", 1)[0]
    return "--" + name[2:].replace("_", "-")


def flag_values(args: Sequence[str], flag: str) -> Iterator[str]:
    """Every value given to ``flag`` in ``args``, in order."""
    for index, arg in enumerate(args):
        if flag_name(arg) != flag:
            continue
        if "=" in arg:
            yield arg.split("=", 1)[1]
        elif index + 1 < len(args):
            yield args[index + 1]


def flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value ``flag`` ends up with (the last one given), or None."""
    values = list(flag_values(args, flag))
    return values[-1] if values else None


MASK = "***"
# Flags whose value is a secret (vLLM's --api-key, an --hf-token): the name's last word.
# Not a substring match: --ssl-keyfile (a path) and --max-num-batched-tokens are not secrets.
_SECRET_FLAG = re.compile(
    r"^--(?:[a-z0-9]+-)*(?:api-?key|key|token|secret|password|passwd|credentials?)$", re.IGNORECASE
)
# vLLM's parser takes any unambiguous start of a flag (--hf-tok): those of its secret flags are too.
_SECRET_ENGINE_FLAGS = ("--api-key", "--hf-token")


def is_secret_flag(name: str) -> bool:
    """``name`` as :func:`flag_name` gives it."""
    if _SECRET_FLAG.match(name):
        return True
    return len(name) > len("--api") and any(flag.startswith(name) for flag in _SECRET_ENGINE_FLAGS)


def masked(args: Iterable[str]) -> list[str]:
    """``args`` with the values of secret flags as ``***`` (``--api-key X``, ``--api-key=X``): fit to
    print (``--dry-run``), to serve (``/v1/metadata``) and to record (``nimctl bench``)."""
    shown: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            shown.append(MASK)
            hide_next = False
            continue
        name = flag_name(arg)
        if name is not None and is_secret_flag(name):
            shown.append(f"{arg.split('=', 1)[0]}={MASK}" if "=" in arg else arg)
            hide_next = "=" not in arg
        else:
            shown.append(arg)
    return shown


_HUMAN_INT = re.compile(r"(\d+(?:\.\d+)?)([kKmMgG]?)")
_MULTIPLIERS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}


def parse_context_length(value: str) -> int | None:
    """A ``--max-model-len`` value as vLLM reads it (``2048``, ``4k``, ``4K``); None for auto or junk."""
    match = _HUMAN_INT.fullmatch(value.strip())
    if not match:
        return None  # "auto", "-1" or a typo: the engine decides, or reports the typo itself
    number, suffix = match.groups()
    length = int(float(number) * _MULTIPLIERS[suffix])
    return length if length > 0 else None


def requested_context_length(args: Sequence[str], default: int | None) -> int | None:
    """The context length the engine will run with: the last ``--max-model-len`` wins, as in argparse."""
    value = flag_value(args, "--max-model-len")
    return parse_context_length(value) if value is not None else default
