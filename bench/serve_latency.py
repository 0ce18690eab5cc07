"""Benchmark: `personalign serve` latency and throughput, batched (concurrent) vs. sequential clients.

Starts the server on 127.0.0.1 (a free port) with the embedded model, then sends the same
--n chat requests (greedy, --max-tokens each) twice: all at once (the server batches them, up to
--max-batch per generation), and one at a time. Prints p50/p99 latency and throughput of both,
and how many answers agree between the two runs. The server stops when the script ends.

Usage: PERSONALIGN_HOME=... .venv/bin/python bench/serve_latency.py [--n 50] [--max-tokens 16]
       [--max-batch 50] [--threads N] [--max-running 4]
The last line reads `ratio=<batched throughput / sequential throughput> ...`.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOPICS = ["cooking", "cycling", "saving money", "learning Python", "sleeping better", "writing a cover letter",
          "growing tomatoes", "visiting Paris", "playing chess", "reducing stress"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def timed_post(client, url: str, body: dict) -> tuple[float, str]:
    started = time.perf_counter()
    response = await client.post(url, json=body)
    response.raise_for_status()
    return time.perf_counter() - started, response.json()["choices"][0]["message"]["content"]


async def run(url: str, bodies: list[dict], concurrent: bool) -> tuple[float, list[float], list[str]]:
    import httpx

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=len(bodies))) as client:
        started = time.perf_counter()
        if concurrent:
            results = await asyncio.gather(*(timed_post(client, url, b) for b in bodies))
        else:
            results = [await timed_post(client, url, b) for b in bodies]
        wall = time.perf_counter() - started
    return wall, [r[0] for r in results], [r[1] for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--max-running", type=int, default=4, help="batches decoded in turn (1: one at a time)")
    args = parser.parse_args()

    import torch

    from personalign.llm.local import LocalBackend
    from personalign.models.loading import load_model
    from personalign.serve.app import create_app, serve_in_background

    if args.threads:
        torch.set_num_threads(args.threads)
    class CountingBackend(LocalBackend):
        batches: list[int] = []

        def decodings(self, requests, config, on_tokens=None, **kwargs):
            parts = super().decodings(requests, config, on_tokens, **kwargs)
            self.batches += [len(indices) for indices, _ in parts]
            return parts

    backend = CountingBackend(*load_model(None), batch_size=args.max_batch)
    app = create_app(backend, view="persona", max_batch=args.max_batch, max_running=args.max_running)
    bodies = [
        {
            "model": "default",
            "messages": [{"role": "user", "content": f"Give me one tip about {TOPICS[i % len(TOPICS)]}."}],
            "persona": f"The user is person number {i}, who likes short practical answers.",
            "max_tokens": args.max_tokens,
            "temperature": 0,
        }
        for i in range(args.n)
    ]
    with serve_in_background(app) as base_url:
        url = f"{base_url}/chat/completions"
        asyncio.run(run(url, bodies[:2], concurrent=False))  # warm-up
        backend.batches.clear()
        batched_s, batched_lat, batched_out = asyncio.run(run(url, bodies, concurrent=True))
        batches = list(backend.batches)
        sequential_s, sequential_lat, sequential_out = asyncio.run(run(url, bodies, concurrent=False))

    same = sum(a == b for a, b in zip(batched_out, sequential_out))
    print(f"{args.n} chat requests, max_tokens={args.max_tokens}, greedy, max_batch={args.max_batch}, "
          f"torch threads={torch.get_num_threads()}")
    print(f"batch sizes the server ran for the concurrent requests: {batches}")
    for name, wall, lat in (("batched   ", batched_s, batched_lat), ("sequential", sequential_s, sequential_lat)):
        print(f"{name}: {wall:6.1f} s  {args.n / wall:6.2f} req/s  latency p50 {percentile(lat, 50):6.2f} s  "
              f"p99 {percentile(lat, 99):6.2f} s  mean {statistics.mean(lat):6.2f} s")
    print(f"ratio={sequential_s / batched_s:.2f} identical={same}/{args.n} "
          f"batched_rps={args.n / batched_s:.2f} sequential_rps={args.n / sequential_s:.2f}")


if __name__ == "__main__":
    main()
