"""nimctl.client.structured: the flags to a constraint, its request fields, and the check of a reply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nimctl.client.structured import Constraint, ReplyMismatchError, build_constraint, load_schema
from nimctl.errors import EXIT_SERVER_ERROR, EXIT_USAGE, UnreadableAnswerError, UsageError

PERSON = {
    "title": "a person",
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def test_request_fields_are_vllm_native() -> None:
    schema = build_constraint(json_schema=json.dumps(PERSON))
    assert schema is not None and schema.request_fields() == {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "a_person", "schema": PERSON, "strict": True},
        }
    }
    assert build_constraint(json_object=True) == Constraint("json")
    assert Constraint("json").request_fields() == {"response_format": {"type": "json_object"}}
    regex = build_constraint(regex="[a-z]{3}-[0-9]{2}")
    assert regex is not None
    assert regex.request_fields() == {"structured_outputs": {"regex": "[a-z]{3}-[0-9]{2}"}}
    choice = build_constraint(choice=" yes, no ,yes,maybe")
    assert choice is not None
    assert choice.request_fields() == {"structured_outputs": {"choice": ["yes", "no", "maybe"]}}
    assert build_constraint() is None


def test_grammar_file(tmp_path: Path) -> None:
    path = tmp_path / "yn.gbnf"
    path.write_text('root ::= "yes" | "no"\n', encoding="utf-8")
    grammar = build_constraint(grammar=path)
    assert grammar is not None
    assert grammar.request_fields() == {"structured_outputs": {"grammar": 'root ::= "yes" | "no"\n'}}
    result = grammar.verify("anything at all", "stop")  # no client-side grammar check
    assert result.matches is None and result.as_dict() == {
        "flag": "--grammar",
        "matches": None,
        "problem": None,
    }


def test_schema_from_a_file_is_named_after_it(tmp_path: Path) -> None:
    path = tmp_path / "my person.schema.json"
    path.write_text(json.dumps({k: v for k, v in PERSON.items() if k != "title"}), encoding="utf-8")
    schema, name = load_schema(str(path))
    assert schema["required"] == ["name", "age"] and name == "my_person_schema"
    assert load_schema('{"type": "object"}')[1] == "reply"  # inline, no title


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"regex": "a", "choice": "a,b"}, "--regex and --choice cannot be used together"),
        ({"json_schema": "{}", "json_object": True}, "--json-schema and --json cannot be used together"),
        ({"regex": "[a-z"}, "--regex '[a-z' is not a valid regular expression"),
        ({"regex": ""}, "--regex is empty"),
        ({"choice": "a,,b"}, "--choice 'a,,b' has an empty choice"),
        ({"choice": ""}, "has an empty choice"),
        ({"json_schema": "{not json"}, "--json-schema is not valid JSON"),
        ({"json_schema": '{"type": 5}'}, "--json-schema is not a valid JSON schema: 5 is not valid"),
        (
            {"json_schema": '{"required": "name"}'},
            "is not a valid JSON schema: 'name' is not of type 'array'",
        ),
        ({"json_schema": "no-such-file.json"}, "--json-schema no-such-file.json: no such file"),
        ({"grammar": Path("no-such.gbnf")}, "--grammar no-such.gbnf: no such file"),
    ],
)
def test_bad_flags_are_usage_errors(flags: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        build_constraint(**flags)  # type: ignore[arg-type]
    assert message in caught.value.message
    assert caught.value.hint and caught.value.exit_code == EXIT_USAGE
    assert "\n" not in caught.value.message


def test_empty_or_non_object_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.gbnf"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(UsageError, match="is empty"):
        build_constraint(grammar=empty)
    array = tmp_path / "list.json"
    array.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(UsageError, match="is not a JSON object"):
        build_constraint(json_schema=str(array))
    binary = tmp_path / "bin.gbnf"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError, match="not UTF-8"):
        build_constraint(grammar=binary)


@pytest.mark.parametrize(
    "params",
    [
        {"response_format": {"type": "text"}},
        {"structured_outputs": {"regex": "a"}},
        {"guided_regex": "a"},
        {"nvext": {"guided_choice": ["a"]}},
    ],
)
def test_a_param_that_constrains_too_is_refused(params: dict[str, object]) -> None:
    with pytest.raises(UsageError, match="cannot be used with --json: both constrain the reply"):
        Constraint("json").merged_into(params)


def test_merged_keeps_other_params() -> None:
    merged = Constraint("regex", "a+").merged_into({"max_tokens": 5, "nvext": {"priority": 1}})
    assert merged == {"max_tokens": 5, "nvext": {"priority": 1}, "structured_outputs": {"regex": "a+"}}


@pytest.mark.parametrize(
    ("constraint", "good", "bad", "problem"),
    [
        (Constraint("regex", "[a-z]{3}-[0-9]{2}"), "abc-12", "abc-123", "'abc-123' is not a full match"),
        (Constraint("choice", ["red", "green"]), "green", "green ", "'green ' is not one of 'red', 'green'"),
        (Constraint("json"), '{"a": [1]}', "[1, 2]", "the reply is JSON but not an object"),
        (Constraint("json"), " {} ", '{"a": ', "not JSON (Expecting value"),
        (
            Constraint("json-schema", PERSON),
            '{"name": "x", "age": 3}',
            '{"name": "x"}',
            "'age' is a required",
        ),
        (
            Constraint("json-schema", PERSON),
            '{"name": "x", "age": 3}',
            '{"name": "x", "age": "3"}',
            "'3' is not of type 'integer' (at $.age)",
        ),
    ],
)
def test_check(constraint: Constraint, good: str, bad: str, problem: str) -> None:
    assert constraint.verify(good, "stop").matches is True
    result = constraint.check(bad)
    assert result.matches is False and result.problem is not None and problem in result.problem
    with pytest.raises(ReplyMismatchError) as caught:
        constraint.verify(bad, "stop")
    error = caught.value
    assert isinstance(error, UnreadableAnswerError) and error.exit_code == EXIT_SERVER_ERROR
    assert error.message == f"the reply does not match {constraint.flag}: {result.problem}"
    assert error.hint is not None and "did not keep the constraint" in error.hint


def test_a_cut_reply_says_so() -> None:
    with pytest.raises(ReplyMismatchError) as caught:
        Constraint("json").verify('{"a": "b', "length")
    assert caught.value.hint is not None and "cut at the token limit" in caught.value.hint
    assert "--max-tokens" in caught.value.hint


def test_long_replies_are_shortened_in_the_message() -> None:
    result = Constraint("choice", ["a"]).check("x" * 500)
    assert result.problem is not None and len(result.problem) < 100 and "..." in result.problem


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("(?i)abc", "inline flags such as (?i)"),
        ("a(?s:.)", "inline flags such as (?i)"),
        ("(?P<code>[a-z]+)", "Python's named groups"),
        ("(?P<x>a)(?P=x)", "Python's named groups"),
    ],
)
def test_regex_outside_the_engine_dialect_is_refused(pattern: str, problem: str) -> None:
    # Python's re takes these; vLLM 0.32's xgrammar fails on them in the engine core (a 500).
    with pytest.raises(UsageError) as caught:
        build_constraint(regex=pattern)
    assert problem in caught.value.message and caught.value.hint is not None


@pytest.mark.parametrize("pattern", ["(?:ab)+", "\\(?i\\)", "[(?i)]", "[]?(]x", "(?=a)a", "a{2,}"])
def test_regex_dialect_scan_skips_escapes_and_classes(pattern: str) -> None:
    assert build_constraint(regex=pattern) == Constraint("regex", pattern)


@pytest.mark.parametrize(
    "schema", ['{"$ref": "https://example.com/s.json"}', '{"properties": {"a": {"$ref": "#/$defs/missing"}}}']
)
def test_a_schema_whose_ref_points_outside_it_is_refused_before_sending(schema: str) -> None:
    with pytest.raises(UsageError, match=r"\$ref .* does not point at a part of the schema"):
        build_constraint(json_schema=schema)


def test_local_refs_are_followed_and_a_too_deep_reply_is_a_mismatch_not_a_crash() -> None:
    schema = '{"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}, "required": ["a"]}'
    constraint = build_constraint(json_schema=schema)
    assert constraint is not None
    assert constraint.check('{"a": 1}').matches is True
    assert constraint.check('{"a": "x"}').matches is False
    assert constraint.check("[" * 100_000).matches is False
