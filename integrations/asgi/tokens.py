"""Output tokens of a response, scanned from its body as it streams by, without keeping it.

OpenAI-compatible servers report output tokens in a ``usage`` object: in the JSON body of a
whole response, or in the final chunk of a ``text/event-stream`` (``"stream": true`` with
``stream_options.include_usage``; vLLM's ``continuous_usage_stats`` repeats a cumulative
``usage`` in every chunk). The key is ``completion_tokens`` (chat and completions) or
``output_tokens`` (the Responses API). The last key seen wins, so both the final usage chunk and
cumulative usage give the request's total.

The scan is a backwards byte search for ``_tokens"`` (memchr speed; a body without usage costs
one pass) and keeps only the last `OVERLAP` bytes of each chunk, to find a key that a chunk
boundary cut in two. The same text inside a JSON string (a completion that talks about usage)
has its quotes escaped (``\\"``) and is not counted.

>>> scanner = OutputTokenScanner()
>>> scanner.feed(b'data: {"choices": [], "usage": {"completion_to')
>>> scanner.feed(b'kens": 11}}\\n\\n')
>>> scanner.tokens
11
"""

from __future__ import annotations

import re

__all__ = ["OVERLAP", "OutputTokenScanner", "carries_usage", "last_output_tokens"]

# ``"completion_tokens": N`` or ``"output_tokens": N``, as a key of the JSON itself.
_TOKENS_KEY = b'_tokens"'
_TOKENS_NAMES = (b'"completion', b'"output')
_TOKENS_VALUE = re.compile(rb"\s*:\s*(\d{1,15})")
#: Bytes of one body chunk kept to find a usage key cut in two by a chunk boundary.
OVERLAP = 64


def carries_usage(content_type: bytes) -> bool:
    """Whether a response of this (lower-case) content type is scanned: JSON or server-sent
    events."""
    return content_type.startswith(b"text/event-stream") or b"json" in content_type


def last_output_tokens(data: bytes) -> int | None:
    """The value of the last output-token key in ``data``, if any: found backwards from the end
    with ``rfind`` (a byte search), so a body without one costs one pass at memchr speed.

    >>> last_output_tokens(b'{"usage": {"prompt_tokens": 3, "completion_tokens": 7}}')
    7
    >>> last_output_tokens(b'{"text": "{\\\\"completion_tokens\\\\": 99}"}') is None
    True
    """
    end = len(data)
    while (i := data.rfind(_TOKENS_KEY, 0, end)) >= 0:
        for name in _TOKENS_NAMES:
            start = i - len(name)
            if start >= 0 and data.startswith(name, start) and data[start - 1 : start] != b"\\":
                match = _TOKENS_VALUE.match(data, i + len(_TOKENS_KEY))
                if match is not None:
                    return int(match.group(1))
        end = i + len(_TOKENS_KEY) - 1  # look before this occurrence
    return None


class OutputTokenScanner:
    """The output tokens of one response body, fed chunk by chunk (`feed`); `tokens` is the
    last value found so far, None while there was none."""

    __slots__ = ("_carry", "tokens")

    def __init__(self) -> None:
        self._carry = b""
        self.tokens: int | None = None

    def feed(self, body: bytes) -> None:
        """Scan one body chunk: the last usage key wins (a stream's final usage chunk, or
        cumulative usage per chunk)."""
        if not body:
            return
        found = None
        if self._carry:  # a key cut in two by the chunk boundary
            found = last_output_tokens(self._carry + body[:OVERLAP])
        here = last_output_tokens(body)
        if here is not None:
            found = here
        if found is not None:
            self.tokens = found
        self._carry = body[-OVERLAP:]
