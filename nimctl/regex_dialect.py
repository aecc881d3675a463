"""vLLM 0.32's regex dialect: what its structured-output backend takes, where Python's ``re`` takes
more. Shared by the client (``nimctl chat --regex``: a usage error before sending) and the front
(a 400 instead of the engine's 500); it imports nothing of nimctl, so both may use it.
"""

from __future__ import annotations

import re

# A group with inline flags ((?i), (?s:...), (?-i:...)) or Python's named-group spelling ((?P<n>...),
# (?P=n)), and Unicode property classes (\p{L}): vLLM 0.32's xgrammar passes them at validation and
# then fails compiling them in the engine core, which answers 500 (found by trying them).
_FLAG_GROUP = re.compile(r"\(\?(?:P|[aiLmsux-]+[:)])")


_UNICODE_PROPERTY = re.compile(r"(?:^|[^\\])(?:\\\\)*\\[pP]")  # \p or \P after an even run of backslashes


def has_unicode_property(pattern: str) -> bool:
    """Whether ``pattern`` uses ``\\p{...}``/``\\P{...}``: vLLM 0.32 fails on it in the engine core (a 500),
    in a regex constraint and in a JSON schema's ``pattern`` alike (the front checks both)."""
    return _UNICODE_PROPERTY.search(pattern) is not None


def engine_regex_problem(pattern: str) -> str | None:
    """Why the engine cannot take ``pattern`` although Python's ``re`` can; None when it can.

    Shared by the client (a usage error before sending) and the front (a 400 instead of the
    engine's 500). Escapes and character classes are skipped, so ``\\(?i)`` or ``[(?i)]`` pass.
    """
    if has_unicode_property(pattern):
        return "Unicode property classes (\\p{...}) are not in the engine's regex dialect"
    index, length, in_class = 0, len(pattern), False
    while index < length:
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            index += 1
            if pattern[index : index + 1] == "^":
                index += 1
            if pattern[index : index + 1] == "]":
                index += 1  # a ] first in a class is a character, not its end
            continue
        elif char == "(" and _FLAG_GROUP.match(pattern, index):
            if pattern.startswith("(?P", index):
                return "Python's named groups (?P<name>...) are not in the engine's regex dialect"
            return "inline flags such as (?i) are not in the engine's regex dialect"
        index += 1
    return None
