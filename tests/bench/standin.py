"""A stand-in for a vLLM server, for the bench tests: ``python -m tests.bench.standin --port P``.

- ``/tokenize``: a toy tokenizer: a BOS token, then one token per space-separated word, two for a
  word longer than 7 letters (so the prompt builder has words to leave out); token strings as
  byte-level BPE writes them (``Ġword``), unless ``--no-token-strs``;
- ``/v1/completions``: exactly ``max_tokens`` chunks, the first after ``--ttft`` seconds and each
  next after ``--itl`` seconds, then a usage chunk and ``[DONE]`` (or one JSON answer, not
  streamed); ``--fail STATUS`` answers every completion with that status instead;
- ``/v1/chat/completions``: the same, in chat's shape (``delta.content``); the prompt is the user
  message's text parts, and each ``image_url`` part, which must be a base64 PNG data URL, counts
  :data:`IMAGE_TOKENS` prompt tokens (a 400 otherwise);
- ``/v1/health/live``, ``/v1/health/ready``, ``/v1/models`` (one model, ``m``): enough for the CLI;
- ``/v1/metrics``: vLLM's TTFT histogram, token counters, KV-cache usage and queue gauges
  (404 with ``--no-metrics``).

Run in its own process so that a test can kill it mid-level.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from typing import Any

MAX_MODEL_LEN = 4096
IMAGE_TOKENS = 10
BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def tokenize(text: str) -> list[str]:
    tokens = ["<s>"]
    for position, word in enumerate(text.split(" ")):
        marker = "" if position == 0 else "Ġ"
        if len(word) > 7:
            tokens += [marker + word[:4], word[4:]]
        elif word:
            tokens.append(marker + word)
    return tokens


def create_app(args: argparse.Namespace) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    state: dict[str, Any] = {"ttft": [], "prompt": 0, "generated": 0, "running": 0}

    async def tokenize_route(request: Request) -> Response:
        body = await request.json()
        tokens = tokenize(body["prompt"])
        answer: dict[str, Any] = {
            "count": len(tokens),
            "max_model_len": MAX_MODEL_LEN,
            "tokens": list(range(len(tokens))),
        }
        if body.get("return_token_strs") and not args.no_token_strs:
            answer["token_strs"] = tokens
        return JSONResponse(answer)

    def error(status: int, message: str) -> Response:
        return JSONResponse(
            {"error": {"message": message, "type": "Failure", "code": status}}, status_code=status
        )

    async def chat(request: Request) -> Response:
        body = await request.json()
        if args.fail:
            return error(args.fail, f"stand-in failure {args.fail}")
        (message,) = body["messages"]
        texts = [part["text"] for part in message["content"] if part["type"] == "text"]
        urls = [part["image_url"]["url"] for part in message["content"] if part["type"] == "image_url"]
        for url in urls:
            head, _, data = url.partition(",")
            if head != "data:image/png;base64" or not base64.b64decode(data).startswith(b"\x89PNG"):
                return error(400, f"not a PNG data URL: {url[:40]}")
        return await answer(body, len(tokenize(" ".join(texts))) + IMAGE_TOKENS * len(urls), chat=True)

    async def completions(request: Request) -> Response:
        body = await request.json()
        if args.fail:
            return error(args.fail, f"stand-in failure {args.fail}")
        return await answer(body, len(tokenize(body["prompt"])), chat=False)

    def choice(text: str, reason: str | None, chat: bool, stream: bool) -> dict[str, Any]:
        if not chat:
            return {"index": 0, "text": text, "finish_reason": reason}
        key = "delta" if stream else "message"
        return {"index": 0, key: {"role": "assistant", "content": text}, "finish_reason": reason}

    async def answer(body: dict[str, Any], prompt_tokens: int, chat: bool) -> Response:
        count = body["max_tokens"]
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": count,
            "total_tokens": prompt_tokens + count,
        }
        state["running"] += 1
        if not body.get("stream"):
            try:
                await asyncio.sleep(args.ttft + args.itl * (count - 1))
            finally:
                state["running"] -= 1
            finish(prompt_tokens, count)
            return JSONResponse({"choices": [choice(" x" * count, "length", chat, False)], "usage": usage})

        async def events() -> Any:
            try:
                for position in range(count):
                    await asyncio.sleep(args.ttft if position == 0 else args.itl)
                    reason = "length" if position == count - 1 else None
                    chunk = {"choices": [choice(" x", reason, chat, True)], "usage": None}
                    yield f"data: {json.dumps(chunk)}\n\n"
                if body.get("stream_options", {}).get("include_usage"):
                    yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
                yield "data: [DONE]\n\n"
                finish(prompt_tokens, count)
            finally:
                state["running"] -= 1

        return StreamingResponse(events(), media_type="text/event-stream")

    def finish(prompt_tokens: int, count: int) -> None:
        state["ttft"].append(args.ttft)
        state["prompt"] += prompt_tokens
        state["generated"] += count

    async def metrics(request: Request) -> Response:
        if args.no_metrics:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        lines = ["# TYPE vllm:time_to_first_token_seconds histogram"]
        for bound in BUCKETS:
            below = sum(1 for value in state["ttft"] if value <= bound)
            lines.append(f'vllm:time_to_first_token_seconds_bucket{{le="{bound}"}} {below}')
        lines += [
            f'vllm:time_to_first_token_seconds_bucket{{le="+Inf"}} {len(state["ttft"])}',
            f"vllm:time_to_first_token_seconds_count {len(state['ttft'])}",
            f"vllm:time_to_first_token_seconds_sum {sum(state['ttft'])}",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total {state['prompt']}",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total {state['generated']}",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running {state['running']}",
            "# TYPE vllm:num_requests_waiting gauge",
            "vllm:num_requests_waiting 0",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc {state['running'] / 100}",
        ]
        return PlainTextResponse("\n".join(lines) + "\n")

    async def healthy(request: Request) -> Response:
        return JSONResponse({"object": "health.response", "message": "Service is ready."})

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model", "max_model_len": MAX_MODEL_LEN}]})

    return Starlette(
        routes=[
            # What `nimctl bench` asks before it starts: is it ready, which model.
            Route("/v1/health/live", healthy),
            Route("/v1/health/ready", healthy),
            Route("/v1/models", models),
            Route("/tokenize", tokenize_route, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/metrics", metrics),
        ]
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft", type=float, default=0.0)
    parser.add_argument("--itl", type=float, default=0.0)
    parser.add_argument("--fail", type=int, default=0)
    parser.add_argument("--no-metrics", action="store_true")
    parser.add_argument("--no-token-strs", action="store_true")
    args = parser.parse_args()
    uvicorn.run(create_app(args), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
