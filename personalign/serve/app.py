"""An OpenAI-compatible server over a local (personalized) model.

Routes: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`, in OpenAI's
request and response shapes (usage and finish_reason included; `n` choices per prompt; `stream=true`
answers as server-sent events as the tokens are generated, and a client that leaves stops its generation:
`personalign.serve.streaming`).
With an `api_key` every /v1 route needs `Authorization: Bearer <key>` (401 otherwise), as vLLM's
`--api-key`; the key is compared in constant time and never logged.
Besides OpenAI's fields a request may carry `persona` (persona view) or `profile` (pba view): see
`personalign.serve.prompts`. Concurrent requests are batched by `personalign.serve.batching`.

The app is its routers (`openai_routes`, `memory_routes`) over one `ServerState`, the request
schemas (`schemas`), OpenAI's reply shapes (`replies`) and the view rules (`views`).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from personalign.errors import UserError
from personalign.llm.base import BackendConfig
from personalign.llm.local import LocalBackend
from personalign.models.settings import ModelSettings
from personalign.serve import memory_routes, openai_routes
from personalign.serve.batching import Batcher
from personalign.serve.memory import KeyRing, PersonaRefresher
from personalign.serve.replies import error
from personalign.serve.schemas import MAX_REQUEST_ID
from personalign.serve.state import ServerState
from personalign.serve.ui import UI_PATH, ui_page
from personalign.serve.views import check_serve_view
from personalign.views.build import ViewConfig

DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 2048  # the most new tokens one choice may ask for (`max_tokens_limit`): one request cannot stall the rest
API_KEY_ENV = "PERSONALIGN_API_KEY"
MAX_BODY_BYTES = 1 << 20  # request bodies over 1 MiB get 413
BODY_TIMEOUT = 30.0  # seconds to receive a whole request body: a Content-Length larger than the body gets 408


def create_app(
    backend_or_model: LocalBackend | str | os.PathLike | None,
    *,
    view: str = "persona",
    template: str = "chat",
    max_batch: int = 8,
    batch_window: float = 0.01,
    max_running: int = 4,
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
    body_timeout: float = BODY_TIMEOUT,
    persona_refresh: PersonaRefresher | None = None,
    user_model: Any = None,
    rerank: int = 0,
    ui: bool = False,
) -> FastAPI:
    """The FastAPI app; `backend_or_model` is a `LocalBackend` or a model name/directory (None = embedded default).

    `echo_prompt` adds the rendered prompt(s) to each response as `personalign.prompts` (for debugging);
    `model_settings` (dtype, attention kernel, remote code) say how a model named here is loaded. Up to `max_running`
    batches of up to `max_batch` requests decode at once, a step each in turn (`Batcher`). `memory` (a `MemoryStore`
    or its URL) turns on per-user memory (`personalign.serve.memory`): chats render `view` from the user's memory
    within `max_prompt_tokens`, and the feedback and user routes exist; `user_keys` ({key: user id}) are keys scoped
    to one user. Bodies over `max_body_bytes` get 413 (checked after the key, and a chunked body is read only up to
    the limit), and a body not received within `body_timeout` seconds (a Content-Length larger than the body) gets
    408; `max_tokens` above `max_tokens_limit` gets 400. `persona_refresh` re-infers a user's persona in the
    background after new pairs. `user_model` (an `OnlineUsers`, needs `memory`) refits each user's state on every new
    pair and serves `/v1/rewards`; `rerank` > 1 answers chats with the best of that many samples under it. `ui` serves
    the page of `personalign.serve.ui` at `/ui` (it needs `memory`).
    """
    store = None
    if memory is not None:
        from personalign.memory.store import MemoryStore  # sqlalchemy: the `memory` extra

        store = MemoryStore(memory) if isinstance(memory, str) else memory
    check_serve_view(view, template, memory=store is not None)
    if isinstance(backend_or_model, LocalBackend):
        backend = backend_or_model
    else:
        model = None if backend_or_model is None else str(backend_or_model)
        backend = LocalBackend.from_config(BackendConfig(kind="local", model=model, batch_size=max_batch,
                                                         **(model_settings or ModelSettings()).load_kwargs()))
    state = ServerState(
        name=model_name or (Path(backend.name).name if backend.name else "personalign"), created=int(time.time()),
        batcher=Batcher(backend, max_batch=max_batch, window=batch_window, max_running=max_running), tokenizer=backend.tokenizer,
        view=view, template=template, keys=KeyRing(api_key, user_keys), default_max_tokens=default_max_tokens,
        max_tokens_limit=max_tokens_limit, max_body_bytes=max_body_bytes, body_timeout=body_timeout,
        echo_prompt=echo_prompt, store=store,
        memory_view=ViewConfig(view=view, template=template, max_length=max_prompt_tokens) if store is not None else None,
        persona_refresh=persona_refresh, user_model=user_model, rerank=rerank,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.batcher.start()
        try:
            yield
        finally:
            await state.batcher.stop()
            if persona_refresh is not None:
                persona_refresh.close()

    app = FastAPI(title="personalign", lifespan=lifespan)
    app.state.personalign = state
    app.middleware("http")(_guard)
    app.exception_handler(RequestValidationError)(_invalid)
    app.exception_handler(StarletteHTTPException)(_http_error)  # also routing's 404 and 405: OpenAI's shape everywhere
    app.include_router(openai_routes.router)
    app.include_router(memory_routes.router)
    if ui:
        _mount_ui(app, state)
    return app


def _mount_ui(app: FastAPI, s: ServerState) -> None:
    """The page of `personalign.serve.ui` at `/ui` (it stores picks: the user memory is needed)."""
    if s.store is None:
        raise UserError("the page stores what a person picks in the user memory: --ui needs --memory", option="--ui")
    page = ui_page(s.name, rerank=s.rerank > 1 and s.user_model is not None,
                   max_tokens=min(s.default_max_tokens, s.max_tokens_limit))
    app.get(UI_PATH, response_class=HTMLResponse, include_in_schema=False)(lambda: page)


async def _guard(request: Request, call_next):
    """The key first (no body is read without it), then the body: its size (413; a chunked body is read
    only up to the limit) and the time it takes to arrive (408), then the Idempotency-Key's length."""
    s: ServerState = request.app.state.personalign
    request.state.scope = None
    if s.keys.required and request.url.path.startswith("/v1"):
        ok, request.state.scope = s.keys.scope(request.headers.get("authorization", ""))
        if not ok:
            return error(401, "invalid or missing API key: send 'Authorization: Bearer <key>'")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > s.max_body_bytes:
        return error(413, f"request body over {s.max_body_bytes} bytes")
    if request.method in ("POST", "PUT", "PATCH"):
        try:
            body = await asyncio.wait_for(_read_body(request, s.max_body_bytes), s.body_timeout)
        except TimeoutError:
            return error(408, f"request body not received within {s.body_timeout:g} s (is Content-Length "
                              "larger than the body?)")
        if body is None:
            return error(413, f"request body over {s.max_body_bytes} bytes")
        request._body = body  # starlette's cache of the body, read again by the route
    key = request.headers.get("idempotency-key")
    if key is not None and len(key) > MAX_REQUEST_ID:
        return error(400, f"Idempotency-Key over {MAX_REQUEST_ID} characters")
    return await call_next(request)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes `limit` bytes (a chunked body is not read further)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    where = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
    return error(400, f"invalid request: {where}")


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error(exc.status_code, str(exc.detail))


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
