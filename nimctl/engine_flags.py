"""Reading vLLM's command-line flags as vLLM's own parser reads them.

Shared by the manifests' engine arguments (:mod:`nimctl.profiles`) and the ones a user passes
to ``nim-serve`` (:mod:`nimctl.server.engine_args`): underscores are dashes, ``--flag V`` and
``--flag=V`` are the same, and the last value wins, as in argparse.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence


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


# Flags whose value may be a credential (vLLM's --api-key, --hf-token; a key file's path is fine to show).
_SECRET_FLAG = re.compile(r"(key|token|secret|password)$")
MASK = "***"


def masked(args: Sequence[str]) -> list[str]:
    """``args`` with the values of credential flags replaced by ``***``: fit to show or record."""
    shown: list[str] = []
    hide_next = False
    for arg in args:
        name = flag_name(arg)
        if hide_next and name is None:
            shown.append(MASK)
        elif name is not None and _SECRET_FLAG.search(name) and "=" in arg:
            shown.append(f"{arg.split('=', 1)[0]}={MASK}")
        else:
            shown.append(arg)
        hide_next = name is not None and bool(_SECRET_FLAG.search(name)) and "=" not in arg
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
