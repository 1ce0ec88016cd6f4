"""Output tokens from OpenAI-style ``usage``: JSON bodies, server-sent events, keys cut by chunk
boundaries, cumulative usage, and usage-like text that is not usage."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi.responses import StreamingResponse
from meter.integrations.asgi.tokens import (
    OVERLAP,
    OutputTokenScanner,
    carries_usage,
    last_output_tokens,
)
from prometheus_client import CollectorRegistry

from meter import Meter
from tests.integrations.asgi.apps import (
    CHAT,
    COMPLETIONS,
    GUARD_S,
    metered,
    openai_app,
    sample,
    scrape,
    serve,
    sse,
    usage,
)

# -- output tokens ------------------------------------------------------------------------------


def test_output_tokens_from_json_and_streamed_usage(gpus2: Meter) -> None:
    registry = CollectorRegistry()
    app = openai_app(registry)
    key = json.dumps({"choices": [], "usage": usage(11)})
    cut = key.index("completion_tokens") + 6  # the usage key cut in two across messages

    @app.get("/split")
    async def split() -> Any:
        parts = ["data: {}\n\n", f"data: {key[:cut]}", f"{key[cut:]}\n\n", "data: [DONE]\n\n"]

        async def gen() -> AsyncIterator[str]:
            for part in parts:
                yield part

        return StreamingResponse(gen(), media_type="text/event-stream")

    @app.get("/continuous")
    async def continuous() -> Any:
        # vLLM's continuous_usage_stats: cumulative usage in every chunk; the last one counts.
        chunks = sse([{"choices": [], "usage": usage(n)} for n in (1, 2, 3, 4)])
        return StreamingResponse(iter(chunks), media_type="text/event-stream")

    @app.get("/quoted")
    async def quoted() -> Any:
        # The text of a completion that talks about usage is not usage.
        return {"choices": [{"text": '{"completion_tokens": 99, "output_tokens": 98}'}]}

    @app.get("/responses")
    async def responses() -> Any:
        return {"output": [], "usage": {"input_tokens": 5, "output_tokens": 13}}

    seen = metered(app, gpus2, registry)
    with serve(app) as url, httpx.Client(base_url=url, timeout=GUARD_S) as c:
        assert c.post(CHAT, json={"max_tokens": 7}).json()["usage"]["completion_tokens"] == 7
        c.post(CHAT, json={"max_tokens": 4, "usage": False})
        streamed = c.post(COMPLETIONS, json={"max_tokens": 5})
        assert streamed.text.endswith("data: [DONE]\n\n") and '"completion_tokens": 5' in (
            streamed.text
        )
        c.post(COMPLETIONS, json={"max_tokens": 6, "usage": False})
        for path in ("/split", "/continuous", "/quoted", "/responses"):
            assert c.get(path).status_code == 200
        samples = scrape(url)

    tokens = [(r.route, r.output_tokens, r.streamed) for r in seen if r.route != "/metrics"]
    assert tokens == [
        (CHAT, 7, False),
        (CHAT, None, False),
        (COMPLETIONS, 5, True),
        (COMPLETIONS, None, True),
        ("/split", 11, True),
        ("/continuous", 4, True),
        ("/quoted", None, False),
        ("/responses", 13, False),
    ]
    assert seen[0].energy_per_output_token_j == pytest.approx(seen[0].energy_j / 7)
    assert seen[1].energy_per_output_token_j is None
    for route, method, want in ((CHAT, "POST", 7), (COMPLETIONS, "POST", 5), ("/split", "GET", 11)):
        labels = {"route": route, "method": method, "status": "2xx"}
        assert sample(samples, "meter_output_tokens_total", **labels) == want
    assert (
        sample(samples, "meter_output_tokens_total", route="/quoted", method="GET", status="2xx")
        is None
    )


# -- the scanner on its own ---------------------------------------------------------------------


def test_the_last_usage_key_counts_and_quoted_text_does_not() -> None:
    assert last_output_tokens(b'{"usage": {"completion_tokens": 7}}') == 7
    assert last_output_tokens(b'{"usage": {"output_tokens" : 13}}') == 13
    assert last_output_tokens(b'{"completion_tokens": 1} {"completion_tokens": 2}') == 2
    assert last_output_tokens(b'{"text": "{\\"completion_tokens\\": 99}"}') is None
    assert last_output_tokens(b'{"completion_tokens": 5, "text": "\\"output_tokens\\": 9"}') == 5
    assert last_output_tokens(b'{"prompt_tokens": 3, "total_tokens": 3}') is None
    assert last_output_tokens(b'{"completion_tokens": null}') is None
    assert last_output_tokens(b"") is None


@pytest.mark.parametrize("key", ["completion_tokens", "output_tokens"])
def test_a_key_cut_anywhere_by_chunk_boundaries_is_found(key: str) -> None:
    chunk = f'data: {{"choices": [], "usage": {{"prompt_tokens": 3, "{key}": 42}}}}\n\n'.encode()
    for cut in range(1, len(chunk)):
        scanner = OutputTokenScanner()
        scanner.feed(b'data: {"choices": [{"text": "hi"}]}\n\n')
        scanner.feed(chunk[:cut])
        scanner.feed(chunk[cut:])
        scanner.feed(b"data: [DONE]\n\n")
        assert scanner.tokens == 42, cut


def test_the_scanner_keeps_the_last_value_and_no_body() -> None:
    scanner = OutputTokenScanner()
    assert scanner.tokens is None
    for n in (1, 2, 3):
        scanner.feed(f'data: {{"usage": {{"completion_tokens": {n}}}}}\n\n'.encode())
    scanner.feed(b"")
    scanner.feed(b"x" * 10_000)
    assert scanner.tokens == 3
    # Past a long chunk, a key cut in two is found from the chunk's last OVERLAP bytes alone.
    scanner.feed(b"y" * 10_000 + b'{"output_to')
    scanner.feed(b'kens": 4}')
    assert scanner.tokens == 4
    assert len(b'"completion_tokens": 123456789012345') <= OVERLAP


@pytest.mark.parametrize(
    ("content_type", "scanned"),
    [
        (b"application/json", True),
        (b"application/json; charset=utf-8", True),
        (b"application/x-ndjson", True),
        (b"text/event-stream", True),
        (b"text/event-stream; charset=utf-8", True),
        (b"text/plain", False),
        (b"text/html", False),
        (b"", False),
    ],
)
def test_json_and_event_streams_are_scanned(content_type: bytes, scanned: bool) -> None:
    assert carries_usage(content_type) is scanned
