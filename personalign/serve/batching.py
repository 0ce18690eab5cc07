"""Dynamic batching: concurrent requests are collected into one batched `LocalBackend.complete` call;
a streamed request watches its tokens as they come, and stops when its client goes away."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from personalign.llm.base import GenerationConfig
from personalign.llm.local import Completion, LocalBackend

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Job:
    prompt: str
    config: GenerationConfig
    future: asyncio.Future = field(repr=False)
    on_tokens: Callable[[list[int]], bool] | None = field(default=None, repr=False)

    def watch(self, tokens: list[int]) -> bool:
        """Called from the generating thread after each step: False stops this request (its client left)."""
        if self.future.done():  # cancelled: the request's handler is gone
            return False
        return True if self.on_tokens is None else self.on_tokens(tokens)


class Batcher:
    """A queue plus one background worker.

    The worker takes the first waiting prompt, then keeps collecting for up to `window` seconds or
    until `max_batch` prompts are waiting, and runs them (grouped by generation settings) as one
    batched generation in a thread, so the event loop keeps accepting requests meanwhile. Requests
    that arrive during a generation form the next batch.
    """

    def __init__(self, backend: LocalBackend, max_batch: int = 8, window: float = 0.01):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.backend = backend
        self.max_batch = max_batch
        self.window = window
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(), name="personalign-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    async def submit(self, prompts: list[str], config: GenerationConfig, *,
                     on_tokens: list[Callable[[list[int]], bool]] | None = None) -> list[Completion]:
        """Queue prompts and wait for their completions (in the order given). `on_tokens[i]` receives
        prompt i's tokens after every decoding step, in the generating thread; False stops it there."""
        if self._queue is None:
            raise RuntimeError("the batcher is not running; call start() first")
        loop = asyncio.get_running_loop()
        watchers = on_tokens or [None] * len(prompts)
        jobs = [_Job(p, config, loop.create_future(), w) for p, w in zip(prompts, watchers)]
        for job in jobs:
            self._queue.put_nowait(job)
        return list(await asyncio.gather(*(job.future for job in jobs)))

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            deadline = loop.time() + self.window
            while len(jobs) < self.max_batch:
                if not self._queue.empty():
                    jobs.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            groups: dict[str, list[_Job]] = {}
            for job in jobs:
                if not job.future.done():  # a client that went away cancels its future
                    groups.setdefault(job.config.model_dump_json(), []).append(job)
            for group in groups.values():
                await self._generate(group)

    async def _generate(self, jobs: list[_Job]) -> None:
        streamed = any(j.on_tokens is not None for j in jobs)  # only then is every step watched
        watch = {"on_tokens": lambda i, tokens: jobs[i].watch(tokens)} if streamed else {}
        try:
            results = await asyncio.to_thread(self.backend.complete, [j.prompt for j in jobs], jobs[0].config,
                                              **watch)
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error
            logger.exception("batched generation of %d prompts failed", len(jobs))
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(e)
            return
        for job, result in zip(jobs, results):
            if not job.future.done():
                job.future.set_result(result)
