"""The server's replies in OpenAI's shapes: completions and chat completions (whole or streamed as
server-sent events), errors, and a request's sampling settings."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from personalign.llm.base import GenerationConfig
from personalign.llm.local import Completion
from personalign.serve.schemas import MAX_N, GenerationBody


def completion_reply(kind: str, model: str, results: list[Completion], prompts: list[str] | None, n: int = 1
                     ) -> dict[str, Any]:
    """OpenAI's reply of `kind` (chat.completion or text_completion): `n` choices per prompt, usage counting
    each prompt once; `prompts` (the rendered ones) under `personalign.prompts` when given."""
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
        "model": model,
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


def error(status: int, message: str) -> JSONResponse:
    """OpenAI's error shape."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


def generation_config(body: GenerationBody, max_tokens: int) -> GenerationConfig:
    """The sampling settings of a request (OpenAI's defaults where it names none); 400 when out of range."""
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


def wants_usage(body: GenerationBody) -> bool:
    """`stream_options.include_usage`: a usage chunk ends the stream."""
    return bool(body.stream_options and body.stream_options.get("include_usage"))


def stream(reply: dict[str, Any], include_usage: bool) -> StreamingResponse:
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
