"""Benchmark: time to the first streamed token of `personalign serve` vs the whole answer.

Starts the server on 127.0.0.1 (a free port) with the embedded model and asks the same chat
--n times, greedy, --max-tokens each, with `stream=True` through the `openai` client: the time to
the first content chunk (TTFT) and to the end of the stream. Before token streaming the first
content chunk came with the whole answer, so the baseline's TTFT is the total time.

Usage: PERSONALIGN_HOME=... .venv/bin/python bench/serve_stream.py [--n 5] [--max-tokens 64]
The last line reads `ratio=<median total / median TTFT> ttft_s=... total_s=... chunks=...`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    import openai

    from personalign.llm.local import LocalBackend
    from personalign.models.loading import load_model
    from personalign.serve.app import create_app, serve_in_background

    app = create_app(LocalBackend(*load_model(None)), view="none", model_name="default")
    messages = [{"role": "user", "content": "Tell me about the history of bicycles, in detail."}]
    ttfts, totals, chunks = [], [], []
    with serve_in_background(app) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
        for i in range(args.n + 1):  # the first run warms up
            started, first, count = time.perf_counter(), None, 0
            for chunk in client.chat.completions.create(model="default", messages=messages, temperature=0,
                                                        max_tokens=args.max_tokens, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    count += 1
                    first = first or time.perf_counter() - started
            if i:
                ttfts.append(first)
                totals.append(time.perf_counter() - started)
                chunks.append(count)
    ttft, total = statistics.median(ttfts), statistics.median(totals)
    print(f"{args.n} streamed chats of {args.max_tokens} tokens, greedy: TTFT {ttfts}, total {totals}")
    print(f"ratio={total / ttft:.1f} ttft_s={ttft:.3f} total_s={total:.2f} chunks={statistics.median(chunks):.0f}")


if __name__ == "__main__":
    main()
