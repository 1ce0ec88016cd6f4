"""What the middleware tests share: a real uvicorn on 127.0.0.1, a cheap raw HTTP client,
``/metrics`` scraping, an OpenAI-style FastAPI app, and in-process ASGI calls with hand-made
messages. conftest.py holds the fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from meter.integrations.asgi import EnergyMiddleware, RequestMeasurement
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from meter import Meter

ROOT = Path(__file__).resolve().parents[3]
WATTS = (300.0, 150.0)
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
#: Hang guard for waits on the server (never a timing assertion).
GUARD_S = 20.0


# -- a real server ------------------------------------------------------------------------------


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn (lifespan on) on a free 127.0.0.1 port in a thread; its URL."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says it is TCP (proto 0 would leave Nagle on: 40 ms per response).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + GUARD_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("uvicorn did not start (see the log above)")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=GUARD_S)
        sock.close()


def raw_get_many(url: str, paths: Sequence[str], connections: int = 4) -> list[int]:
    """GET every path over ``connections`` keep-alive sockets (a client far cheaper than
    httpx, so that 10,000 requests take seconds); the status codes."""
    host, port = url.removeprefix("http://").split(":")
    statuses: list[int] = []

    def worker(chunk: Sequence[str]) -> None:
        with socket.create_connection((host, int(port)), timeout=GUARD_S) as s:
            f = s.makefile("rb")
            for path in chunk:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
                status = int(f.readline().split()[1])
                length = 0
                while (line := f.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                f.read(length)
                statuses.append(status)

    threads = [
        threading.Thread(target=worker, args=(paths[i::connections],)) for i in range(connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` as {(sample name, labels): value}."""
    text = httpx.get(f"{url}/metrics", timeout=GUARD_S).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, frozenset(labels.items())))


# -- an OpenAI-style app ------------------------------------------------------------------------


def sse(chunks: Sequence[dict[str, Any] | str]) -> list[str]:
    return [f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n" for c in chunks]


def usage(tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": 3 + tokens}


def openai_app(registry: CollectorRegistry | None = None) -> FastAPI:
    """Chat completions answer JSON (``usage`` included unless ``"usage": false``);
    completions stream one SSE chunk per token, the final one with ``usage`` unless
    ``"usage": false``. ``delay_s`` is the time to answer. Tracks the peak of requests in
    flight. With a ``registry``, ``GET /metrics`` serves it."""
    app = FastAPI()
    app.state.in_flight = 0
    app.state.peak = 0

    def enter() -> None:
        app.state.in_flight += 1
        app.state.peak = max(app.state.peak, app.state.in_flight)

    @app.post(CHAT)
    async def chat(request: Request) -> Any:
        body = await request.json()
        tokens = int(body.get("max_tokens", 8))
        enter()
        try:
            await asyncio.sleep(float(body.get("delay_s", 0.0)))
        finally:
            app.state.in_flight -= 1
        answer: dict[str, Any] = {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi " * tokens}}],
        }
        if body.get("usage", True):
            answer["usage"] = usage(tokens)
        return answer

    @app.post(COMPLETIONS)
    async def completions(request: Request) -> Any:
        body = await request.json()
        tokens = int(body.get("max_tokens", 8))
        delay = float(body.get("delay_s", 0.0))

        async def stream() -> AsyncIterator[str]:
            enter()
            try:
                for _ in range(tokens):
                    await asyncio.sleep(delay / tokens)
                    yield sse([{"choices": [{"index": 0, "text": "hi "}]}])[0]
                if body.get("usage", True):
                    yield sse([{"choices": [], "usage": usage(tokens)}])[0]
                yield "data: [DONE]\n\n"
            finally:
                app.state.in_flight -= 1

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> Any:
        if item_id < 0:
            raise HTTPException(status_code=404, detail="no such item")
        return {"id": item_id}

    @app.get("/health")
    async def health() -> Any:
        return {"ok": True}

    if registry is not None:

        @app.get("/metrics")
        async def metrics() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def metered(
    app: Starlette, meter: Meter, registry: CollectorRegistry | None, **options: Any
) -> list[RequestMeasurement]:
    """Add the middleware; the list its ``on_measurement`` fills."""
    seen: list[RequestMeasurement] = []
    app.add_middleware(
        EnergyMiddleware,
        meter=meter,
        registry=registry,
        on_measurement=lambda scope, r: seen.append(r),
        **options,
    )
    return seen


def rel_err(got: float, want: float) -> float:
    return abs(got - want) / abs(want)


# -- in-process ASGI calls ----------------------------------------------------------------------


def http_scope(method: str = "GET", path: str = "/") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


async def call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """One request through ``app`` in-process; the messages it sent."""
    sent: list[dict[str, Any]] = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await asyncio.get_running_loop().create_future()  # no disconnect: wait forever
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def raw_app(*messages: dict[str, Any], raises: BaseException | None = None) -> Callable[..., Any]:
    """A plain ASGI app that sends ``messages`` and then raises ``raises``, if given."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)
        if raises is not None:
            raise raises

    return app


def start(status: int = 200, body: bytes = b"", **headers: str) -> dict[str, Any]:
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    if body and "content_length" not in headers:
        raw.append((b"content-length", str(len(body)).encode()))
    return {"type": "http.response.start", "status": status, "headers": raw}


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}
