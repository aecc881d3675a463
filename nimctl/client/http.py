"""The one HTTP client for a nimctl/NIM server: management, inference and streaming chat.

Every failure leaves as a :class:`nimctl.errors.ClientError` subclass carrying the
server's own message (from its OpenAI-shaped error body) and a hint. The result types
(pydantic) are imported per call so that a command pays only for the models it uses.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from nimctl import __version__
from nimctl._httpx import httpx
from nimctl.client import DEFAULT_URL
from nimctl.client.answers import NOT_A_NIM_HINT, json_body, parse_answer
from nimctl.client.errors import map_transport_error, raise_for_status
from nimctl.client.stream import ChatStream
from nimctl.errors import ServerNotReadyError, ServerUnreachableError, UsageError, WaitTimeoutError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from nimctl.client.metrics import MetricsSummary
    from nimctl.client.types import (
        ChatCompletion,
        DetokenizeResult,
        HealthReport,
        HealthStatus,
        License,
        LoraAdapterResult,
        Manifest,
        Metadata,
        ModelCard,
        RenderResult,
        TokenizeResult,
        VersionInfo,
    )

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
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: the TLS settings for an https server (the CAs to trust, a client certificate);
        default: the system's CAs (``SSL_CERT_FILE``/``SSL_CERT_DIR``, else certifi's)."""
        self.base_url = normalize_base_url(base_url)
        self.timeouts = timeouts or Timeouts()
        # Kept for callers that open their own connections to the same server (nimctl bench).
        self.api_key = api_key
        self.tls = tls
        headers = {"User-Agent": f"nimctl/{__version__}", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=self._timeout(self.timeouts.management),
            transport=transport,
            verify=tls or _tls_context(self.base_url),
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

    def _get(self, result: type[_Result], path: str, **kwargs: Any) -> _Result:
        return parse_answer(result, json_body(self._send("GET", path, **kwargs), path), path)

    def _post(self, result: type[_Result], path: str, payload: dict[str, Any], **kwargs: Any) -> _Result:
        return parse_answer(result, json_body(self._send("POST", path, json=payload, **kwargs), path), path)

    # -- health ----------------------------------------------------------------------
    def live(self) -> HealthStatus:
        from nimctl.client.types import HealthStatus

        return self._get(HealthStatus, "/v1/health/live", not_found_hint=NOT_A_NIM_HINT)

    def ready(self) -> HealthStatus:
        """The ready probe; a server still loading raises :class:`ServerNotReadyError` (503)."""
        from nimctl.client.types import HealthStatus

        return self._get(HealthStatus, "/v1/health/ready", not_found_hint=NOT_A_NIM_HINT)

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
        """Poll the ready probe (or only the live one) until it passes; unreachable, 503 and
        not-ready mean "keep waiting", any other answer (a 404 from a wrong URL) stops at once.

        ``on_poll(state, elapsed_seconds)`` is called after each probe (for a progress display).
        Raises :class:`WaitTimeoutError` naming the last state seen when ``timeout`` passes.
        """
        start = time.monotonic()
        deadline = start + timeout
        last_state = "no answer yet"
        while True:
            try:
                report = self.health(live_only=live_only)
            except ServerUnreachableError:
                last_state = "unreachable"
            except WaitTimeoutError:
                last_state = "no answer in time"
            except ServerNotReadyError as exc:
                # A 503 from the live probe: a proxy or load balancer in front of a NIM still starting.
                last_state = f"not live ({exc.server_message or 'HTTP 503'})"
            else:
                if report.ready or live_only:
                    return report
                last_state = f"live, not ready ({report.message or 'loading'})"
            now = time.monotonic()
            if on_poll is not None:
                on_poll(last_state, now - start)
            if now >= deadline:
                target = "live" if live_only else "ready"
                raise WaitTimeoutError(
                    f"{self.base_url} was not {target} after {timeout:g} s; last state: {last_state}",
                    hint="give it longer with --timeout, or look at the server's logs",
                )
            time.sleep(min(interval, max(0.0, deadline - now)))

    # -- management ------------------------------------------------------------------
    def metadata(self) -> Metadata:
        from nimctl.client.types import Metadata

        return self._get(Metadata, "/v1/metadata")

    def version(self) -> VersionInfo:
        from nimctl.client.types import VersionInfo

        return self._get(VersionInfo, "/v1/version")

    def license(self) -> License:
        from nimctl.client.types import License

        return self._get(License, "/v1/license", not_found_hint="this model ships no license file")

    def manifest(self) -> Manifest:
        from nimctl.client.types import Manifest

        return self._get(Manifest, "/v1/manifest")

    def metrics_text(self) -> str:
        """``/v1/metrics`` as the server sent it: Prometheus text."""
        return self._send("GET", "/v1/metrics").text

    def metrics(self) -> MetricsSummary:
        """``/v1/metrics`` read: load, KV cache, token totals, latency percentiles."""
        from nimctl.client.metrics import summarize_metrics

        return summarize_metrics(self.metrics_text())

    # -- LoRA adapters at run time ------------------------------------------------------
    def load_lora_adapter(self, name: str, path: str) -> LoraAdapterResult:
        """Load the adapter folder ``path`` (as the server sees it) under ``name``; the server must
        allow runtime updates (VLLM_ALLOW_RUNTIME_LORA_UPDATING), else a 403 says how."""
        return self._lora_route("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path}, name)

    def unload_lora_adapter(self, name: str) -> LoraAdapterResult:
        return self._lora_route("/v1/unload_lora_adapter", {"lora_name": name}, name)

    def _lora_route(self, path: str, payload: dict[str, Any], name: str) -> LoraAdapterResult:
        from nimctl.client.types import LoraAdapterResult

        # A load reads the weights into the engine (the server allows it 120 s), after any scan under way.
        read = max(self.timeouts.management, LORA_ROUTE_TIMEOUT_S)
        response = self._send("POST", path, json=payload, read_timeout=read, not_found_hint=_ADAPTERS)
        # vLLM's own server answers these routes in plain text ("Success: ..."); a success is a success.
        if "json" not in response.headers.get("content-type", ""):
            return LoraAdapterResult(name=name)
        return parse_answer(LoraAdapterResult, json_body(response, path), path)

    # -- inference -------------------------------------------------------------------
    def models(self) -> list[ModelCard]:
        from nimctl.client.types import ModelList

        return self._get(ModelList, "/v1/models").data

    def default_model(self) -> str:
        """The served model's name when there is exactly one; otherwise a clear error.

        LoRA adapters are listed as models too, with ``parent`` set to their base: they are never
        the default, so a server with adapters still has its one model."""
        names = [card.id for card in self.models() if card.parent is None]
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
        return self._post(TokenizeResult, "/tokenize", payload, not_found_hint=_MODELS)

    def detokenize(self, tokens: list[int], *, model: str | None = None) -> DetokenizeResult:
        from nimctl.client.types import DetokenizeResult

        payload: dict[str, Any] = {"tokens": tokens}
        if model:
            payload["model"] = model
        return self._post(DetokenizeResult, "/detokenize", payload, not_found_hint=_MODELS)

    def render(self, messages: list[dict[str, Any]], *, model: str | None = None) -> RenderResult:
        from nimctl.client.types import RenderResult

        payload: dict[str, Any] = {"messages": messages}
        if model:
            payload["model"] = model
        return self._post(RenderResult, "/v1/chat/completions/render", payload, not_found_hint=_MODELS)

    def chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> ChatCompletion:
        """One whole chat completion. ``params`` go into the request as they are (max_tokens, seed...)."""
        from nimctl.client.types import ChatCompletion

        payload = {**_drop_none(params), "model": model, "messages": messages, "stream": False}
        return self._post(
            ChatCompletion,
            "/v1/chat/completions",
            payload,
            read_timeout=self.timeouts.inference,
            not_found_hint=_MODELS,
        )

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


_MODELS = "see the served model names with `nimctl models`"
LORA_ROUTE_TIMEOUT_S = 180.0
_ADAPTERS = "see the adapters with `nimctl lora ls`"


def tls_context(cafile: str | None = None) -> ssl.SSLContext:
    """Trust ``cafile``'s CAs (``--cacert``), or the system's when None."""
    if cafile is None:
        return httpx.create_ssl_context(trust_env=True)
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            f"cannot use --cacert {cafile}: {getattr(exc, 'strerror', None) or exc}",
            hint="give a PEM file of CA certificates",
        ) from None


def _tls_context(base_url: str) -> ssl.SSLContext:
    """The TLS settings: CA certificates from SSL_CERT_FILE / SSL_CERT_DIR, else certifi's.

    A plain-http server gets an empty context instead: loading a CA bundle costs about a
    third of a `nimctl health` run, and this client follows no redirects, so no TLS
    connection can happen (one would fail verification, not go unchecked).
    """
    if httpx.URL(base_url).scheme == "http":
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return httpx.create_ssl_context(trust_env=True)


def _drop_none(params: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}
