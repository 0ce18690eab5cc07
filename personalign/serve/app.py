"""An OpenAI-compatible server over a local (personalized) model.

Routes: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`, in OpenAI's
request and response shapes (usage and finish_reason included; `n` choices per prompt; `stream=true`
answers as server-sent events carrying each whole choice in one chunk, since generation is batched).
With an `api_key` every /v1 route needs `Authorization: Bearer <key>` (401 otherwise), as vLLM's
`--api-key`; the key is compared in constant time and never logged.
Besides OpenAI's fields a request may carry `persona` (persona view) or `profile` (pba view): see
`personalign.serve.prompts`. Concurrent requests are batched by `personalign.serve.batching`.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from personalign.errors import UserError
from personalign.llm.base import BackendConfig, GenerationConfig
from personalign.llm.local import Completion, LocalBackend
from personalign.models.settings import ModelSettings
from personalign.serve.batching import Batcher
from personalign.serve.memory import (
    MEMORY_HEADER,
    MEMORY_VIEWS,
    USER_HEADER,
    KeyRing,
    PersonaRefresher,
    allowed_user,
    memory_prompt,
)
from personalign.serve.prompts import SERVE_VIEWS, PromptError, conditioning, render_chat, render_completion
from personalign.views.build import ViewConfig
from personalign.views.templates import check_view

DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 2048  # the most new tokens one choice may ask for (`max_tokens_limit`): one request cannot stall the rest
MAX_N = 16  # choices per request
MAX_REQUEST_ID = 200  # characters of a `request_id` or an `Idempotency-Key` header
API_KEY_ENV = "PERSONALIGN_API_KEY"
MAX_BODY_BYTES = 1 << 20  # request bodies over 1 MiB get 413


class _Body(BaseModel):
    """Fields shared by both endpoints; unknown OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=0)  # vLLM's sampling extension
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    persona: str | None = None
    profile: str | None = None
    user: str | None = None  # OpenAI's end-user id: selects the user's memory


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _text_parts(cls, value: Any) -> Any:
        for part in value if isinstance(value, list) else ():
            if part.get("type") == "text" and not isinstance(part.get("text"), str):
                raise ValueError("a text content part needs `text` as a string")
        return value

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatBody(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionBody(_Body):
    prompt: str | list[str]


class FeedbackBody(BaseModel):
    """A preference (prompt, chosen, rejected) or a comment (prompt, comment) for a user; `request_id`
    (or an `Idempotency-Key` header) makes a retried request count once."""

    model_config = ConfigDict(extra="forbid")

    user: str | None = None
    prompt: str
    chosen: str | None = None
    rejected: str | None = None
    comment: str | None = None
    direction: list[float] | None = None  # the item's 90 AlignX values (0, 0.5, 1): pba profiles use them
    request_id: str | None = Field(None, max_length=MAX_REQUEST_ID)


class RewardsBody(BaseModel):
    """Responses to score under a user's model (`--user-model`)."""

    model_config = ConfigDict(extra="forbid")

    user: str | None = None
    prompt: str
    responses: list[str] = Field(min_length=1, max_length=MAX_N)


def create_app(
    backend_or_model: LocalBackend | str | os.PathLike | None,
    *,
    view: str = "persona",
    template: str = "chat",
    max_batch: int = 8,
    batch_window: float = 0.01,
    model_name: str | None = None,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    max_tokens_limit: int = MAX_TOKENS_LIMIT,
    echo_prompt: bool = False,
    model_settings: ModelSettings | None = None,
    api_key: str | None = None,
    memory: Any = None,
    user_keys: dict[str, str] | None = None,
    max_prompt_tokens: int = 2048,
    max_body_bytes: int = MAX_BODY_BYTES,
    persona_refresh: PersonaRefresher | None = None,
    user_model: Any = None,
    rerank: int = 0,
) -> FastAPI:
    """The FastAPI app; `backend_or_model` is a `LocalBackend` or a model name/directory (None = embedded default).

    `echo_prompt` adds the rendered prompt(s) to each response as `personalign.prompts` (for debugging);
    `model_settings` (dtype, attention kernel, remote code) say how a model named here is loaded.
    `memory` (a `MemoryStore` or its URL) turns on per-user memory (`personalign.serve.memory`): chats
    render `view` from the user's memory within `max_prompt_tokens`, and the feedback and user routes
    exist; `user_keys` ({key: user id}) are keys scoped to one user. Bodies over `max_body_bytes` get 413
    (checked after the key, and a chunked body is read only up to the limit); `max_tokens` above
    `max_tokens_limit` gets 400.
    `persona_refresh` re-infers a user's persona in the background after new pairs.
    `user_model` (an `OnlineUsers`, needs `memory`) refits each user's state on every new pair and
    serves `/v1/rewards`; `rerank` > 1 answers chats with the best of that many samples under it.
    """
    store = None
    if memory is not None:
        from personalign.memory.store import MemoryStore  # sqlalchemy: the `memory` extra

        store = MemoryStore(memory) if isinstance(memory, str) else memory
    allowed = MEMORY_VIEWS if store is not None else SERVE_VIEWS
    if view not in allowed:
        raise ValueError(f"view must be one of {', '.join(allowed)}; got {view!r}"
                         + ("" if store is not None else " (ica and demo need --memory)"))
    check_view(template, view)
    if isinstance(backend_or_model, LocalBackend):
        backend = backend_or_model
    else:
        model = None if backend_or_model is None else str(backend_or_model)
        backend = LocalBackend.from_config(BackendConfig(kind="local", model=model, batch_size=max_batch,
                                                         **(model_settings or ModelSettings()).load_kwargs()))
    name = model_name or (Path(backend.name).name if backend.name else "personalign")
    batcher = Batcher(backend, max_batch=max_batch, window=batch_window)
    tokenizer = backend.tokenizer
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            if persona_refresh is not None:
                persona_refresh.close()

    app = FastAPI(title="personalign", lifespan=lifespan)
    keys = KeyRing(api_key, user_keys)
    memory_view = ViewConfig(view=view, template=template, max_length=max_prompt_tokens) if store is not None else None

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        request.state.scope = None
        if keys.required and request.url.path.startswith("/v1"):  # the key first: no body is read without it
            ok, request.state.scope = keys.scope(request.headers.get("authorization", ""))
            if not ok:
                return _error(401, "invalid or missing API key: send 'Authorization: Bearer <key>'")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            return _error(413, f"request body over {max_body_bytes} bytes")
        if length is None and request.method in ("POST", "PUT", "PATCH"):
            body = bytearray()
            async for chunk in request.stream():  # chunked: stop reading at the limit
                body += chunk
                if len(body) > max_body_bytes:
                    return _error(413, f"request body over {max_body_bytes} bytes")
            request._body = bytes(body)  # starlette's cache of the body, read again by the route
        key = request.headers.get("idempotency-key")
        if key is not None and len(key) > MAX_REQUEST_ID:
            return _error(400, f"Idempotency-Key over {MAX_REQUEST_ID} characters")
        return await call_next(request)

    def max_tokens(asked: int | None) -> int:
        if asked is not None and asked > max_tokens_limit:
            raise HTTPException(400, f"max_tokens must be at most {max_tokens_limit} on this server, got {asked}")
        return asked or default_max_tokens

    def acting_user(request: Request, requested: str | None) -> str | None:
        try:
            return allowed_user(request.state.scope, requested or request.headers.get(USER_HEADER))
        except PermissionError as e:
            raise HTTPException(403, str(e)) from None

    def require_memory() -> None:
        if store is None:
            raise HTTPException(404, "this server has no user memory (start it with --memory)")

    async def in_memory(method: str, *args: Any, **kwargs: Any) -> Any:
        """Run a store method off the event loop; a refused request (the store's ValueError) is a 400."""
        require_memory()
        try:
            return await asyncio.to_thread(getattr(store, method), *args, **kwargs)
        except ValueError as e:  # RequestIdConflict: the id names another item (409)
            raise HTTPException(409 if type(e).__name__ == "RequestIdConflict" else 400, str(e)) from None

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
        return _error(400, f"invalid request: {where}")

    @app.exception_handler(StarletteHTTPException)  # also routing's 404 and 405: OpenAI's error shape everywhere
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": name, "object": "model", "created": created, "owned_by": "personalign"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, request: Request):
        config = _generation_config(body, max_tokens(body.max_completion_tokens or body.max_tokens))
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        user_id = acting_user(request, body.user)
        used = None
        try:
            if store is not None and body.persona is None and body.profile is None:
                user = await asyncio.to_thread(store.user_context, user_id) if user_id is not None else None
                prompt, used = memory_prompt(user, messages, memory_view, tokenizer)
            else:
                block = conditioning(view if view in SERVE_VIEWS else "none", body.persona, body.profile)
                prompt = render_chat(messages, view if view in SERVE_VIEWS else "none", template, tokenizer, block)
        except (PromptError, ValueError) as e:
            raise HTTPException(400, str(e)) from None
        if rerank > 1 and user_model is not None:
            reply = await reranked(prompt, messages, config, body, user_id)
        else:
            results = await generate([prompt] * body.n, config)
            reply = _reply("chat.completion", results, [prompt] if echo_prompt else None, body.n)
        response = _stream(reply, _wants_usage(body)) if body.stream else JSONResponse(reply)
        if used is not None:
            response.headers[MEMORY_HEADER] = used
        return response

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackBody, request: Request):
        require_memory()
        user_id = acting_user(request, body.user)
        if user_id is None:
            raise HTTPException(400, "name the user: `user` in the body or an X-User-Id header")
        request_id = body.request_id or request.headers.get("idempotency-key")
        pair = body.chosen is not None or body.rejected is not None
        if pair == (body.comment is not None) or (pair and (body.chosen is None or body.rejected is None)):
            raise HTTPException(400, "send either `chosen` and `rejected` (a preference) or `comment`")
        if pair:
            direction = body.direction
            if direction is None and user_model is not None:
                direction = await asyncio.to_thread(user_model.direction, body.prompt, body.chosen, body.rejected)
            written = await in_memory("add_pair", user_id, body.prompt, body.chosen, body.rejected,
                                      request_id=request_id, direction=direction)
        else:
            written = await in_memory("add_comment", user_id, body.prompt, body.comment, request_id=request_id,
                                      direction=body.direction)
        if pair and written.created and persona_refresh is not None:
            persona_refresh.pair_added(user_id)
        reply = {"object": "feedback", "id": written.item_id, "created": written.created,
                 "kind": "pair" if pair else "comment"}
        if user_model is not None:  # the user's state is refitted before the reply
            reply["refit"] = await asyncio.to_thread(user_model.refit, user_id)
        return reply

    @app.post("/v1/rewards")
    async def rewards(body: RewardsBody, request: Request):
        if user_model is None:
            raise HTTPException(404, "this server has no user model (start it with --user-model)")
        user_id = acting_user(request, body.user)
        scores, pairs = await asyncio.to_thread(user_model.rewards, user_id, body.prompt, body.responses)
        return {"object": "rewards", "user": user_id, "rewards": scores, "fitted_on_pairs": pairs,
                "representation": user_model.representation}

    async def reranked(prompt: str, messages: list[dict], config: GenerationConfig, body: ChatBody,
                       user_id: str | None) -> dict[str, Any]:
        """The best of `rerank` samples under the user's reward, as a one-choice reply."""
        if body.n != 1:
            raise HTTPException(400, "n must be 1 when the server reranks (--rerank)")
        if body.temperature is None:
            config = config.model_copy(update={"temperature": 1.0})
        results = await generate([prompt] * rerank, config)
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        scores, _ = await asyncio.to_thread(user_model.rewards, user_id, question, [r.text for r in results])
        best = max(range(len(results)), key=scores.__getitem__)
        reply = _reply("chat.completion", [results[best]], [prompt] if echo_prompt else None)
        if body.model_extra and body.model_extra.get("return_candidates"):
            reply.setdefault("personalign", {})["candidates"] = [
                {"text": r.text, "reward": s} for r, s in zip(results, scores)]
        return reply

    @app.get("/v1/users/{user_id}/history")
    async def history(user_id: str, request: Request):
        acting_user(request, user_id)
        doc = await in_memory("history", user_id)
        if doc is None:
            raise HTTPException(404, "no memory for this user")
        return {"object": "user.history", **doc}

    @app.delete("/v1/users/{user_id}")
    async def delete_user(user_id: str, request: Request):
        acting_user(request, user_id)
        rows = await in_memory("delete_user", user_id)
        if persona_refresh is not None:
            persona_refresh.forget(user_id)
        return {"object": "user.deleted", "deleted": rows > 0, "rows": rows}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody):
        config = _generation_config(body, max_tokens(body.max_tokens))
        raw = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not raw or not all(raw):
            raise HTTPException(400, "`prompt` is empty")
        try:
            block = conditioning(view, body.persona, body.profile)
            prompts = [render_completion(p, view, template, tokenizer, block) for p in raw]
        except PromptError as e:
            raise HTTPException(400, str(e)) from None
        results = await generate([p for p in prompts for _ in range(body.n)], config)
        reply = _reply("text_completion", results, prompts if echo_prompt else None, body.n)
        if body.stream:
            return _stream(reply, _wants_usage(body))
        return reply

    async def generate(prompts: list[str], config: GenerationConfig) -> list[Completion]:
        try:
            return await batcher.submit(prompts, config)
        except Exception as e:  # noqa: BLE001 - the client gets an OpenAI-shaped 500, the connection stays usable
            raise HTTPException(500, f"generation failed: {type(e).__name__}: {e}") from None

    def _reply(kind: str, results: list[Completion], prompts: list[str] | None, n: int = 1) -> dict[str, Any]:
        chat_kind = kind == "chat.completion"
        choices = []
        for i, r in enumerate(results):
            choice: dict[str, Any] = {"index": i, "finish_reason": r.finish_reason, "logprobs": None}
            choice.update({"message": {"role": "assistant", "content": r.text}} if chat_kind else {"text": r.text})
            choices.append(choice)
        prompt_tokens = sum(r.prompt_tokens for r in results[::n])  # each prompt once, as OpenAI counts
        completion_tokens = sum(r.completion_tokens for r in results)
        reply = {
            "id": f"{'chatcmpl' if chat_kind else 'cmpl'}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        if prompts is not None:
            reply["personalign"] = {"prompts": prompts}
        return reply

    return app


def _error(status: int, message: str) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


def _generation_config(body: _Body, max_tokens: int) -> GenerationConfig:
    if not 1 <= body.n <= MAX_N:
        raise HTTPException(400, f"n must be between 1 and {MAX_N}, got {body.n}")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    try:
        return GenerationConfig(
            max_new_tokens=max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=body.top_k or 0,
            stop=stop,
            seed=body.seed or 0,
        )
    except ValidationError as e:
        detail = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise HTTPException(400, f"invalid generation settings: {detail}") from None


def _wants_usage(body: _Body) -> bool:
    return bool(body.stream_options and body.stream_options.get("include_usage"))


def _stream(reply: dict[str, Any], include_usage: bool) -> StreamingResponse:
    """OpenAI's streaming shape: content chunks, then a finish chunk, optionally a usage chunk, then [DONE]."""
    chat_kind = reply["object"] == "chat.completion"
    base = {k: reply[k] for k in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk" if chat_kind else "text_completion"
    chunks = []
    for choice in reply["choices"]:
        i, text = choice["index"], choice["message"]["content"] if chat_kind else choice["text"]
        if chat_kind:
            chunks.append({"index": i, "delta": {"role": "assistant", "content": text}, "finish_reason": None})
            chunks.append({"index": i, "delta": {}, "finish_reason": choice["finish_reason"]})
        else:
            chunks.append({"index": i, "text": text, "finish_reason": choice["finish_reason"]})
    events = [{**base, "choices": [c]} for c in chunks]
    if include_usage:
        events.append({**base, "choices": [], "usage": reply["usage"]})

    def lines() -> Iterator[str]:
        for event in events:
            yield f"data: {json.dumps(event)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream")


def check_port(host: str, port: int) -> None:
    """Fail before the model loads when `host:port` cannot be listened on (in use, no such address)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, OverflowError) as e:
        raise UserError(f"cannot listen on {host}:{port}: {e}", option="--host") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}", option="--port") from None


def serve(
    model: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    access_log: bool = True,
    **app_kwargs: Any,
) -> None:
    """Load `model` and serve it until interrupted; `app_kwargs` go to `create_app`. SIGTERM waits at most
    10 s for requests in flight."""
    uvicorn.run(create_app(model, **app_kwargs), host=host, port=port, log_level=log_level, access_log=access_log,
                timeout_graceful_shutdown=10)


@contextlib.contextmanager
def serve_in_background(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run `app` with uvicorn in a daemon thread; yields its base URL (`http://host:port/v1`).

    Port 0 picks a free port. The server stops (and the thread ends) when the block exits.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="personalign-serve")
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
