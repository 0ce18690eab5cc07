"""The OpenAI routes: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`."""
from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from personalign.llm.base import GenerationConfig
from personalign.serve.memory import MEMORY_HEADER, memory_prompt
from personalign.serve.prompts import PromptError, conditioning, render_chat, render_completion
from personalign.serve.replies import generation_config, stream, wants_usage
from personalign.serve.schemas import ChatBody, CompletionBody
from personalign.serve.state import ServerState, server_state
from personalign.serve.views import request_view

router = APIRouter(prefix="/v1")
State = Annotated[ServerState, Depends(server_state)]


@router.get("/models")
async def models(s: State) -> dict[str, Any]:
    card = {"id": s.name, "object": "model", "created": s.created, "owned_by": "personalign"}
    return {"object": "list", "data": [card]}


@router.post("/chat/completions")
async def chat(body: ChatBody, request: Request, s: State):
    config = generation_config(body, s.max_tokens(body.max_completion_tokens or body.max_tokens))
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    user_id = s.acting_user(request, body.user)
    used = None
    try:
        if s.store is not None and body.persona is None and body.profile is None:
            user = await asyncio.to_thread(s.store.user_context, user_id) if user_id is not None else None
            prompt, used = memory_prompt(user, messages, s.memory_view, s.tokenizer)
        else:
            view = request_view(s.view)
            prompt = render_chat(messages, view, s.template, s.tokenizer, conditioning(view, body.persona, body.profile))
    except (PromptError, ValueError) as e:
        raise HTTPException(400, str(e)) from None
    if s.rerank > 1 and s.user_model is not None:  # the best of several samples: streamed whole
        reply = await _reranked(s, prompt, messages, config, body, user_id)
        response = stream(reply, wants_usage(body)) if body.stream else JSONResponse(reply)
    elif body.stream:
        response = s.stream("chat.completion", [prompt] * body.n, config, body.n, wants_usage(body))
    else:
        response = JSONResponse(s.reply("chat.completion", await s.generate([prompt] * body.n, config), [prompt],
                                        body.n))
    if used is not None:
        response.headers[MEMORY_HEADER] = used
    return response


async def _reranked(s: ServerState, prompt: str, messages: list[dict], config: GenerationConfig, body: ChatBody,
                    user_id: str | None) -> dict[str, Any]:
    """The best of `rerank` samples under the user's reward, as a one-choice reply."""
    if body.n != 1:
        raise HTTPException(400, "n must be 1 when the server reranks (--rerank)")
    if body.temperature is None:
        config = config.model_copy(update={"temperature": 1.0})
    results = await s.generate([prompt] * s.rerank, config)
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    scores, _ = await asyncio.to_thread(s.user_model.rewards, user_id, question, [r.text for r in results])
    best = max(range(len(results)), key=scores.__getitem__)
    reply = s.reply("chat.completion", [results[best]], [prompt])
    if body.model_extra and body.model_extra.get("return_candidates"):
        reply.setdefault("personalign", {})["candidates"] = [
            {"text": r.text, "reward": score} for r, score in zip(results, scores)]
    return reply


@router.post("/completions")
async def completions(body: CompletionBody, s: State):
    config = generation_config(body, s.max_tokens(body.max_tokens))
    raw = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not raw or not all(raw):
        raise HTTPException(400, "`prompt` is empty")
    try:
        block = conditioning(s.view, body.persona, body.profile)
        prompts = [render_completion(p, s.view, s.template, s.tokenizer, block) for p in raw]
    except PromptError as e:
        raise HTTPException(400, str(e)) from None
    each = [p for p in prompts for _ in range(body.n)]
    if body.stream:
        return s.stream("text_completion", each, config, body.n, wants_usage(body))
    return s.reply("text_completion", await s.generate(each, config), prompts, body.n)
