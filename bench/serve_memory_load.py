"""Load and faults of `personalign serve --memory` on loopback: concurrent users mixing chats and
feedback, then the server killed mid-write and restarted.

Phase 1 (mixed load): `--users` clients at once, each doing `--ops` requests in turn: feedback (a
preference whose texts name the user) then a chat as that user, alternately. Every chat's rendered
prompt (echoed) must hold all of that user's acknowledged feedback and nothing of any other user.
Beside each memory chat, the same client sends a chat as a user with no memory (same task), so the
two latencies are measured side by side in one run.

Phase 2 (kill): every client writes feedback as fast as it can; once `--kill-after` writes are
acknowledged the server gets SIGKILL; it is restarted on the same database and every client
resends its unacknowledged writes with their request ids. Then every acknowledged write must be in
the store exactly once, and nothing is stored twice.

With `--replicas N` (N > 1), N servers share one database (`--db postgresql`: a fresh database on
the PostgreSQL at 127.0.0.1:5432, dropped afterwards). In phase 1 each user's feedback goes to one
replica and its next chat to another, so every prompt checks what another replica wrote; in phase 2
replica 0 gets the SIGKILL and its clients resend to a live replica at once, with the same ids.

    .venv/bin/python bench/serve_memory_load.py --users 50 --ops 20          # by hand, the full size
    .venv/bin/python bench/serve_memory_load.py --users 50 --ops 4 --json F  # the CI size (tests/serve)
    .venv/bin/python bench/serve_memory_load.py --replicas 3 --db postgresql # several replicas, one PostgreSQL

The server runs the real CLI in a subprocess (a tiny random model unless --model is given). The last
line reads `ratio=<p50 chat without memory / p50 chat with memory> chat_p50_ms=... chat_p99_ms=...
feedback_p50_ms=... feedback_p99_ms=... lost=0 duplicated=0 mixed=0`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KEY = "load-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, url: str, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PERSONALIGN_API_KEY=KEY, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "personalign", "serve", "--model", model, "--memory", url, "--port", str(port),
           "--view", "ica", "--echo-prompt", "--max-batch", "8", "--batch-window-ms", "5"]
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True)
    return wait_until_serving(proc, port, log, KEY)


def wait_until_serving(proc: subprocess.Popen, port: int, log: Path, key: str, limit: float = 180) -> subprocess.Popen:
    """`proc` once its /v1/models answers on `port`; its whole process group is killed if it does not within `limit` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"},
                         timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit(f"the server did not start within {limit:.0f} s; see {log}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def mixed_load(bases: list[str], users: int, ops: int) -> dict:
    lat: dict[str, list[float]] = {"chat": [], "chat_no_memory": [], "feedback": []}
    mixed, missing = 0, 0
    headers = {"Authorization": f"Bearer {KEY}"}

    async def one(client: httpx.AsyncClient, u: int) -> None:
        nonlocal mixed, missing
        acked: list[str] = []
        for k in range(ops):
            t = time.perf_counter()
            base = bases[(u + k) % len(bases)]  # a user's feedback and its next chat go to different replicas
            if k % 2 == 0:
                r = await client.post(base + "/feedback", json={"user": f"user-{u}", "prompt": f"Q{k} of user {u}?",
                                                         "chosen": f"CHOSEN-{u}-{k}.", "rejected": f"REJ-{u}-{k}.",
                                                         "request_id": f"mixed-{u}-{k}"})
                r.raise_for_status()
                lat["feedback"].append(time.perf_counter() - t)
                acked.append(f"CHOSEN-{u}-{k}.")
                continue
            body = {"model": "m", "max_tokens": 2, "temperature": 0, "messages": [{"role": "user", "content": "Tip?"}]}
            r = await client.post(base + "/chat/completions", json=body | {"user": f"user-{u}"})
            r.raise_for_status()
            lat["chat"].append(time.perf_counter() - t)
            prompt = r.json()["personalign"]["prompts"][0]
            others = [w for w in prompt.split() if w.startswith("CHOSEN-") and not w.startswith(f"CHOSEN-{u}-")]
            mixed += bool(others)
            missing += sum(a not in prompt for a in acked)
            t = time.perf_counter()
            (await client.post(base + "/chat/completions", json=body | {"user": f"nobody-{u}"})).raise_for_status()
            lat["chat_no_memory"].append(time.perf_counter() - t)

    async with httpx.AsyncClient(headers=headers, timeout=120, limits=httpx.Limits(max_connections=users)) as client:
        await asyncio.gather(*(one(client, u) for u in range(users)))
    return {"latency": lat, "mixed": mixed, "missing_from_prompt": missing}


async def write_until_killed(bases: list[str], users: int, per_user: int, kill_after: int, proc: subprocess.Popen
                             ) -> tuple[set[str], set[str]]:
    """(acknowledged request ids, request ids sent but not acknowledged); user u writes to replica u % N,
    and `proc` (replica 0) is killed."""
    acked: set[str] = set()
    unacked: set[str] = set()
    killed = asyncio.Event()

    async def one(client: httpx.AsyncClient, u: int) -> None:
        for k in range(per_user):
            rid = f"kill-{u}-{k}"
            if killed.is_set() and u % len(bases) == 0:  # the killed replica's clients: resent later
                unacked.add(rid)
                continue
            try:
                r = await client.post(bases[u % len(bases)] + "/feedback", json={
                    "user": f"user-{u}", "prompt": f"Write {k}?", "chosen": rid, "rejected": "no", "request_id": rid})
                if r.status_code == 200:
                    acked.add(rid)
                else:
                    unacked.add(rid)
            except httpx.HTTPError:
                unacked.add(rid)
            if len(acked) >= kill_after and not killed.is_set():
                killed.set()
                os.killpg(proc.pid, signal.SIGKILL)

    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                                 limits=httpx.Limits(max_connections=users)) as client:
        await asyncio.gather(*(one(client, u) for u in range(users)))
    return acked, unacked


async def resend(base: str, ids: set[str]) -> int:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        for rid in sorted(ids):
            _, u, k = rid.split("-")
            r = await client.post("/feedback", json={"user": f"user-{u}", "prompt": f"Write {k}?", "chosen": rid,
                                                     "rejected": "no", "request_id": rid})
            r.raise_for_status()
    return len(ids)


def postgres_database() -> tuple[str, object]:
    """A fresh database on the PostgreSQL at 127.0.0.1:5432: (its URL, a function that drops it)."""
    import uuid

    import psycopg

    admin = os.environ.get("PERSONALIGN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"postgresql+psycopg://{admin.split('://', 1)[1].rsplit('/', 1)[0]}/{name}", drop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--ops", type=int, default=20, help="requests per user in phase 1 (feedback and chat, alternately)")
    ap.add_argument("--writes", type=int, default=10, help="feedback writes per user in phase 2")
    ap.add_argument("--kill-after", type=int, default=None, help="acknowledged writes before the kill (default: half)")
    ap.add_argument("--replicas", type=int, default=1, help="servers sharing the database")
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--model", default=None, help="model directory (default: a tiny random model)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    from personalign.memory.store import MemoryStore
    from personalign.testing import save_tiny

    work = Path(tempfile.mkdtemp(prefix="serve-memory-load-"))
    model = args.model or str(save_tiny(work / "tiny"))
    url, drop = (f"sqlite:///{work / 'users.db'}", lambda: None) if args.db == "sqlite" else postgres_database()
    ports = [free_port() for _ in range(args.replicas)]
    bases = [f"http://127.0.0.1:{port}/v1" for port in ports]
    started = time.perf_counter()
    procs = [start_server(model, url, port, work / f"server-{i}.log") for i, port in enumerate(ports)]
    try:
        phase1 = asyncio.run(mixed_load(bases, args.users, args.ops))
        kill_after = args.kill_after or args.users * args.writes // 2
        acked, unacked = asyncio.run(write_until_killed(bases, args.users, args.writes, kill_after, procs[0]))
        procs[0].wait(timeout=30)
        if args.replicas == 1:  # one server: restart it on the same database
            procs[0] = start_server(model, url, ports[0], work / "server-0.log")
        resent = asyncio.run(resend(bases[1 % args.replicas], unacked))  # else the clients move to a live replica
        store = MemoryStore(url)
        stored: dict[str, int] = {}
        for user in store.user_ids():
            for item in store.history(user)["history"]:
                if item["kind"] == "pair" and item["chosen"].startswith("kill-"):
                    stored[item["chosen"]] = stored.get(item["chosen"], 0) + 1
        store.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
        drop()
    lost = len([rid for rid in acked | unacked if rid not in stored])
    duplicated = sum(n > 1 for n in stored.values())
    lat = phase1["latency"]
    result = {
        "users": args.users, "ops": args.ops, "writes": args.writes, "replicas": args.replicas, "db": args.db,
        "acknowledged_before_kill": len(acked), "resent_after_restart": resent, "stored": len(stored), "lost": lost,
        "duplicated": duplicated, "mixed": phase1["mixed"], "missing_from_prompt": phase1["missing_from_prompt"],
        "chat_p50_ms": percentile(lat["chat"], 0.5), "chat_p99_ms": percentile(lat["chat"], 0.99),
        "chat_no_memory_p50_ms": percentile(lat["chat_no_memory"], 0.5),
        "feedback_p50_ms": percentile(lat["feedback"], 0.5), "feedback_p99_ms": percentile(lat["feedback"], 0.99),
        "requests": sum(len(v) for v in lat.values()), "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    where = f"{args.replicas} replica(s) on {args.db}"
    print(f"phase 1 ({where}): {args.users} users x {args.ops} requests, {result['requests']} requests; chats mixing "
          f"users: {result['mixed']}, acknowledged feedback missing from the next prompt: {result['missing_from_prompt']}")
    after = "after restart" if args.replicas == 1 else "to a live replica"
    print(f"phase 2: {len(acked)} writes acknowledged before SIGKILL, {resent} resent {after}; "
          f"stored {len(stored)}, lost {lost}, duplicated {duplicated}; {result['seconds']} s in all")
    print(f"ratio={result['chat_no_memory_p50_ms'] / result['chat_p50_ms']:.3f} "
          f"chat_p50_ms={result['chat_p50_ms']:.1f} chat_p99_ms={result['chat_p99_ms']:.1f} "
          f"feedback_p50_ms={result['feedback_p50_ms']:.1f} feedback_p99_ms={result['feedback_p99_ms']:.1f} "
          f"lost={lost} duplicated={duplicated} mixed={result['mixed']}")


if __name__ == "__main__":
    main()
