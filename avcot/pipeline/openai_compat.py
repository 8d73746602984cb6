"""OpenAI-compatible chat-completions client (vLLM ``serve``, OpenAI, other compatible servers).

One ``POST {base_url}/chat/completions`` per call. Content parts: ``text``, ``image_url`` with a
``data:image/png;base64,...`` URI, and ``input_audio`` (base64 WAV). Retries with exponential
backoff on HTTP 429 / 5xx, timeouts and connection errors (``Retry-After`` is honoured, capped);
a rate limit (minimum spacing between requests) and a concurrency cap are shared by every caller
of one client, sync (threads) and async (``achat``) alike.

The API key is read from the environment variable named in the config. It is sent only in the
``Authorization`` header: it is never logged, never part of ``repr``/``identity``, and any error
text is scrubbed of it before it is raised.
"""
from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from avcot.pipeline.backends import AudioPart, BackendError, ImagePart, Message, TextPart

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how to call an OpenAI-compatible server."""

    base_url: str
    """E.g. http://127.0.0.1:8000/v1 (vLLM serve) or https://api.openai.com/v1."""
    model: str
    """Model name the server expects in the request body."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Name of the environment variable holding the key; None sends no Authorization header."""
    timeout_s: float = 120.0
    """Per-request timeout (connect + read)."""
    max_retries: int = 5
    """Retries after the first attempt on 429 / 5xx / timeouts / connection errors."""
    backoff_s: float = 1.0
    """First retry delay; doubles on each retry."""
    max_backoff_s: float = 60.0
    """Upper bound for one retry delay (also caps Retry-After)."""
    requests_per_second: float = 0.0
    """Rate limit shared by all callers of this client; 0 disables it."""
    max_concurrency: int = 8
    """Requests in flight at once from this client."""
    temperature: float = 0.0
    max_tokens: int = 1024
    extra_body: dict[str, Any] = field(default_factory=dict, hash=False)
    """Extra request fields (e.g. {"top_p": 0.9}); must not contain secrets."""


class RateLimiter:
    """Minimum spacing between request starts; thread-safe, with an async variant."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Book the next slot and return how long the caller must wait for it."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
            return start - now

    def acquire(self) -> None:
        """Block until this caller may start a request."""
        if self.interval:
            time.sleep(self._reserve())

    async def aacquire(self) -> None:
        """Async version of acquire."""
        if self.interval:
            await asyncio.sleep(self._reserve())


def encode_part(part: TextPart | ImagePart | AudioPart) -> dict[str, Any]:
    """One content part in the chat-completions wire format."""
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        url = "data:image/png;base64," + base64.b64encode(part.png).decode("ascii")
        return {"type": "image_url", "image_url": {"url": url}}
    if isinstance(part, AudioPart):
        data = base64.b64encode(part.wav).decode("ascii")
        return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}
    raise TypeError(f"unknown message part {type(part).__name__}")


def request_body(cfg: EndpointConfig, messages: Sequence[Message]) -> dict[str, Any]:
    """The JSON body of one chat-completions request (text-only messages stay plain strings)."""
    wire = []
    for m in messages:
        if all(isinstance(p, TextPart) for p in m.parts):
            wire.append({"role": m.role, "content": m.text()})
        else:
            wire.append({"role": m.role, "content": [encode_part(p) for p in m.parts]})
    body = {"model": cfg.model, "messages": wire, "temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
    body.update(cfg.extra_body)
    return body


def reply_text(data: Any) -> str:
    """The assistant text of a chat-completions response (string or list-of-parts content)."""
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise BackendError(f"malformed chat-completions response (no choices[0].message.content): {exc!r}") from None
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise BackendError(f"chat-completions content is {type(content).__name__}, expected str")
    return content


class OpenAIChat:
    """ChatBackend over an OpenAI-compatible HTTP endpoint (sync ``chat`` and async ``achat``)."""

    def __init__(self, cfg: EndpointConfig, *, transport: httpx.BaseTransport | None = None) -> None:
        self.cfg = cfg
        self.identity = f"openai:{cfg.model}@{cfg.base_url.rstrip('/')}"
        self._key = self._read_key(cfg.api_key_env)
        self._url = cfg.base_url.rstrip("/") + "/chat/completions"
        self._limiter = RateLimiter(cfg.requests_per_second)
        self._slots = threading.BoundedSemaphore(max(1, cfg.max_concurrency))
        # asyncio semaphores belong to one event loop: one per loop that calls achat
        self._aslots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._client = httpx.Client(timeout=cfg.timeout_s, transport=transport)

    @staticmethod
    def _read_key(env_name: str | None) -> str | None:
        """The key from the named env var; a missing var is an error naming the var only."""
        if env_name is None:
            return None
        key = os.environ.get(env_name)
        if not key:
            raise BackendError(f"environment variable {env_name!r} (api_key_env) is not set or empty")
        return key

    def __repr__(self) -> str:
        return f"OpenAIChat({self.identity!r})"

    def _async_slots(self) -> asyncio.Semaphore:
        """The concurrency cap for the running event loop."""
        loop = asyncio.get_running_loop()
        if loop not in self._aslots:
            self._aslots[loop] = asyncio.Semaphore(max(1, self.cfg.max_concurrency))
        return self._aslots[loop]

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _scrub(self, text: str) -> str:
        """Remove the key from any text that may end up in an exception or a log."""
        return text.replace(self._key, "***") if self._key else text

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Backoff before retry `attempt` (0-based); Retry-After wins when the server sends it."""
        delay = self.cfg.backoff_s * (2**attempt)
        if response is not None:
            try:
                delay = max(delay, float(response.headers.get("retry-after", "")))
            except ValueError:
                pass  # HTTP-date or missing: keep the exponential delay
        return min(delay, self.cfg.max_backoff_s)

    def _fail(self, what: str, attempts: int) -> BackendError:
        return BackendError(self._scrub(f"{self._url}: {what} (after {attempts} attempt(s))"))

    def _classify(self, resp: httpx.Response) -> tuple[str | None, bool]:
        """(reply or None, retryable) for one HTTP response."""
        if resp.status_code == 200:
            try:
                return reply_text(resp.json()), False
            except ValueError as exc:
                raise BackendError(self._scrub(f"{self._url}: response is not JSON: {exc}")) from None
        return None, resp.status_code in RETRY_STATUS

    def chat(self, messages: Sequence[Message]) -> str:
        """Send one request, retrying transient failures; returns the reply text."""
        body = request_body(self.cfg, messages)
        last = "no attempt"
        for attempt in range(self.cfg.max_retries + 1):
            resp = None
            self._limiter.acquire()
            try:
                with self._slots:
                    resp = self._client.post(self._url, json=body, headers=self._headers())
                reply, retry = self._classify(resp)
                if reply is not None:
                    return reply
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                if not retry:
                    raise self._fail(last, attempt + 1)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.cfg.max_retries:
                time.sleep(self._delay(attempt, resp))
        raise self._fail(last, self.cfg.max_retries + 1)

    async def achat(self, messages: Sequence[Message], client: httpx.AsyncClient | None = None) -> str:
        """Async ``chat``: same retries, rate limit and error scrubbing, on an AsyncClient."""
        own = client is None
        client = client or httpx.AsyncClient(timeout=self.cfg.timeout_s)
        body = request_body(self.cfg, messages)
        last = "no attempt"
        try:
            for attempt in range(self.cfg.max_retries + 1):
                resp = None
                await self._limiter.aacquire()
                try:
                    async with self._async_slots():
                        resp = await client.post(self._url, json=body, headers=self._headers())
                    reply, retry = self._classify(resp)
                    if reply is not None:
                        return reply
                    last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                    if not retry:
                        raise self._fail(last, attempt + 1)
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if attempt < self.cfg.max_retries:
                    await asyncio.sleep(self._delay(attempt, resp))
            raise self._fail(last, self.cfg.max_retries + 1)
        finally:
            if own:
                await client.aclose()

    def close(self) -> None:
        """Close the underlying HTTP connection pool."""
        self._client.close()
