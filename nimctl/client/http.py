"""The one HTTP client for a nimctl/NIM server: management, inference and streaming chat.

Every failure leaves as a :class:`nimctl.errors.ClientError` subclass carrying the
server's own message (from its OpenAI-shaped error body) and a hint. The result types
(pydantic) are imported per call so that a command pays only for the models it uses.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

# httpx's __init__ imports its own command-line tool (click, rich.progress, pygments: ~90 ms,
# a third of a `nimctl health` run) whenever those happen to be installed. A None entry in
# sys.modules makes that optional import fail fast, httpx falls back to its stub `main`, and
# the entry is removed again. nimctl never runs the httpx CLI.
if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx
    finally:
        if sys.modules.get("httpx._main", ...) is None:
            del sys.modules["httpx._main"]
import httpx  # binds the name when httpx was imported before this module

from nimctl import __version__
from nimctl.client.errors import map_transport_error, raise_for_status
from nimctl.errors import ClientError, ServerNotReadyError, ServerUnreachableError, TimeoutError_, UsageError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from nimctl.client.types import (
        ChatCompletion,
        ChatCompletionChunk,
        DetokenizeResult,
        HealthReport,
        HealthStatus,
        License,
        Manifest,
        Metadata,
        ModelCard,
        RenderResult,
        TokenizeResult,
        VersionInfo,
    )

DEFAULT_URL = "http://127.0.0.1:8000"
_Result = TypeVar("_Result", bound="BaseModel")


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``inference`` is also the longest silence allowed between two streamed chunks."""

    connect: float = 5.0
    management: float = 30.0
    # A CPU engine can take minutes on a long answer; a hung one is still caught by the read timeout.
    inference: float = 600.0


def normalize_base_url(url: str) -> str:
    """``http://host:8000``, ``http://host:8000/`` and ``http://host:8000/v1`` all mean the same server.

    OpenAI-style clients are configured with ``.../v1``; accepting it saves users a puzzling 404.
    """
    stripped = url.strip().rstrip("/")
    if stripped.endswith("/v1"):
        stripped = stripped[: -len("/v1")]
    try:
        parsed = httpx.URL(stripped)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UsageError(
            f"invalid server URL {url!r}: {exc}", hint="use a URL like http://127.0.0.1:8000"
        ) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(
            f"invalid server URL {url!r}: it needs http:// or https:// and a host",
            hint="use a URL like http://127.0.0.1:8000",
        )
    return stripped


class NimClient:
    """A synchronous client for one server. Use it as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeouts: Timeouts | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.timeouts = timeouts or Timeouts()
        headers = {"User-Agent": f"nimctl/{__version__}", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=self._timeout(self.timeouts.management),
            transport=transport,
            # Proxies from the environment rarely lead to a local server and are a classic trap.
            trust_env=False,
        )

    def __enter__(self) -> NimClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing ------------------------------------------------------------------
    def _timeout(self, read: float) -> httpx.Timeout:
        return httpx.Timeout(read, connect=self.timeouts.connect)

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        read_timeout: float | None = None,
        stream: bool = False,
        not_found_hint: str | None = None,
    ) -> httpx.Response:
        timeout = self._timeout(read_timeout if read_timeout is not None else self.timeouts.management)
        request = self._http.build_request(method, path, json=json, timeout=timeout)
        try:
            response = self._http.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, self.base_url, path) from None
        if response.is_error:
            try:
                if stream:
                    response.read()
            except httpx.HTTPError as exc:
                raise map_transport_error(exc, self.base_url, path) from None
            finally:
                response.close()
            raise_for_status(response, path, not_found_hint=not_found_hint)
        return response

    def _get_json(self, path: str, **kwargs: Any) -> Any:
        return _json_body(self._send("GET", path, **kwargs), path)

    def _post_json(self, path: str, payload: dict[str, Any], **kwargs: Any) -> Any:
        return _json_body(self._send("POST", path, json=payload, **kwargs), path)

    # -- health ----------------------------------------------------------------------
    def live(self) -> HealthStatus:
        from nimctl.client.types import HealthStatus

        return _parse(
            HealthStatus, self._get_json("/v1/health/live", not_found_hint=_NOT_A_NIM), "/v1/health/live"
        )

    def ready(self) -> HealthStatus:
        """The ready probe; a server still loading raises :class:`ServerNotReadyError` (503)."""
        from nimctl.client.types import HealthStatus

        return _parse(
            HealthStatus, self._get_json("/v1/health/ready", not_found_hint=_NOT_A_NIM), "/v1/health/ready"
        )

    def health(self, *, live_only: bool = False) -> HealthReport:
        """Both probes as one report; "not ready" is a state here, not an error."""
        from nimctl.client.types import HealthReport

        live = self.live()
        if live_only:
            return HealthReport(url=self.base_url, live=True, ready=False, message=live.message)
        try:
            ready = self.ready()
        except ServerNotReadyError as exc:
            message = exc.server_message or exc.message
            return HealthReport(url=self.base_url, live=True, ready=False, message=message)
        return HealthReport(url=self.base_url, live=True, ready=True, message=ready.message)

    def wait_until_ready(
        self,
        timeout: float,
        *,
        interval: float = 1.0,
        live_only: bool = False,
        on_poll: Callable[[str, float], None] | None = None,
    ) -> HealthReport:
        """Poll the ready probe (or only the live one) until it passes; unreachable and not-ready
        both mean "keep waiting", any other answer (a 404 from a wrong URL) stops at once.

        ``on_poll(state, elapsed_seconds)`` is called after each probe (for a progress display).
        Raises :class:`TimeoutError_` naming the last state seen when ``timeout`` passes.
        """
        start = time.monotonic()
        deadline = start + timeout
        last_state = "no answer yet"
        while True:
            try:
                report = self.health(live_only=live_only)
            except ServerUnreachableError:
                last_state = "unreachable"
            except TimeoutError_:
                last_state = "no answer in time"
            else:
                if report.ready or live_only:
                    return report
                last_state = f"live, not ready ({report.message or 'loading'})"
            now = time.monotonic()
            if on_poll is not None:
                on_poll(last_state, now - start)
            if now >= deadline:
                target = "live" if live_only else "ready"
                raise TimeoutError_(
                    f"{self.base_url} was not {target} after {timeout:g} s; last state: {last_state}",
                    hint="give it longer with --timeout, or look at the server's logs",
                )
            time.sleep(min(interval, max(0.0, deadline - now)))

    # -- management ------------------------------------------------------------------
    def metadata(self) -> Metadata:
        from nimctl.client.types import Metadata

        return _parse(Metadata, self._get_json("/v1/metadata"), "/v1/metadata")

    def version(self) -> VersionInfo:
        from nimctl.client.types import VersionInfo

        return _parse(VersionInfo, self._get_json("/v1/version"), "/v1/version")

    def license(self) -> License:
        from nimctl.client.types import License

        body = self._get_json("/v1/license", not_found_hint="this model ships no license file")
        return _parse(License, body, "/v1/license")

    def manifest(self) -> Manifest:
        from nimctl.client.types import Manifest

        return _parse(Manifest, self._get_json("/v1/manifest"), "/v1/manifest")

    def metrics_text(self) -> str:
        return self._send("GET", "/v1/metrics").text

    # -- inference -------------------------------------------------------------------
    def models(self) -> list[ModelCard]:
        from nimctl.client.types import ModelList

        return _parse(ModelList, self._get_json("/v1/models"), "/v1/models").data

    def default_model(self) -> str:
        """The served model's name when there is exactly one; otherwise a clear error."""
        names = [card.id for card in self.models()]
        if len(names) == 1:
            return names[0]
        if not names:
            raise ServerNotReadyError(
                f"{self.base_url} lists no model yet", hint="wait for it with `nimctl health --wait`"
            )
        raise UsageError(
            f"the server serves several models ({', '.join(names)}); choose one",
            hint="pass --model NAME",
        )

    def tokenize(self, text: str, *, model: str | None = None) -> TokenizeResult:
        from nimctl.client.types import TokenizeResult

        payload: dict[str, Any] = {"prompt": text, "return_token_strs": True}
        if model:
            payload["model"] = model
        return _parse(
            TokenizeResult, self._post_json("/tokenize", payload, not_found_hint=_MODELS), "/tokenize"
        )

    def detokenize(self, tokens: list[int], *, model: str | None = None) -> DetokenizeResult:
        from nimctl.client.types import DetokenizeResult

        payload: dict[str, Any] = {"tokens": tokens}
        if model:
            payload["model"] = model
        body = self._post_json("/detokenize", payload, not_found_hint=_MODELS)
        return _parse(DetokenizeResult, body, "/detokenize")

    def render(self, messages: list[dict[str, Any]], *, model: str | None = None) -> RenderResult:
        from nimctl.client.types import RenderResult

        payload: dict[str, Any] = {"messages": messages}
        if model:
            payload["model"] = model
        body = self._post_json("/v1/chat/completions/render", payload, not_found_hint=_MODELS)
        return _parse(RenderResult, body, "/v1/chat/completions/render")

    def chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> ChatCompletion:
        """One whole chat completion. ``params`` go into the request as they are (max_tokens, seed...)."""
        from nimctl.client.types import ChatCompletion

        payload = {**_drop_none(params), "model": model, "messages": messages, "stream": False}
        body = self._post_json(
            "/v1/chat/completions", payload, read_timeout=self.timeouts.inference, not_found_hint=_MODELS
        )
        return _parse(ChatCompletion, body, "/v1/chat/completions")

    def chat_stream(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> ChatStream:
        """A streamed chat completion. The request is sent now (so a 4xx raises here).

        Iterate the result for parsed chunks; the last one carries ``usage``. Closing it (or
        leaving its ``with`` block, or stopping the iteration) closes the connection, which
        makes the server abort the generation.
        """
        payload = {
            **_drop_none(params),
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        path = "/v1/chat/completions"
        response = self._send(
            "POST",
            path,
            json=payload,
            read_timeout=self.timeouts.inference,
            stream=True,
            not_found_hint=_MODELS,
        )
        return ChatStream(response, self.base_url, path)


class ChatStream:
    """The chunks of one streamed reply; see :meth:`NimClient.chat_stream`."""

    def __init__(self, response: httpx.Response, base_url: str, path: str) -> None:
        self._response = response
        self._base_url = base_url
        self._path = path

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._response.close()

    @property
    def closed(self) -> bool:
        return self._response.is_closed

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        import json

        from nimctl.client.types import ChatCompletionChunk

        try:
            for line in self._response.iter_lines():
                if not line.startswith("data:"):
                    continue  # SSE comments, event names and blank separators
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                try:
                    body = json.loads(data)
                except ValueError:
                    raise ClientError(
                        f"the server sent a stream frame that is not JSON: {data[:200]!r}"
                    ) from None
                if isinstance(body, dict) and "error" in body:
                    _raise_stream_error(body, self._path)
                yield _parse(ChatCompletionChunk, body, self._path)
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, self._base_url, self._path, mid_stream=True) from None
        finally:
            self.close()


_NOT_A_NIM = "is --url pointing at a nimctl/NIM server? It does not know this path"
_MODELS = "see the served model names with `nimctl models`"


def _raise_stream_error(body: dict[str, Any], path: str) -> None:
    """vLLM reports an error found mid-stream as a ``data: {"error": ...}`` frame."""
    from nimctl.client.errors import error_from_body

    raise error_from_body(body, path)


def _parse(model: type[_Result], body: Any, path: str) -> _Result:
    """Validate an answer; a shape we cannot read is the server's fault, said in one line."""
    from pydantic import ValidationError

    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the body"
        raise ClientError(
            f"the server's answer to {path} has an unexpected shape ({where}: {first['msg']})",
            hint="is --url a nimctl/NIM server of a matching version?",
        ) from None


def _json_body(response: httpx.Response, path: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ClientError(
            f"{path} answered {response.status_code} with a body that is not JSON: {response.text[:200]!r}",
            hint=_NOT_A_NIM,
        ) from None


def _drop_none(params: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}
