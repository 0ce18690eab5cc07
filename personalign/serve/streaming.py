"""Token streaming (`stream: true`): server-sent events in OpenAI's chunk shapes as the tokens are
generated, batched with every other request; when the client goes away, its generation stops.

Each choice sends only text that can no longer change: no half of a multi-byte character, and
nothing a stop string could still claim (the last `len(longest stop) - 1` characters wait for the
next token). The rest, up to the final text, follows when the choice ends, then its finish reason;
`stream_options.include_usage` adds a usage chunk; `data: [DONE]` ends the stream.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from personalign.llm.base import GenerationConfig
from personalign.llm.local import Completion, cut_at_stop
from personalign.serve.batching import Batcher


class ChoiceText:
    """One choice's text as its tokens arrive: what is safe to send, and what is left at the end."""

    def __init__(self, tokenizer: Any, stops: list[str]):
        self.tokenizer, self.stops, self.sent = tokenizer, [s for s in stops if s], ""
        self.hold = max((len(s) for s in self.stops), default=1) - 1

    def delta(self, tokens: list[int]) -> str:
        """The text of `tokens` not sent yet, less what may still change."""
        text, stopped = cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), self.stops)
        if not stopped and self.hold:
            text = text[: max(len(text) - self.hold, 0)]
        text = text.rstrip("\ufffd")  # half a character: wait for its other bytes
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        new, self.sent = text[len(self.sent):], text
        return new

    def rest(self, final: str) -> str:
        """What the final text adds to what was sent."""
        return final[len(self.sent):] if final.startswith(self.sent) else ""


def stream_generation(batcher: Batcher, tokenizer: Any, model: str, kind: str, prompts: list[str],
                      config: GenerationConfig, n: int, include_usage: bool) -> StreamingResponse:
    """Stream the choices of `prompts` (`n` per distinct prompt, in reply order) as they are generated."""
    chat = kind == "chat.completion"
    base = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk" if chat else "text_completion", "created": int(time.time()),
            "model": model}

    def event(i: int, text: str | None = None, finish: str | None = None, role: bool = False) -> str:
        if chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": i, "text": text or "", "logprobs": None, "finish_reason": finish}
        return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

    async def events() -> AsyncIterator[str]:
        loop, queue, gone = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()
        job = asyncio.ensure_future(batcher.submit(prompts, config, on_tokens=[
            _watcher(i, loop, queue, gone) for i in range(len(prompts))]))
        texts = [ChoiceText(tokenizer, config.stop) for _ in prompts]
        try:
            if chat:
                for i in range(len(prompts)):
                    yield event(i, role=True)
            async for i, tokens in _arrivals(queue, job):
                if delta := texts[i].delta(tokens):
                    yield event(i, delta)
            try:
                results: list[Completion] = job.result()
            except Exception as e:  # noqa: BLE001 - the stream has begun: the error is its last event
                error = {"message": f"generation failed: {type(e).__name__}: {e}", "type": "server_error"}
                yield f"data: {json.dumps({'error': error})}\n\ndata: [DONE]\n\n"
                return
            for i, r in enumerate(results):
                if rest := texts[i].rest(r.text):
                    yield event(i, rest)
                yield event(i, finish=r.finish_reason)
            if include_usage:
                prompt_tokens = sum(r.prompt_tokens for r in results[::n])
                completion_tokens = sum(r.completion_tokens for r in results)
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens}
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"
        finally:  # the client went away (or the stream ended): its generation stops at the next token
            gone.set()
            job.cancel()

    return StreamingResponse(events(), media_type="text/event-stream")


def _watcher(i: int, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, gone: threading.Event
             ) -> Callable[[list[int]], bool]:
    """Choice `i`'s tokens from the generating thread to the event loop; False once the client is gone."""
    def on_tokens(tokens: list[int]) -> bool:
        if gone.is_set():
            return False
        loop.call_soon_threadsafe(queue.put_nowait, (i, list(tokens)))
        return True

    return on_tokens


async def _arrivals(queue: asyncio.Queue, job: asyncio.Future) -> AsyncIterator[tuple[int, list[int]]]:
    """Each (choice, tokens so far) as it arrives, until the generation ends and the queue is empty."""
    while not job.done():
        getter = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            yield getter.result()
        else:
            getter.cancel()
    while not queue.empty():
        yield queue.get_nowait()
