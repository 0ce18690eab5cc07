"""Iteration-level scheduling: concurrent requests are collected into batches (`LocalBackend.decodings`)
that advance a decoding step at a time, shortest budget first, so a short chat does not wait for a long
answer to end; a streamed request watches its tokens as they come, and stops when its client goes away."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from personalign.llm.base import GenerationConfig
from personalign.llm.local import Completion, Decoding, LocalBackend

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


@dataclass(slots=True)
class _Running:
    """A batch being decoded, with the jobs its rows answer (in row order) and how its last step went."""

    jobs: list[_Job]
    decoding: Decoding
    alive: bool = True
    error: Exception | None = None
    waited: int = 0  # rounds since this batch last advanced

    def step(self) -> None:
        try:
            self.alive = self.decoding.step()
        except Exception as e:  # noqa: BLE001 - the batch's requests get the error, the others go on
            self.alive, self.error = False, e

    def settle(self) -> None:
        """Answer every job of a finished batch (a client that went away has a done future already)."""
        if self.error is not None:
            logger.error("batched generation of %d prompts failed", len(self.jobs), exc_info=self.error)
        results = self.decoding.completions() if self.error is None else [None] * len(self.jobs)
        for job, result in zip(self.jobs, results):
            if job.future.done():
                continue
            if self.error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(self.error)


class Batcher:
    """A queue plus one background worker that schedules decoding steps.

    When nothing runs, the worker takes the first waiting prompt, then keeps collecting for up to
    `window` seconds or until `max_batch` prompts are waiting. Prompts that arrive while batches run
    form a new batch at the next round (up to `max_running` batches at once). Each batch holds one set
    of generation settings. Every round advances, by one decoding step in a thread (the event loop
    keeps accepting requests meanwhile), the batch with the fewest tokens left to its `max_tokens`,
    and every batch that has waited `patience` rounds: short answers finish first, and a long answer
    still gets at least one step in `patience + 1` rounds.
    """

    def __init__(self, backend: LocalBackend, max_batch: int = 8, window: float = 0.01, max_running: int = 4,
                 patience: int = 3):
        if max_batch < 1 or max_running < 1 or patience < 0:
            raise ValueError("max_batch and max_running must be at least 1, patience at least 0")
        self.backend = backend
        self.max_batch = max_batch
        self.window = window
        self.max_running = max_running
        self.patience = patience
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
        running: list[_Running] = []
        while True:
            if len(running) < self.max_running and (jobs := self._waiting() if running else await self._collect()):
                running += await asyncio.to_thread(self._batches, jobs)
            if chosen := self._round(running):
                await asyncio.to_thread(lambda: [r.step() for r in chosen])
            for r in running:
                if not r.alive:
                    r.settle()
            running = [r for r in running if r.alive]

    def _round(self, running: list[_Running]) -> list[_Running]:
        """The batches to advance this round: the one with the fewest tokens left to its `max_tokens`
        (so short answers are not slowed by long ones), and every batch that has waited `patience`
        rounds (so a long answer keeps going at a steady share)."""
        alive = [r for r in running if r.alive]
        if not alive:
            return []
        first = min(alive, key=lambda r: r.decoding.config.max_new_tokens - r.decoding.steps)
        chosen = [r for r in alive if r is first or r.waited >= self.patience]
        for r in alive:
            r.waited = 0 if r in chosen else r.waited + 1
        return chosen

    async def _collect(self) -> list[_Job]:
        """Wait for a first prompt, then collect more for up to `window` seconds, `max_batch` at most."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
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
        return jobs

    def _waiting(self) -> list[_Job]:
        """The prompts waiting now, `max_batch` at most, without waiting for more."""
        assert self._queue is not None
        jobs: list[_Job] = []
        while len(jobs) < self.max_batch and not self._queue.empty():
            jobs.append(self._queue.get_nowait())
        return jobs

    def _batches(self, jobs: list[_Job]) -> list[_Running]:
        """The live jobs as batches, one set of generation settings each; a group that cannot be encoded is a
        finished batch with its error. Run in a thread (it tokenizes); futures are settled by the loop."""
        groups: dict[str, list[_Job]] = {}
        for job in jobs:
            if not job.future.done():  # a client that went away cancels its future
                groups.setdefault(job.config.model_dump_json(), []).append(job)
        batches = []
        for group in groups.values():
            try:
                parts = self.backend.decodings([j.prompt for j in group], group[0].config,
                                               lambda i, tokens, group=group: group[i].watch(tokens))
            except Exception as e:  # noqa: BLE001 - a prompt that cannot be encoded fails its group only
                batches.append(_Running(group, None, alive=False, error=e))  # type: ignore[arg-type]
                continue
            batches += [_Running([group[i] for i in indices], decoding) for indices, decoding in parts]
        return batches
