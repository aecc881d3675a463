"""What the front checks in a request body before the engine sees it.

Only the shapes that the engine answers with a 500 (and so would blame itself for the client's
mistake) are checked here: content parts without ``type``, media URLs that are not objects with a
``url`` or name a scheme the engine cannot fetch, inline images that do not decode or declare more
pixels than allowed, ``structured_outputs``/``response_format`` that are not objects, a
``structured_outputs.regex`` outside the engine's dialect (inline flags, ``(?P<name>``), ``tools`` and
``tool_choice`` entries without a function name, and integers beyond 64 bits. Every other field is
the engine's to judge; its 4xx answers pass through. On top of those, the server's own limits
(:class:`BodyLimits`): how many messages and content parts, and how large ``max_tokens`` and ``n``.

One field is rewritten rather than checked: NIM's structured-output spelling, ``nvext.guided_json``
(``guided_regex``, ``guided_choice``, ``guided_grammar``, ``guided_whitespace_pattern``), and the same
fields at the top level as vLLM before 0.12 took them. vLLM 0.32 ignores them with a 200 and
unconstrained text, so the front moves them into ``structured_outputs`` (:func:`translate_guided`)
and :attr:`CheckedBody.body` holds the body to send instead.

The walk touches each message part and each top-level field once, with no validation framework:
the front parses every request, and its CPU is the engine's loss on a CPU-bound machine.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from nimctl.media import SUPPORTED_TYPES, image_size, sniff_media_type
from nimctl.regex_dialect import engine_regex_problem, has_unicode_property

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Content part types whose URL the engine loads itself, and the field that holds it.
_MEDIA_PARTS = {"image_url": "image_url", "video_url": "video_url", "audio_url": "audio_url"}
# Fields whose values must be JSON objects (or null): the engine calls .get() on them.
_OBJECT_FIELDS = ("structured_outputs", "response_format")
# Top-level fields that carry content, not numbers for the sampler: their integers are not checked.
_CONTENT_FIELDS = frozenset({"messages", "tools", "structured_outputs", "response_format", "tool_choice"})
# NIM's and older vLLM's structured-output fields -> vLLM 0.32's structured_outputs keys.
_GUIDED_FIELDS = {
    "guided_json": "json",
    "guided_regex": "regex",
    "guided_choice": "choice",
    "guided_grammar": "grammar",
    "guided_whitespace_pattern": "whitespace_pattern",
}
# Chosen by the engine's --structured-outputs-config in vLLM 0.32, not per request: dropped.
_GUIDED_BACKEND = "guided_decoding_backend"


class BadRequestError(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class BodyLimits:
    """The server's caps on a request's size in work; None: no cap of the front's (the engine's apply)."""

    max_messages: int | None = None
    max_content_parts: int | None = None  # all messages together
    max_tokens: int | None = None  # max_tokens and max_completion_tokens
    max_n: int | None = None


NO_LIMITS = BodyLimits()


@dataclass
class CheckedBody:
    """A request body that passed the checks, with what the error mapping needs to know about it."""

    payload: dict[str, Any]
    remote_urls: list[str] = field(default_factory=list)  # http(s) media the engine will fetch
    # The body to send the engine instead of the one received, when the checks rewrote the payload
    # (translate_guided); None: send the received body as it is.
    body: bytes | None = None


# A JSON escape of a UTF-16 surrogate (\\uD800-\\uDFFF): only a pair of them makes a character.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_object(body: bytes) -> dict[str, Any]:
    try:
        # Strict UTF-8 first: json.loads(bytes) lets encoded lone surrogates through, which the
        # engine then fails on with an empty 500 (found by the fuzz gate).
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"request body is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequestError("request body is not valid JSON: nested too deeply") from None
    if not isinstance(payload, dict):
        raise BadRequestError("request body must be a JSON object")
    if _SURROGATE_ESCAPE.search(body):  # rare: only then is the whole body walked
        try:
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequestError("request body has a lone UTF-16 surrogate escape") from None
    return payload


def check_body(body: bytes, *, max_image_pixels: int, limits: BodyLimits = NO_LIMITS) -> CheckedBody:
    """Parse ``body`` and check it; raises :class:`BadRequestError` saying what is wrong."""
    checked = CheckedBody(parse_object(body))
    payload = checked.payload
    if translate_guided(payload):
        checked.body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    for name in _OBJECT_FIELDS:
        value = payload.get(name)
        if value is not None and not isinstance(value, dict):
            raise BadRequestError(f"{name} must be an object, not {_json_type(value)}", name)
    structured = payload.get("structured_outputs")
    regex = structured.get("regex") if structured is not None else None
    # Patterns the engine's regex compiler takes at validation and fails on later (a 500).
    if isinstance(regex, str) and (problem := engine_regex_problem(regex)) is not None:
        raise BadRequestError(f"structured_outputs.regex {regex!r}: {problem}", "structured_outputs.regex")
    _check_schema_patterns(payload)
    _check_integers(payload)
    _check_caps(payload, limits)
    if "tools" in payload or "tool_choice" in payload:
        _check_tools(payload.get("tools"), payload.get("tool_choice"))
    messages = payload.get("messages")
    if isinstance(messages, list):
        if limits.max_messages is not None and len(messages) > limits.max_messages:
            raise BadRequestError(
                f"{len(messages)} messages: this server accepts at most {limits.max_messages} "
                "(NIMCTL_MAX_MESSAGES)",
                "messages",
            )
        parts_left = limits.max_content_parts
        for index, message in enumerate(messages):
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                if parts_left is not None:
                    parts_left -= len(content)
                    if parts_left < 0:
                        raise BadRequestError(
                            f"more than {limits.max_content_parts} content parts in the request's messages "
                            "(NIMCTL_MAX_CONTENT_PARTS)",
                            f"messages[{index}].content",
                        )
                _check_parts(content, f"messages[{index}].content", checked, max_image_pixels)
    return checked


def translate_guided(payload: dict[str, Any]) -> bool:
    """Move ``nvext.guided_*`` and top-level ``guided_*`` into ``structured_outputs``; True if any moved.

    Raises :class:`BadRequestError` when the request also constrains its reply another way: the
    engine would otherwise keep one of the two constraints without saying which.
    """
    nvext = payload.get("nvext")
    in_nvext = isinstance(nvext, dict) and any(key.startswith("guided_") for key in nvext)
    at_top = any(key in payload for key in (*_GUIDED_FIELDS, _GUIDED_BACKEND))
    if not in_nvext and not at_top:
        return False  # the usual case: two dict look-ups
    moved: dict[str, Any] = {}
    for source, where in ((payload, ""), (nvext if in_nvext else {}, "nvext.")):
        for name, key in _GUIDED_FIELDS.items():
            if name in source:
                value = source.pop(name)
                if value is not None:
                    if key in moved:
                        raise BadRequestError(
                            f"{name} is given both at the top level and in nvext", where + name
                        )
                    moved[key] = value
        source.pop(_GUIDED_BACKEND, None)
    if in_nvext and not nvext:
        del payload["nvext"]
    if not moved:
        return True  # only nulls or a backend name: nothing to constrain, but the body changed
    response_format = payload.get("response_format")
    rf_type = response_format.get("type") if isinstance(response_format, dict) else None
    if payload.get("structured_outputs") is not None or rf_type not in (None, "text"):
        field_name = (
            "structured_outputs" if payload.get("structured_outputs") is not None else "response_format"
        )
        raise BadRequestError(
            f"guided_* fields and {field_name} both constrain the reply: give one of them", field_name
        )
    payload["structured_outputs"] = moved
    return True


def _check_schema_patterns(payload: dict[str, Any]) -> None:
    """A JSON schema whose ``pattern`` uses ``\\p{...}`` fails in the engine core (a 500), as a regex does."""
    response_format = payload.get("response_format")
    structured = payload.get("structured_outputs")
    found = []
    if response_format is not None and response_format.get("type") == "json_schema":
        json_schema = response_format.get("json_schema")
        if isinstance(json_schema, dict):
            found.append(("response_format.json_schema.schema", json_schema.get("schema")))
    if structured is not None and structured.get("json") is not None:
        schema = structured["json"]
        if isinstance(schema, str):  # the engine takes a schema as JSON text too
            try:
                schema = json.loads(schema)
            except (ValueError, RecursionError):
                schema = None  # not JSON (or nested too deeply): the engine's to refuse
        found.append(("structured_outputs.json", schema))
    for param, schema in found:
        if (pattern := _unicode_pattern(schema, depth=64)) is not None:
            raise BadRequestError(
                f"{param} has the pattern {pattern!r}: Unicode property classes (\\p{{...}}) are not in "
                "the engine's regex dialect",
                param,
            )


def _unicode_pattern(node: Any, depth: int) -> str | None:
    """The first ``pattern`` (or ``patternProperties`` key) in a schema that uses ``\\p{...}``."""
    if depth <= 0:
        return None  # deeper than any real schema: the engine's to judge
    if isinstance(node, dict):
        pattern = node.get("pattern")
        if isinstance(pattern, str) and has_unicode_property(pattern):
            return pattern
        properties = node.get("patternProperties")
        if isinstance(properties, dict):
            for key in properties:
                if has_unicode_property(key):
                    return key
        items = node.values()
    elif isinstance(node, list):
        items = node
    else:
        return None
    for item in items:
        if isinstance(item, dict | list) and (found := _unicode_pattern(item, depth - 1)) is not None:
            return found
    return None


def _check_caps(payload: dict[str, Any], limits: BodyLimits) -> None:
    # type() is int: a bool is not a count, and other types are the engine's to refuse.
    if limits.max_tokens is not None:
        for name in ("max_tokens", "max_completion_tokens"):
            value = payload.get(name)
            if type(value) is int and value > limits.max_tokens:
                raise BadRequestError(
                    f"{name} is {value}: this server accepts at most {limits.max_tokens} "
                    "(NIMCTL_MAX_TOKENS_CAP)",
                    name,
                )
    n = payload.get("n")
    if limits.max_n is not None and type(n) is int and n > limits.max_n:
        raise BadRequestError(f"n is {n}: this server accepts at most {limits.max_n} (NIMCTL_MAX_N)", "n")


def _function_name(entry: Any) -> str | None:
    """The name of ``{"type": "function", "function": {"name": ...}}``; None when it has none."""
    if not isinstance(entry, dict) or entry.get("type", "function") != "function":
        return None
    function = entry.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else None


def _check_tools(tools: Any, tool_choice: Any) -> None:
    # The engine reads tool.function.name unchecked when a tool is named: without one it fails (a 500).
    names = set()
    if isinstance(tools, list):
        for index, tool in enumerate(tools):
            name = _function_name(tool)
            if name is None:
                raise BadRequestError(
                    f'tools[{index}] must be {{"type": "function", "function": {{"name": "...", ...}}}}',
                    f"tools[{index}]",
                )
            names.add(name)
    if isinstance(tool_choice, dict):
        name = _function_name(tool_choice)
        if name is None:
            raise BadRequestError(
                'tool_choice must be "none", "auto", "required" or '
                '{"type": "function", "function": {"name": "..."}}',
                "tool_choice",
            )
        if isinstance(tools, list) and name not in names:
            raise BadRequestError(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")


def _check_integers(payload: dict[str, Any]) -> None:
    # The engine hands sampling values to C code as 64-bit integers: a bigger one fails there (a 500).
    # Lists (token ids, batched prompts) and objects (logit_bias) are looked into two levels deep.
    for name, value in payload.items():
        if name not in _CONTENT_FIELDS:
            _check_integer(value, name, depth=2)


def _check_integer(value: Any, param: str, depth: int) -> None:
    if type(value) is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise BadRequestError(
                f"{param} is {value}: integers must lie between {INT64_MIN} and {INT64_MAX}", param
            )
    elif depth and isinstance(value, list):
        try:
            # A list of numbers (token ids: thousands) is checked by min and max, in C.
            if not value or (min(value) >= INT64_MIN and max(value) <= INT64_MAX):
                return
        except TypeError:
            pass  # not numbers alone: item by item
        for item in value:
            if type(item) is int or isinstance(item, list | dict):
                _check_integer(item, param, depth - 1)
    elif depth and isinstance(value, dict):
        for item in value.values():
            _check_integer(item, param, depth - 1)


def _check_parts(parts: list[Any], where: str, checked: CheckedBody, max_image_pixels: int) -> None:
    for index, part in enumerate(parts):
        param = f"{where}[{index}]"
        if not isinstance(part, dict):
            continue  # the engine refuses these itself (a 400)
        part_type = part.get("type")
        if not isinstance(part_type, str):
            # The engine guesses a type from the other keys and then loads what it guessed unchecked.
            raise BadRequestError(
                f"{param} has no 'type': each content part needs one (text, image_url, ...)", param
            )
        key = _MEDIA_PARTS.get(part_type)
        if key is None:
            continue
        media = part.get(key)
        if media is None and isinstance(part.get("uuid"), str):
            continue  # a reference to media sent before under that uuid: the engine looks it up
        url = media.get("url") if isinstance(media, dict) else None
        if not isinstance(url, str):
            raise BadRequestError(f'{param}.{key} must be an object {{"url": "..."}}', f"{param}.{key}")
        _check_url(url, part_type, f"{param}.{key}.url", checked, max_image_pixels)


def _check_url(url: str, part_type: str, param: str, checked: CheckedBody, max_image_pixels: int) -> None:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("http", "https"):
        checked.remote_urls.append(url)
    elif scheme == "data":
        if part_type == "image_url":
            _check_data_image(url, param, max_image_pixels)
    else:
        # The engine answers 500 for file:// (and guesses about the rest): the client's mistake is a 400.
        shown = scheme or url[:20]
        raise BadRequestError(
            f"{part_type} URL scheme {shown!r} is not supported: use https:// or data:<type>;base64,", param
        )


def _check_data_image(url: str, param: str, max_image_pixels: int) -> None:
    header, sep, data = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise BadRequestError("image data URL must look like data:image/png;base64,<data>", param)
    if not header.removeprefix("data:").startswith("image/"):
        media_type = header.removeprefix("data:").split(";")[0]
        raise BadRequestError(f"image data URL has media type {media_type!r}, not image/*", param)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("image data URL is not valid base64", param) from None
    if sniff_media_type(raw) is None:
        kinds = ", ".join(kind.removeprefix("image/").upper() for kind in SUPPORTED_TYPES)
        raise BadRequestError(f"image data URL does not hold a {kinds} image", param)
    size = image_size(raw)
    # A header cut short is left to the engine, which refuses the image as broken (a 400).
    if size is not None and size[0] * size[1] > max_image_pixels:
        width, height = size
        raise BadRequestError(
            f"image is {width}x{height} ({width * height} pixels), more than the {max_image_pixels} "
            "this server accepts (NIMCTL_MAX_IMAGE_PIXELS): scale it down",
            param,
        )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"
