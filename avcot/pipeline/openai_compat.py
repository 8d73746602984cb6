"""OpenAI-compatible chat-completions client (vLLM ``serve``, OpenAI, other compatible servers).

One ``POST {base_url}/chat/completions`` per call. Content parts: ``text``, ``image_url`` with a
``data:image/png;base64,...`` URI, and ``input_audio`` (base64 WAV). Transient failures (timeouts,
connection errors, HTTP 408 / 429 / 5xx) are retried with exponential backoff and random jitter
(``Retry-After`` is honoured, capped); when the retries are used up the call raises
``TransientError``, which the runner does not cache. Any other HTTP status, or a 200 whose body is
not a chat-completions reply, raises a plain ``BackendError``: a permanent answer about this
request. A rate limit (minimum spacing between requests) and a concurrency cap are shared by every
caller of one client, sync (threads) and async (``achat``) alike.

The API key is read from the environment variable named in the config. It is sent only in the
``Authorization`` header: it is never logged, never part of ``repr``/``identity``, and any error
text is scrubbed of it before it is raised.
"""
from __future__ import annotations

import asyncio
import base64
import datetime
import email.utils
import os
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from avcot.pipeline.backends import AudioPart, BackendError, ImagePart, Message, TextPart, TransientError

# How fast and how stubbornly to call, never what is asked: kept out of the resume hash, so tuning
# them never discards stored answers.
SPEED_FIELDS = frozenset({"timeout_s", "max_retries", "backoff_s", "max_backoff_s", "jitter",
                          "requests_per_second", "max_concurrency"})


def is_transient_status(status: int) -> bool:
    """HTTP statuses worth retrying: request timeout, rate limited, server-side errors."""
    return status in (408, 429) or 500 <= status <= 599


def answer_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The endpoint options that can change a reply (what enters the resume hash)."""
    return {k: v for k, v in options.items() if k not in SPEED_FIELDS}


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
    """Retries after the first attempt on 408 / 429 / 5xx / timeouts / connection errors."""
    backoff_s: float = 1.0
    """First retry delay; doubles on each retry."""
    max_backoff_s: float = 60.0
    """Upper bound for one retry delay (also caps Retry-After)."""
    jitter: float = 0.5
    """Random share of each retry delay: it is drawn uniformly from [(1 - jitter) * d, d]."""
    requests_per_second: float = 0.0
    """Rate limit shared by all callers of this client; 0 disables it."""
    max_concurrency: int = 8
    """Requests in flight at once from this client."""
    temperature: float = 0.0
    max_tokens: int = 1024
    extra_body: dict[str, Any] = field(default_factory=dict, hash=False)
    """Extra request fields (e.g. {"top_p": 0.9}); must not contain secrets."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")
        if self.max_retries < 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("max_retries, backoff_s and max_backoff_s must be >= 0")


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


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # '-0000' parses naive; HTTP dates are UTC
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, cfg: EndpointConfig, u: float, retry_after: float | None = None) -> float:
    """Delay before retry `attempt` (0-based), given a uniform draw `u` in [0, 1).

    Exponential (``backoff_s * 2**attempt``, capped at ``max_backoff_s``) with the random share
    ``jitter`` taken off, so clients that failed together do not retry together. A server's
    Retry-After is a floor: the delay is Retry-After plus the same random spread, still capped.
    """
    base = min(cfg.backoff_s * 2.0 ** min(attempt, 60), cfg.max_backoff_s)
    delay = base * (1.0 - cfg.jitter * u)
    if retry_after is not None:
        delay = retry_after + base * cfg.jitter * u
    return min(delay, cfg.max_backoff_s)


@dataclass(frozen=True)
class FailedAttempt:
    """Why one attempt did not return a reply (transient kinds only)."""

    kind: str
    """Grouping label: 'connection failed', 'timeout', 'connection error' or 'HTTP <status>'."""
    detail: str
    response: httpx.Response | None = None


def failed_attempt(exc: Exception) -> FailedAttempt:
    """Classify a transport exception (always transient: the server may be back later)."""
    kind = ("timeout" if isinstance(exc, httpx.TimeoutException)
            else "connection failed" if isinstance(exc, httpx.ConnectError) else "connection error")
    return FailedAttempt(kind, f"{type(exc).__name__}: {exc}")


class OpenAIChat:
    """ChatBackend over an OpenAI-compatible HTTP endpoint (sync ``chat`` and async ``achat``).

    ``rng``, ``sleep`` and ``asleep`` exist so tests can fix the jitter and record the delays
    instead of waiting them out.
    """

    def __init__(self, cfg: EndpointConfig, *, transport: httpx.BaseTransport | None = None,
                 rng: random.Random | None = None, sleep: Callable[[float], None] = time.sleep,
                 asleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if not cfg.base_url.startswith(("http://", "https://")):
            raise BackendError(f"base_url must start with http:// or https://, got {cfg.base_url!r}")
        self.cfg = cfg
        self.identity = f"openai:{cfg.model}@{cfg.base_url.rstrip('/')}"
        self._key = self._read_key(cfg.api_key_env)
        self._url = cfg.base_url.rstrip("/") + "/chat/completions"
        self._limiter = RateLimiter(cfg.requests_per_second)
        self._slots = threading.BoundedSemaphore(max(1, cfg.max_concurrency))
        # asyncio semaphores belong to one event loop: one per loop that calls achat
        self._aslots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._client = httpx.Client(timeout=cfg.timeout_s, transport=transport)
        self._rng, self._sleep, self._asleep = rng or random.Random(), sleep, asleep

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

    def _headers(self, json_body: bool = True) -> dict[str, str]:
        # multipart uploads set their own Content-Type (with the boundary)
        headers = {"Content-Type": "application/json"} if json_body else {}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _scrub(self, text: str) -> str:
        """Remove the key from any text that may end up in an exception or a log."""
        return text.replace(self._key, "***") if self._key else text

    def _delay(self, attempt: int, failure: FailedAttempt) -> float:
        """Jittered backoff before retry `attempt` (0-based); Retry-After is a floor."""
        header = failure.response.headers.get("retry-after") if failure.response is not None else None
        return backoff_delay(attempt, self.cfg, self._rng.random(), retry_after_seconds(header))

    def _reply(self, resp: httpx.Response, attempts: int, url: str,
               parse: Callable[[Any], str]) -> str | FailedAttempt:
        """The reply text, or why a retry may help; a permanent failure raises BackendError."""
        if resp.status_code == 200:
            try:
                return parse(resp.json())
            except ValueError as exc:
                raise BackendError(self._scrub(f"{url}: response is not JSON: {exc}")) from None
        detail = f"HTTP {resp.status_code}: {resp.text[:300]}"
        if is_transient_status(resp.status_code):
            return FailedAttempt(f"HTTP {resp.status_code}", detail, resp)
        raise BackendError(self._scrub(f"{url}: {detail} (after {attempts} attempt(s))"))

    def _gave_up(self, failure: FailedAttempt, url: str) -> TransientError:
        attempts = self.cfg.max_retries + 1
        return TransientError(self._scrub(f"{url}: {failure.detail} (after {attempts} attempt(s))"),
                              kind=failure.kind, endpoint=self._scrub(url))

    def call(self, url: str, send: Callable[[], httpx.Response], parse: Callable[[Any], str]) -> str:
        """One request (``send`` posts it) with the client's retries, rate limit and concurrency cap.

        ``parse`` turns a 200's JSON into the reply text (a ValueError from it is a permanent
        BackendError). Raises TransientError when every attempt failed transiently.
        """
        failure = FailedAttempt("no attempt", "no attempt")
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self._sleep(self._delay(attempt - 1, failure))
            self._limiter.acquire()
            try:
                with self._slots:
                    resp = send()
            except httpx.TransportError as exc:  # timeouts included
                failure = failed_attempt(exc)
                continue
            result = self._reply(resp, attempt + 1, url, parse)
            if isinstance(result, str):
                return result
            failure = result
        raise self._gave_up(failure, url)

    def chat(self, messages: Sequence[Message]) -> str:
        """Send one request, retrying transient failures; returns the reply text.

        Raises TransientError when every attempt failed transiently, BackendError otherwise.
        """
        body = request_body(self.cfg, messages)
        return self.call(self._url, lambda: self._client.post(self._url, json=body, headers=self._headers()),
                         reply_text)

    async def achat(self, messages: Sequence[Message], client: httpx.AsyncClient | None = None) -> str:
        """Async ``chat``: same retries, jitter, rate limit, error types and scrubbing, on an AsyncClient."""
        own = client is None
        client = client or httpx.AsyncClient(timeout=self.cfg.timeout_s)
        body = request_body(self.cfg, messages)
        failure = FailedAttempt("no attempt", "no attempt")
        try:
            for attempt in range(self.cfg.max_retries + 1):
                if attempt:
                    await self._asleep(self._delay(attempt - 1, failure))
                await self._limiter.aacquire()
                try:
                    async with self._async_slots():
                        resp = await client.post(self._url, json=body, headers=self._headers())
                except httpx.TransportError as exc:
                    failure = failed_attempt(exc)
                    continue
                result = self._reply(resp, attempt + 1, self._url, reply_text)
                if isinstance(result, str):
                    return result
                failure = result
            raise self._gave_up(failure, self._url)
        finally:
            if own:
                await client.aclose()

    def close(self) -> None:
        """Close the underlying HTTP connection pool."""
        self._client.close()
