"""Structured output for ``nimctl chat``: the request fields for a constraint, and the check of the reply.

One :class:`Constraint` per request, built from the chat flags by :func:`build_constraint`, which
refuses a bad schema, regex, choice list or grammar before anything is sent. The fields are vLLM's
own (the engine behind ``nim-serve``, and behind NIM): OpenAI's ``response_format`` for JSON, and
``structured_outputs`` for a regex, a choice or a grammar. NIM's older ``nvext.guided_*`` spelling is
translated by the front (:mod:`nimctl.server.request_checks`), so nimctl itself sends one spelling.

The engine enforces the constraint while sampling; the client checks the reply again, because an
engine that does not know a field ignores it and answers unconstrained text with a 200. A reply
that fails the check is a :class:`ReplyMismatchError` (exit 7). A grammar cannot be checked here
without the engine's grammar library, so it is not.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nimctl.errors import UnreadableAnswerError, UsageError
from nimctl.regex_dialect import engine_regex_problem

FLAGS = ("--json-schema", "--json", "--regex", "--choice", "--grammar")
# Request fields that carry a constraint: a --param setting one would fight the flag's.
_CONSTRAINT_FIELDS = (
    "response_format",
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
)
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")  # OpenAI: a schema name is [A-Za-z0-9_-]{1,64}


class ReplyMismatchError(UnreadableAnswerError):
    """The server answered, but the reply breaks the constraint the request asked it to keep (exit 7)."""


@dataclass(frozen=True)
class CheckResult:
    """``matches`` is None when the constraint cannot be checked by the client (a grammar)."""

    flag: str
    matches: bool | None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"flag": self.flag, "matches": self.matches, "problem": self.problem}


@dataclass(frozen=True)
class Constraint:
    """``kind`` is the flag without its dashes: json-schema, json, regex, choice or grammar."""

    kind: str
    value: Any = None  # the schema (a dict), the pattern, the list of choices, or the grammar text
    name: str = "reply"  # json-schema only: the name OpenAI's response_format requires

    @property
    def flag(self) -> str:
        return "--" + self.kind

    def request_fields(self) -> dict[str, Any]:
        """The fields to add to the chat request."""
        if self.kind == "json-schema":
            schema = {"name": self.name, "schema": self.value, "strict": True}
            return {"response_format": {"type": "json_schema", "json_schema": schema}}
        if self.kind == "json":
            return {"response_format": {"type": "json_object"}}
        return {"structured_outputs": {self.kind: self.value}}

    def merged_into(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` (the other request fields) plus this constraint's; a --param for one is refused."""
        for key in _CONSTRAINT_FIELDS:
            if key in params:
                raise UsageError(
                    f"--param {key} cannot be used with {self.flag}: both constrain the reply",
                    hint=f"give either {self.flag} or --param {key}",
                )
        nvext = params.get("nvext")
        if isinstance(nvext, dict) and any(key.startswith("guided_") for key in nvext):
            raise UsageError(
                f"--param nvext.guided_* cannot be used with {self.flag}: both constrain the reply",
                hint=f"give either {self.flag} or --param nvext",
            )
        return {**params, **self.request_fields()}

    def check(self, text: str) -> CheckResult:
        """Whether ``text`` keeps the constraint, and if not, what is wrong (one line)."""
        if self.kind == "grammar":
            return CheckResult(self.flag, None)
        problem = _problem(self, text)
        return CheckResult(self.flag, problem is None, problem)

    def verify(self, text: str, finish_reason: str | None) -> CheckResult:
        """:meth:`check`, raising :class:`ReplyMismatchError` when the reply does not match."""
        result = self.check(text)
        if result.matches is False:
            raise mismatch_error(result, finish_reason)
        return result


def mismatch_error(result: CheckResult, finish_reason: str | None) -> ReplyMismatchError:
    if finish_reason == "length":
        hint = "the reply was cut at the token limit (finish_reason length): raise --max-tokens"
    else:
        hint = (
            "the server did not keep the constraint: an engine that does not know the request's "
            "response_format/structured_outputs fields answers unconstrained text"
        )
    return ReplyMismatchError(f"the reply does not match {result.flag}: {result.problem}", hint=hint)


def _problem(constraint: Constraint, text: str) -> str | None:
    kind, value = constraint.kind, constraint.value
    if kind == "regex":
        return None if re.fullmatch(value, text) else f"{_shown(text)} is not a full match of {value!r}"
    if kind == "choice":
        return None if text in value else f"{_shown(text)} is not one of {', '.join(map(repr, value))}"
    try:
        reply = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than Python's stack
        return f"not JSON ({exc})"
    if kind == "json":
        return None if isinstance(reply, dict) else "the reply is JSON but not an object"
    from jsonschema import validators
    from jsonschema.exceptions import best_match

    try:
        error = best_match(validators.validator_for(value)(value).iter_errors(reply))
    except RecursionError:
        return "the reply is nested too deeply to check"
    if error is None:
        return None
    where = error.json_path
    return error.message if where == "$" else f"{error.message} (at {where})"


def _shown(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def build_constraint(
    *,
    json_schema: str | None = None,
    json_object: bool = False,
    regex: str | None = None,
    choice: str | None = None,
    grammar: Path | None = None,
) -> Constraint | None:
    """The constraint the flags ask for (None: none), checked before anything is sent (UsageError)."""
    given = [
        flag
        for flag, value in zip(FLAGS, (json_schema, json_object or None, regex, choice, grammar), strict=True)
        if value is not None
    ]
    if len(given) > 1:
        raise UsageError(
            f"{' and '.join(given)} cannot be used together: a reply keeps one constraint",
            hint="give one of " + ", ".join(FLAGS),
        )
    if json_schema is not None:
        schema, name = load_schema(json_schema)
        return Constraint("json-schema", schema, name)
    if json_object:
        return Constraint("json")
    if regex is not None:
        return Constraint("regex", _checked_regex(regex))
    if choice is not None:
        return Constraint("choice", parse_choices(choice))
    if grammar is not None:
        return Constraint("grammar", _read_text(grammar, "--grammar"))
    return None


def load_schema(source: str) -> tuple[dict[str, Any], str]:
    """A JSON schema given inline (text starting with ``{``) or as a file; and a name for it."""
    from jsonschema import validators
    from jsonschema.exceptions import SchemaError

    inline = source.lstrip().startswith("{")
    where = "--json-schema" if inline else f"--json-schema {source}"
    text = source if inline else _read_text(Path(source), "--json-schema")
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise UsageError(
            f"{where} is not valid JSON: {exc}", hint="give a JSON schema file or inline JSON"
        ) from None
    if not isinstance(schema, dict):
        raise UsageError(f"{where} is not a JSON object", hint='a schema looks like {"type": "object", ...}')
    try:
        validators.validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        at = exc.json_path
        problem = exc.message if at == "$" else f"{exc.message} (at {at})"
        raise UsageError(
            f"{where} is not a valid JSON schema: {problem}", hint="see json-schema.org"
        ) from None
    _check_refs(schema, schema, where)
    title = schema.get("title")
    base = title if isinstance(title, str) else ("reply" if inline else Path(source).stem)
    name = _NAME_CHARS.sub("_", base).strip("_")[:64] or "reply"
    return schema, name


def parse_choices(text: str) -> list[str]:
    """``A,B,C`` -> ["A", "B", "C"]: each stripped, repeats dropped, none empty."""
    choices: list[str] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise UsageError(
                f"--choice {text!r} has an empty choice", hint="list the choices with commas: --choice yes,no"
            )
        if item not in choices:
            choices.append(item)
    return choices


def _checked_regex(pattern: str) -> str:
    if not pattern:
        raise UsageError("--regex is empty", hint="e.g. --regex '[a-z]{3}-[0-9]{2}'")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise UsageError(
            f"--regex {pattern!r} is not a valid regular expression: {exc}",
            hint="the engine matches the whole reply; keep to the common syntax ([...], {m,n}, |, groups)",
        ) from None
    if (problem := engine_regex_problem(pattern)) is not None:
        raise UsageError(f"--regex {pattern!r}: {problem}", hint=_DIALECT_HINT)
    return pattern


_DIALECT_HINT = "use plain groups (...) or (?:...), and spell cases out: [Aa]"


def _read_text(path: Path, flag: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{flag} {path}: no such file", hint="give a path to an existing file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{flag} {path}: not UTF-8 text", hint="save the file as UTF-8") from None
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot be read ({exc.strerror})", hint="check the path") from None
    if not text.strip():
        raise UsageError(f"{flag} {path} is empty", hint="give a file with content")
    return text


def _check_refs(node: Any, schema: dict[str, Any], where: str) -> None:
    """Every ``$ref`` points inside the schema, at something there: the reply is checked here
    with it, and nimctl fetches nothing (an unresolvable one would fail only after the request)."""
    if isinstance(node, list):
        for item in node:
            _check_refs(item, schema, where)
        return
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str) and not _resolves(ref, schema):
        raise UsageError(
            f"{where}: $ref {ref!r} does not point at a part of the schema",
            hint="use local references such as #/$defs/NAME, defined in the same schema",
        )
    for value in node.values():
        _check_refs(value, schema, where)


def _resolves(ref: str, schema: dict[str, Any]) -> bool:
    if ref == "#":
        return True
    if not ref.startswith("#/"):
        return False
    found: Any = schema
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(found, dict) and key in found:
            found = found[key]
        elif isinstance(found, list) and key.isdigit() and int(key) < len(found):
            found = found[int(key)]
        else:
            return False
    return True
