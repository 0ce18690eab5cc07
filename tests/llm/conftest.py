"""A fault-injecting OpenAI-compatible server on 127.0.0.1 (raw asyncio, in a background thread).

Each request names its id in the prompt (`req-<n>`). The server answers the n-th attempt for an
id with the n-th action of that id's schedule (the last action repeats): `ok` (a 200 reply,
counted as a success), `429` (with Retry-After), `500`, `400`, `400echo` (a 400 whose body echoes
the Authorization header back), `slow` (a late 200 after the client has given up; not a success)
or `drop` (close the connection without answering).
"""
from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import defaultdict

import pytest

REASONS = {200: "OK", 400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error"}


class FaultServer:
    def __init__(self, schedule: dict[int, list[str]] | None = None, default: list[str] | None = None,
                 retry_after: float = 0.2, slow_s: float = 12.0):
        self.schedule = schedule or {}
        self.default = default or ["ok"]
        self.retry_after = retry_after
        self.slow_s = slow_s
        self.attempts: dict[int, list[tuple[str, float]]] = defaultdict(list)  # id -> [(action, arrival time)]
        self.sent_429: dict[int, list[float]] = defaultdict(list)
        self.successes: dict[int, int] = defaultdict(int)
        self.authorizations: list[str | None] = []
        self.bodies: dict[int, dict] = {}
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()

    def __enter__(self) -> FaultServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(ready),), daemon=True)
        self._thread.start()
        assert ready.wait(10), "fault server did not start"
        return self

    def __exit__(self, *exc) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _main(self, ready: threading.Event) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        ready.set()
        await self._stop.wait()
        server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        arrived = time.monotonic()
        request_line, *header_lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        body = json.loads(await reader.readexactly(int(headers.get("content-length", 0))))
        self.authorizations.append(headers.get("authorization"))
        text = body["prompt"] if "prompt" in body else body["messages"][-1]["content"]
        rid = int(re.search(r"req-(\d+)", text).group(1))
        plan = self.schedule.get(rid, self.default)
        action = plan[min(len(self.attempts[rid]), len(plan) - 1)]
        self.attempts[rid].append((action, arrived))
        if action == "drop":
            return
        if action == "slow":
            await asyncio.sleep(self.slow_s)
            await self._reply(writer, 200, self._completion(body, rid))
        elif action == "ok":
            self.successes[rid] += 1
            self.bodies[rid] = body
            await self._reply(writer, 200, self._completion(body, rid))
        elif action == "429":
            await self._reply(writer, 429, {"error": {"message": "slow down"}}, {"Retry-After": str(self.retry_after)})
            self.sent_429[rid].append(time.monotonic())
        elif action == "400echo":
            await self._reply(writer, 400, {"error": {"message": f"bad key {headers.get('authorization')}"}})
        else:
            await self._reply(writer, int(action[:3]), {"error": {"message": action}})

    @staticmethod
    def _completion(body: dict, rid: int) -> dict:
        if "prompt" in body:
            return {"object": "text_completion", "choices": [{"index": 0, "text": f"answer-{rid}", "finish_reason": "stop"}]}
        message = {"role": "assistant", "content": f"answer-{rid}"}
        return {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, status: int, payload: dict, extra: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        lines = [f"HTTP/1.1 {status} {REASONS[status]}", "Content-Type: application/json",
                 f"Content-Length: {len(data)}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        await writer.drain()


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here runs a tiny model."""


@pytest.fixture
def fault_server():
    """Factory: `with fault_server(schedule) as server:` runs a FaultServer on a free loopback port."""
    return FaultServer
