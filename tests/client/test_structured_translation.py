"""The front's translation of NIM's ``nvext.guided_*`` and older vLLM's ``guided_*`` fields.

vLLM 0.32 ignores those fields (a 200 with unconstrained text), so request_checks moves them into
``structured_outputs`` and hands back the rewritten body. Unit tests of that one layer; the engine
test in tests/cli/test_chat_structured.py shows what the engine then does with it.
"""

from __future__ import annotations

import json

import pytest

from nimctl.server.request_checks import BadRequestError, check_body

PIXELS = 1_000_000


def checked(payload: dict[str, object]) -> tuple[dict[str, object], dict[str, object] | None]:
    result = check_body(json.dumps(payload).encode(), max_image_pixels=PIXELS)
    sent = None if result.body is None else json.loads(result.body)
    return result.payload, sent


def test_plain_requests_are_sent_as_received() -> None:
    payload = {"model": "m", "messages": [], "structured_outputs": {"regex": "a+"}, "nvext": {"priority": 2}}
    seen, sent = checked(payload)
    assert sent is None and seen == payload


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"nvext": {"guided_regex": "[a-z]+"}}, {"regex": "[a-z]+"}),
        ({"nvext": {"guided_choice": ["a", "b"]}}, {"choice": ["a", "b"]}),
        ({"nvext": {"guided_json": {"type": "object"}}}, {"json": {"type": "object"}}),
        ({"nvext": {"guided_grammar": 'root ::= "x"'}}, {"grammar": 'root ::= "x"'}),
        ({"guided_json": '{"type": "object"}'}, {"json": '{"type": "object"}'}),
        ({"guided_regex": "x", "guided_whitespace_pattern": " "}, {"regex": "x", "whitespace_pattern": " "}),
        ({"guided_choice": ["a"], "guided_decoding_backend": "outlines"}, {"choice": ["a"]}),
    ],
)
def test_guided_fields_become_structured_outputs(
    fields: dict[str, object], expected: dict[str, object]
) -> None:
    seen, sent = checked({"model": "m", "messages": [], **fields})
    assert sent == seen == {"model": "m", "messages": [], "structured_outputs": expected}


def test_other_nvext_fields_stay() -> None:
    _, sent = checked({"model": "m", "nvext": {"guided_regex": "a", "priority": 1}})
    assert sent == {"model": "m", "nvext": {"priority": 1}, "structured_outputs": {"regex": "a"}}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"nvext": {"guided_regex": "a"}, "structured_outputs": {"choice": ["a"]}}, "structured_outputs"),
        ({"guided_json": {}, "response_format": {"type": "json_object"}}, "response_format"),
        ({"guided_regex": "a", "nvext": {"guided_regex": "b"}}, "nvext.guided_regex"),
    ],
)
def test_two_constraints_are_a_400(fields: dict[str, object], param: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        checked({"model": "m", **fields})
    assert caught.value.param == param


def test_a_text_response_format_is_no_constraint() -> None:
    _, sent = checked({"guided_regex": "a", "response_format": {"type": "text"}})
    assert sent == {"response_format": {"type": "text"}, "structured_outputs": {"regex": "a"}}


@pytest.mark.parametrize("regex", ["(?i)abc", "(?P<x>a)", "\\p{L}+"])
def test_a_regex_the_engine_fails_on_is_a_400(regex: str) -> None:
    for fields in ({"structured_outputs": {"regex": regex}}, {"nvext": {"guided_regex": regex}}):
        with pytest.raises(BadRequestError) as caught:
            checked({"model": "m", **fields})
        assert caught.value.param == "structured_outputs.regex"
        assert "not in the engine's regex dialect" in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"pattern": "\\p{L}"}},
                }
            },
            "response_format.json_schema.schema",
        ),
        (
            {"structured_outputs": {"json": {"properties": {"a": {"pattern": "a\\P{N}"}}}}},
            "structured_outputs.json",
        ),
        ({"structured_outputs": {"json": '{"items": [{"pattern": "\\\\p{L}"}]}'}}, "structured_outputs.json"),
        ({"nvext": {"guided_json": {"patternProperties": {"^\\p{Lu}": {}}}}}, "structured_outputs.json"),
    ],
)
def test_a_schema_pattern_the_engine_fails_on_is_a_400(fields: dict[str, object], param: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        checked({"model": "m", **fields})
    assert caught.value.param == param and "Unicode property classes" in str(caught.value)


def test_schema_patterns_the_engine_takes_pass() -> None:
    schema = {
        "properties": {"a": {"pattern": "(?i)[a-z]+\\\\p"}},
        "pattern": "\\d+",
    }  # \\\\p: a backslash, then p
    for fields in (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}},
        {"structured_outputs": {"json": json.dumps(schema)}},
        {"structured_outputs": {"json": "not json"}},  # the engine's to refuse
    ):
        checked({"model": "m", **fields})
