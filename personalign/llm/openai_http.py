"""OpenAI-compatible HTTP backend: OpenAI itself, `vllm serve`, `personalign serve`, any compatible server.

Requests go out concurrently (at most `concurrency` in flight per server) over one
`httpx.AsyncClient`. A request is sent again only after an attempt failed: HTTP 408/409/429/5xx,
a timeout, or a dropped or refused connection. Between attempts it waits as the server's
`Retry-After` (or `retry-after-ms`) asks, else an exponential backoff with full jitter. With
several base URLs (a list, or one comma-separated string) each attempt goes to the least busy
server, and a retry never to the server that just failed, so a dead server's work moves on.

The API key is read from the environment variable named by `api_key_env` when a run starts and
lives only in the client's `Authorization` header: it is not an attribute, never logged, and
scrubbed from error messages.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import socket
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from personalign import errors
from personalign.config import ConfigError
from personalign.llm.base import BackendConfig, GenerationConfig, Request
from personalign.llm.progress import progress_bar

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = frozenset({408, 409, 429})
RETRY_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
MAX_RETRY_AFTER = 60.0  # longer Retry-After values are capped at this many seconds
PATHS = {"chat": "chat/completions", "completions": "completions"}
TOP_LOGPROBS = 20  # alternatives asked for in the log-prob verdict mode (OpenAI's maximum)

logger = logging.getLogger(__name__)


class BackendError(errors.BackendError, RuntimeError):
    """A request that failed for good: a non-retryable answer, a malformed reply, or retries exhausted."""


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date; None if absent or invalid."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (attempt counts from 0)."""
    return (rng or random).uniform(0.0, min(cap, base * 2**attempt))


def run_sync(coro):
    """Run a coroutine to completion from sync code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class OpenAIBackend:
    """Chat (`/chat/completions`) or text (`/completions`) generation against OpenAI-compatible servers."""

    def __init__(
        self,
        model: str,
        base_url: str | Sequence[str] | None = None,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        endpoint: Literal["chat", "completions"] = "chat",
        concurrency: int = 8,
        max_retries: int = 6,
        timeout: float = 120.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ):
        if endpoint not in PATHS:
            raise ValueError(f"endpoint must be 'chat' or 'completions', got {endpoint!r}")
        urls = base_url.split(",") if isinstance(base_url, str) else list(base_url or [DEFAULT_BASE_URL])
        urls = [u.strip() for u in urls if u.strip()]
        if not urls:
            raise ValueError("base_url: give at least one server")
        self.model = model
        self.base_urls = [u.rstrip("/") for u in urls]
        self.api_key_env = api_key_env
        self.endpoint = endpoint
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap

    @classmethod
    def from_config(cls, cfg: BackendConfig) -> OpenAIBackend:
        if cfg.kind != "openai":
            raise ValueError(f"OpenAIBackend needs kind='openai', got {cfg.kind!r}")
        if not cfg.model:
            raise ConfigError("an openai backend needs the model name the server serves", option="--model")
        return cls(
            cfg.model,
            cfg.base_url,
            api_key_env=cfg.api_key_env,
            endpoint=cfg.endpoint,
            concurrency=cfg.concurrency,
            max_retries=cfg.max_retries,
            timeout=cfg.timeout,
        )

    def check_reachable(self, timeout: float = 5.0) -> None:
        """Fail at once, before any work, when no server accepts a connection (refused, unknown host,
        no answer within `timeout`); one reachable server is enough (work moves off dead ones)."""
        failures = []
        for url in self.base_urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise errors.UserError(f"not an http(s) URL: {url!r}", option="--base-url")
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError as e:
                raise errors.UserError(f"bad port in {url!r}: {e}", option="--base-url") from None
            try:
                socket.create_connection((parts.hostname, port), timeout=timeout).close()
                return
            except OSError as e:
                failures.append(f"{url}: {e.strerror or type(e).__name__}")
        raise BackendError("cannot reach the server (" + "; ".join(failures) + "); is it running?",
                           option="--base-url")

    def __repr__(self) -> str:
        return (
            f"OpenAIBackend(model={self.model!r}, base_urls={self.base_urls!r}, endpoint={self.endpoint!r}, "
            f"api_key_env={self.api_key_env!r})"
        )

    @property
    def identity(self) -> str:
        return f"openai:{self.model}"

    def generate(self, requests: Sequence[Request], config: GenerationConfig, *, progress: bool = True) -> list[str]:
        return run_sync(self.agenerate(requests, config, progress=progress))

    async def agenerate(
        self, requests: Sequence[Request], config: GenerationConfig, *, progress: bool = False
    ) -> list[str]:
        """Generate for every request concurrently; results in input order."""
        return await self._post_all([self._body(r, config) for r in requests], parse=self._text, progress=progress)

    async def _post_all(self, bodies: list[dict[str, Any]], *, parse, progress: bool = False) -> list:
        """POST every body concurrently (retries, server choice) and parse each reply; results in input order."""
        secret = os.environ.get(self.api_key_env) or None
        if secret is None:
            logger.debug("no API key in $%s; sending requests without Authorization", self.api_key_env)
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        slots = self.concurrency * len(self.base_urls)
        limits = httpx.Limits(max_connections=slots, max_keepalive_connections=slots)
        in_flight = dict.fromkeys(self.base_urls, 0)
        semaphore = asyncio.Semaphore(slots)
        with progress_bar(progress, len(bodies)) as bar:
            task_id = bar.add_task("requests", total=len(bodies))
            async with httpx.AsyncClient(headers=headers, timeout=self.timeout, limits=limits) as client:

                async def one(index: int, body: dict[str, Any]) -> str:
                    text = await self._send(client, semaphore, in_flight, index, body, secret, parse)
                    bar.advance(task_id)
                    return text

                tasks = [asyncio.create_task(one(i, b)) for i, b in enumerate(bodies)]
                try:
                    return list(await asyncio.gather(*tasks))
                except BaseException:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise

    def choice_probs(self, requests: Sequence[Request], choices: Sequence[str]) -> list[list[float] | None]:
        """Per request, the probabilities of each choice as the first answer token, from the server's
        top log-probs (one token generated, temperature 0), renormalised over the choices; None when
        no choice is among the returned top tokens."""
        return run_sync(self._achoice_probs(requests, list(choices)))

    async def _achoice_probs(self, requests: Sequence[Request], choices: list[str]) -> list[list[float] | None]:
        config = GenerationConfig(max_new_tokens=1, temperature=0.0)
        bodies = []
        for r in requests:
            body = self._body(r, config)
            body |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS} if self.endpoint == "chat" else {
                "logprobs": TOP_LOGPROBS}
            bodies.append(body)
        replies = await self._post_all(bodies, parse=lambda response, url, secret: response.json())
        return [_choice_distribution(self._top_logprobs(reply), choices) for reply in replies]

    def _top_logprobs(self, reply: dict) -> dict[str, float]:
        """token -> log-prob of the first generated token's top alternatives, from a chat or completions reply."""
        try:
            lp = reply["choices"][0]["logprobs"]
            if self.endpoint == "chat":
                return {t["token"]: t["logprob"] for t in lp["content"][0]["top_logprobs"]}
            return dict(lp["top_logprobs"][0])
        except (KeyError, IndexError, TypeError) as e:
            raise BackendError(f"the server returned no top log-probs ({type(e).__name__}); it must support "
                               "`logprobs` for the log-prob verdict mode") from None

    def _body(self, request: Request, config: GenerationConfig) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "seed": config.seed,
        }
        if config.top_k:
            body["top_k"] = config.top_k  # vLLM's (and most open servers') sampling extension
        if config.stop:
            body["stop"] = list(config.stop)
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": request}] if isinstance(request, str) else list(request)
            if body["messages"][-1]["role"] == "assistant":  # continue that reply (vLLM's chat extension)
                body |= {"continue_final_message": True, "add_generation_prompt": False}
        elif isinstance(request, str):
            body["prompt"] = request
        else:
            raise ValueError("the completions endpoint takes raw prompt strings; use endpoint='chat' for conversations")
        return body

    async def _send(
        self,
        client: httpx.AsyncClient,
        semaphore: asyncio.Semaphore,
        in_flight: dict[str, int],
        index: int,
        body: dict[str, Any],
        secret: str | None,
        parse,
    ):
        failure, server = "", None
        for attempt in range(self.max_retries + 1):
            server = self._pick(in_flight, index + attempt, avoid=server)
            url = f"{server}/{PATHS[self.endpoint]}"
            wait = None
            async with semaphore:
                in_flight[server] += 1
                try:
                    response = await client.post(url, json=body)
                except RETRY_ERRORS as e:
                    failure = f"{type(e).__name__} from {url}"
                else:
                    if response.status_code == 200:
                        return parse(response, url, secret)
                    failure = f"HTTP {response.status_code} from {url}: {_redact(response.text[:300], secret)}"
                    if response.status_code not in RETRY_STATUS and response.status_code < 500:
                        raise BackendError(f"request {index}: {failure}")
                    wait = parse_retry_after(response.headers)
                finally:
                    in_flight[server] -= 1
            if attempt == self.max_retries:
                break
            if wait is None:
                delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap)
            else:
                delay = min(wait, MAX_RETRY_AFTER)
            logger.warning("request %d attempt %d: %s; retrying in %.2f s", index, attempt + 1, failure, delay)
            await asyncio.sleep(delay)
        raise BackendError(f"request {index} failed after {self.max_retries + 1} attempts; last: {failure}")

    def _pick(self, in_flight: dict[str, int], turn: int, avoid: str | None) -> str:
        """The least busy server other than `avoid` (the one that just failed); ties rotate with `turn`."""
        k = turn % len(self.base_urls)
        candidates = [u for u in self.base_urls[k:] + self.base_urls[:k] if u != avoid] or self.base_urls
        return min(candidates, key=in_flight.__getitem__)

    def _text(self, response: httpx.Response, url: str, secret: str | None) -> str:
        try:
            choice = response.json()["choices"][0]
            text = choice["message"]["content"] if self.endpoint == "chat" else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            snippet = _redact(response.text[:300], secret)
            raise BackendError(f"malformed reply from {url} ({type(e).__name__}): {snippet}") from None
        return text or ""


def _choice_distribution(top: dict[str, float], choices: list[str]) -> list[float] | None:
    """Probabilities of `choices` among the top tokens (whitespace-stripped match, summed over
    variants such as "1" and " 1"), renormalised; None when none of them is there."""
    mass = [0.0] * len(choices)
    for token, logprob in top.items():
        for j, c in enumerate(choices):
            if token.strip() == c:
                mass[j] += math.exp(logprob)
    total = sum(mass)
    return [m / total for m in mass] if total > 0 else None


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text

