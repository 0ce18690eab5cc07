"""Benchmark: ten short chats while one request generates at the cap, one batch at a time vs. in turn.

Serves, on 127.0.0.1, a model of the embedded model's architecture and size (SmolLM2-135M's config)
with random weights, so that every request really runs to its `max_tokens` (random weights almost
never produce EOS). Two schedulers in one run, the same requests:

* one batch at a time (`max_running=1`: the server before iteration-level scheduling), the baseline;
* batches decoded in turn, a step each (`max_running=4`, the default).

For each: --short concurrent chats of --short-tokens tokens on the idle server (their latency), then
the same chats sent --delay seconds after a request for --long-tokens tokens (the server's default
`--max-tokens-limit`, 2048) started.

Usage: PERSONALIGN_HOME=... .venv/bin/python bench/serve_fairness.py [--short 10] [--short-tokens 32]
       [--long-tokens 2048] [--delay 3]
The last line reads `ratio=<baseline loaded p50 / in-turn loaded p50> slowdown_p50=<in turn: loaded
p50 / idle p50> slowdown_max=... long_s=...`.
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


async def timed(client, url: str, body: dict) -> float:
    started = time.perf_counter()
    response = await client.post(url, json=body)
    response.raise_for_status()
    return time.perf_counter() - started


async def measure(url: str, shorts: list[dict], long: dict, delay: float) -> tuple[list[float], list[float], float]:
    """Idle latencies of the short chats, their latencies beside the long request, and the long one's time."""
    import httpx

    async with httpx.AsyncClient(timeout=3600) as client:
        await timed(client, url, shorts[0])  # warm-up
        idle = await asyncio.gather(*(timed(client, url, body) for body in shorts))
        long_task = asyncio.create_task(timed(client, url, long))
        await asyncio.sleep(delay)
        loaded = await asyncio.gather(*(timed(client, url, body) for body in shorts))
        return list(idle), list(loaded), await long_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", type=int, default=10)
    parser.add_argument("--short-tokens", type=int, default=32)
    parser.add_argument("--long-tokens", type=int, default=2048)
    parser.add_argument("--delay", type=float, default=3.0)
    args = parser.parse_args()

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from personalign.llm.local import LocalBackend
    from personalign.models.loading import load_tokenizer, prepare_default_model
    from personalign.serve.app import create_app, serve_in_background

    model_dir = prepare_default_model(progress=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir)).eval()
    tokenizer = load_tokenizer(str(model_dir))
    shorts = [{"model": "m", "messages": [{"role": "user", "content": f"Give me one tip about {TOPICS[i % len(TOPICS)]}."}],
               "max_tokens": args.short_tokens, "temperature": 0, "user": f"user-{i}"} for i in range(args.short)]
    long = {"model": "m", "messages": [{"role": "user", "content": "Tell me a very long story."}],
            "max_tokens": args.long_tokens, "temperature": 0, "user": "the-long-one"}
    figures = {}
    for name, max_running in (("one batch at a time", 1), ("in turn", 4)):
        app = create_app(LocalBackend(model, tokenizer, batch_size=8), view="none", model_name="m",
                         max_running=max_running, max_tokens_limit=max(2048, args.long_tokens))
        with serve_in_background(app) as url:
            idle, loaded, long_s = asyncio.run(measure(url + "/chat/completions", shorts, long, args.delay))
        figures[name] = (statistics.median(idle), max(idle), statistics.median(loaded), max(loaded), long_s)
        print(f"{name} (max_running={max_running}): {args.short} short chats of {args.short_tokens} tokens, "
              f"idle p50 {figures[name][0]:.2f} s max {figures[name][1]:.2f} s; beside a {args.long_tokens}-token "
              f"request p50 {figures[name][2]:.2f} s max {figures[name][3]:.2f} s; the long request {long_s:.1f} s",
              flush=True)
    base, ours = figures["one batch at a time"], figures["in turn"]
    print(f"ratio={base[2] / ours[2]:.2f} slowdown_p50={ours[2] / ours[0]:.2f} slowdown_max={ours[3] / ours[1]:.2f} "
          f"baseline_slowdown_p50={base[2] / base[0]:.1f} long_s={ours[4]:.1f} baseline_long_s={base[4]:.1f}")


if __name__ == "__main__":
    main()
