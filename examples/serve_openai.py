"""An imitation of an OpenAI-compatible inference server, metered per request.

    METER_SIMULATE_GPUS=300,150 python examples/serve_openai.py             # serve on :8000
    METER_SIMULATE_GPUS=300,150 python examples/serve_openai.py --load 16   # self-test, report

While it serves:

    curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
        -d '{"model": "toy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}' -i
    curl -sN localhost:8000/v1/completions -H 'content-type: application/json' \\
        -d '{"model": "toy", "prompt": "once upon", "max_tokens": 8, "stream": true}'
    curl -s localhost:8000/metrics | grep -E '^meter_(request|output)'

``POST /v1/chat/completions`` and ``POST /v1/completions`` answer like OpenAI's API: a JSON body
with ``usage``, or with ``"stream": true`` server-sent events, one chunk per token, a final chunk
with ``usage`` (``"stream_options": {"include_usage": false}`` leaves it out; OpenAI and vLLM
include it only on request) and ``data: [DONE]``. The "model" emits a word every ``--token-s``
seconds: on simulated GPUs the power is constant, so a request's energy follows its time in
flight and how many requests shared the GPUs meanwhile.

`meter.integrations.asgi.EnergyMiddleware` is added with its defaults, as
``vllm serve --middleware`` would add it, plus the ``x-energy-joules`` response header.
``GET /metrics`` serves prometheus_client's default registry, which holds the request metrics
and, registered here, meter's device metrics. ``--load N`` starts the server on a free port,
runs N concurrent clients against it, and prints the energy per request and per output token of
each route as read back from ``/metrics``. Needs fastapi and uvicorn
(``pip install fastapi uvicorn``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from meter.exporters.prometheus import register
from meter.integrations.asgi import EnergyMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import meter

MODEL = "toy-llm"
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while"]
MAX_TOKENS = 4096


def words(n: int, seed: str) -> Iterator[str]:
    """``n`` deterministic words (the "generation")."""
    start = sum(map(ord, seed)) % len(WORDS)
    return itertools.islice(itertools.cycle(WORDS[start:] + WORDS[:start]), n)


def prompt_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        text = " ".join(str(m.get("content", "")) for m in body["messages"])
    else:
        text = str(body.get("prompt", ""))
    return len(text.split())


def build_app(token_s: float = 0.02) -> FastAPI:
    """The OpenAI-style app, with `EnergyMiddleware` and ``/metrics``."""
    app = FastAPI(title="toy OpenAI-compatible server")
    ids = itertools.count(1)

    async def generate(request: Request, chat: bool) -> Response:
        try:
            body = await request.json()
            n = int(body.get("max_tokens", 16))
        except (ValueError, TypeError, AttributeError):
            return JSONResponse({"error": {"message": "expected a JSON object"}}, 400)
        if not 1 <= n <= MAX_TOKENS:
            return JSONResponse({"error": {"message": f"max_tokens must be 1..{MAX_TOKENS}"}}, 400)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{next(ids)}"
        created = int(time.time())
        model = str(body.get("model", MODEL))
        usage = {
            "prompt_tokens": prompt_tokens(body),
            "completion_tokens": n,
            "total_tokens": prompt_tokens(body) + n,
        }
        tokens = list(words(n, rid))
        if not body.get("stream"):
            await asyncio.sleep(token_s * n)  # decode n tokens
            text = " ".join(tokens)
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            kind = "chat.completion" if chat else "text_completion"
            return JSONResponse(
                {
                    "id": rid,
                    "object": kind,
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                }
            )
        options = body.get("stream_options") or {}
        include_usage = options.get("include_usage", True) if isinstance(options, dict) else True

        async def events() -> AsyncIterator[str]:
            head = {
                "id": rid,
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": created,
                "model": model,
            }
            for i, word in enumerate(tokens):
                await asyncio.sleep(token_s)  # decode one token
                text = word if i == 0 else " " + word
                last = i == n - 1
                delta: dict[str, Any] = {"index": 0, "finish_reason": "length" if last else None}
                if chat:
                    delta["delta"] = {"content": text}
                else:
                    delta["text"] = text
                yield f"data: {json.dumps({**head, 'choices': [delta]})}\n\n"
            if include_usage:
                yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, chat=False)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "me"}]}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    # What `vllm serve --middleware meter.integrations.asgi.EnergyMiddleware` does (plus a header).
    app.add_middleware(EnergyMiddleware, energy_header="x-energy-joules")
    # meter's device metrics (watts, joules, CO2e per GPU) in the same default registry.
    register(meter.get_meter())
    return app


# -- --load: a self-test --------------------------------------------------------------------------


def post(url: str, payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload).encode()
    req = urllib.request.Request(url, data, {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        body: bytes = r.read()
        return body


def report(metrics_text: str) -> list[str]:
    """Per route: requests, mean joules per request, output tokens, joules per token, CO2e."""
    per: dict[tuple[str, str, str], dict[str, float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name in (
                "meter_request_energy_joules_sum",
                "meter_requests_total",
                "meter_output_tokens_total",
                "meter_request_co2e_grams_total",
            ):
                key = (s.labels["route"], s.labels["method"], s.labels["status"])
                per.setdefault(key, {})[s.name] = s.value
    lines = [
        f"{'route':24} {'method':6} {'status':6} {'requests':>8} {'J/request':>10} "
        f"{'tokens':>7} {'J/token':>8} {'gCO2e':>9}"
    ]
    for (route, method, status), v in sorted(per.items()):
        n = v.get("meter_requests_total", 0.0)
        joules = v.get("meter_request_energy_joules_sum", 0.0)
        tokens = v.get("meter_output_tokens_total", 0.0)
        per_token = f"{joules / tokens:8.3f}" if tokens else f"{'–':>8}"
        lines.append(
            f"{route:24} {method:6} {status:6} {n:8.0f} {joules / max(n, 1):10.3f} "
            f"{tokens:7.0f} {per_token} {v.get('meter_request_co2e_grams_total', 0.0):9.4f}"
        )
    return lines


def run_load(app: FastAPI, clients: int, requests: int) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            return 1
        time.sleep(0.01)
    rng = random.Random(0)

    def client(i: int) -> None:
        for k in range(requests):
            path = "/v1/chat/completions" if (i + k) % 2 else "/v1/completions"
            payload = {"model": MODEL, "max_tokens": rng.randint(4, 24), "stream": k % 3 == 0}
            payload["prompt" if path.endswith("/completions") else "messages"] = (
                "tell me a story"
                if path == "/v1/completions"
                else [{"role": "user", "content": "tell me a story"}]
            )
            post(url + path, payload)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - t0
    with urllib.request.urlopen(url + "/metrics", timeout=60) as r:
        text = r.read().decode()
    server.should_exit = True
    thread.join(timeout=10)
    gpus = [d for d in meter.get_meter().devices if d.kind == "gpu"]
    print(
        f"{clients} clients x {requests} requests in {elapsed:.1f} s on "
        f"{len(gpus)} GPU(s): {', '.join(f'{d.key} ({d.method})' for d in gpus) or 'none'}"
    )
    print("\n".join(report(text)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--token-s", type=float, default=0.02, help="seconds per output token")
    parser.add_argument("--load", type=int, metavar="N", help="self-test with N clients, report")
    parser.add_argument("--requests", type=int, default=4, help="requests per client (--load)")
    args = parser.parse_args(argv)
    app = build_app(args.token_s)
    if args.load:
        return run_load(app, args.load, args.requests)
    uvicorn.run(app, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
