"""Reading the server's answers: JSON bodies into the typed results, or one-line errors.

An answer nimctl cannot read is the server's fault (exit 7), said in one line with a hint,
never a pydantic traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from nimctl.errors import UnreadableAnswerError

if TYPE_CHECKING:
    import httpx
    from pydantic import BaseModel

_Result = TypeVar("_Result", bound="BaseModel")

NOT_A_NIM_HINT = "is --url pointing at a nimctl/NIM server? It does not know this path"


def parse_answer(model: type[_Result], body: Any, path: str) -> _Result:
    """Validate an answer against its result type."""
    from pydantic import ValidationError

    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the body"
        raise UnreadableAnswerError(
            f"the server's answer to {path} has an unexpected shape ({where}: {first['msg']})",
            hint="is --url a nimctl/NIM server of a matching version?",
        ) from None


def json_body(response: httpx.Response, path: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise UnreadableAnswerError(
            f"{path} answered {response.status_code} with a body that is not JSON: {response.text[:200]!r}",
            status=response.status_code,
            hint=NOT_A_NIM_HINT,
        ) from None
