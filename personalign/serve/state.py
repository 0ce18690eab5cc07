"""The one state object a server's routers share: the model behind its batcher, the view it renders,
its limits, its keys, and (with `--memory`) the user memory, persona refresh and user model."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import StreamingResponse

from personalign.llm.base import GenerationConfig
from personalign.llm.local import Completion
from personalign.serve.batching import Batcher
from personalign.serve.memory import USER_HEADER, KeyRing, PersonaRefresher, allowed_user
from personalign.serve.replies import completion_reply
from personalign.serve.streaming import stream_generation
from personalign.views.build import ViewConfig


@dataclass
class ServerState:
    """What every route reads; `store` is None without user memory, `memory_view` the view rendered from it."""

    name: str
    created: int
    batcher: Batcher
    tokenizer: Any
    view: str
    template: str
    keys: KeyRing
    default_max_tokens: int
    max_tokens_limit: int
    max_body_bytes: int
    body_timeout: float
    echo_prompt: bool = False
    store: Any = None
    memory_view: ViewConfig | None = None
    persona_refresh: PersonaRefresher | None = None
    user_model: Any = None
    rerank: int = 0

    def max_tokens(self, asked: int | None) -> int:
        """The new tokens a choice may take: as asked (400 over the server's limit), else the default."""
        if asked is not None and asked > self.max_tokens_limit:
            raise HTTPException(400, f"max_tokens must be at most {self.max_tokens_limit} on this server, got {asked}")
        return asked or self.default_max_tokens

    def acting_user(self, request: Request, requested: str | None) -> str | None:
        """The user a request acts for (body field, else the X-User-Id header); 403 outside its key's scope."""
        try:
            return allowed_user(request.state.scope, requested or request.headers.get(USER_HEADER))
        except PermissionError as e:
            raise HTTPException(403, str(e)) from None

    def require_memory(self) -> None:
        if self.store is None:
            raise HTTPException(404, "this server has no user memory (start it with --memory)")

    async def in_memory(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run a store method off the event loop; a refused request (the store's ValueError) is a 400."""
        self.require_memory()
        try:
            return await asyncio.to_thread(getattr(self.store, method), *args, **kwargs)
        except ValueError as e:  # RequestIdConflict: the id names another item (409)
            raise HTTPException(409 if type(e).__name__ == "RequestIdConflict" else 400, str(e)) from None

    async def generate(self, prompts: list[str], config: GenerationConfig) -> list[Completion]:
        try:
            return await self.batcher.submit(prompts, config)
        except Exception as e:  # noqa: BLE001 - the client gets an OpenAI-shaped 500, the connection stays usable
            raise HTTPException(500, f"generation failed: {type(e).__name__}: {e}") from None

    def stream(self, kind: str, prompts: list[str], config: GenerationConfig, n: int, include_usage: bool
               ) -> StreamingResponse:
        """The choices of `prompts` streamed as their tokens are generated (`streaming.stream_generation`)."""
        return stream_generation(self.batcher, self.tokenizer, self.name, kind, prompts, config, n, include_usage)

    def reply(self, kind: str, results: list[Completion], prompts: list[str], n: int = 1) -> dict[str, Any]:
        """OpenAI's reply of `kind`, with the rendered prompts when the server echoes them."""
        return completion_reply(kind, self.name, results, prompts if self.echo_prompt else None, n)


def server_state(request: Request) -> ServerState:
    """The app's state (a FastAPI dependency of every route)."""
    return request.app.state.personalign
