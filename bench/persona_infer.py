"""Benchmark: batched LocalBackend generation vs. a one-prompt-at-a-time `transformers.pipeline` loop.

The workload is persona inference (DESIGN §4): for P-Soups records, "describe the user who
prefers response A over response B", greedy, the embedded SmolLM2-135M-Instruct in fp32, the
same model object and the same max_new_tokens on both sides.

* ours:     `LocalBackend.complete`: length-sorted, left-padded batches of --batch-size, the prefix
            the batch shares encoded once, finished rows dropped from the batch.
* baseline: `pipeline("text-generation")` called once per prompt, the loop persona-inference
            code bases use (chat messages in, `return_full_text=False`).

Outputs must be identical (batched left-padded greedy = one at a time); the script reports how
many are and exits non-zero otherwise.

Usage: PERSONALIGN_HOME=... .venv/bin/python bench/persona_infer.py [--n 32] [--batch-size 32]
       [--max-new-tokens 48] [--threads N]   (--threads 1 on a CPU shared with other jobs)
The last line reads `ratio=<ours/baseline prompts per second> identical=<k>/<n> ...`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PSOUPS = ROOT.parent / "shared" / "data" / "p-soups" / "friendly_unfriendly.json"


def persona_requests(n: int, path: Path = PSOUPS) -> list[list[dict[str, str]]]:
    """n chat requests asking for the persona behind a preference (chosen over rejected, then swapped)."""
    records = json.loads(path.read_text())
    requests = []
    for i in range(n):
        rec = records[i // 2]
        preferred, other = (rec["chosen"], rec["rejected"]) if i % 2 == 0 else (rec["rejected"], rec["chosen"])
        query = (
            "Describe, in one sentence starting with \"The user\", the user who prefers Response A over "
            "Response B: their needs and traits, not words copied from the responses.\n\n"
            f"Prompt: {rec['prompt']}\n\nResponse A: {preferred}\n\nResponse B: {other}"
        )
        requests.append([{"role": "user", "content": query}])
    return requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()

    import torch
    from transformers import pipeline

    from personalign.llm import GenerationConfig
    from personalign.llm.local import LocalBackend
    from personalign.models.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(None, dtype="float32")
    requests = persona_requests(args.n)
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=0.0)
    ours_backend = LocalBackend(model, tokenizer, batch_size=args.batch_size)
    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer)

    def baseline(batch):
        return [
            pipe(r, max_new_tokens=args.max_new_tokens, do_sample=False, return_full_text=False)[0]["generated_text"]
            for r in batch
        ]

    ours_backend.generate(requests[:2], GenerationConfig(max_new_tokens=2), progress=False)  # warm-up
    baseline(requests[:1])

    started = time.perf_counter()
    ours = ours_backend.complete(requests, config)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    base = baseline(requests)
    base_s = time.perf_counter() - started

    identical = sum(a.text == b for a, b in zip(ours, base))
    tokens = sum(c.completion_tokens for c in ours)
    prompt_tokens = sum(c.prompt_tokens for c in ours)
    print(f"{args.n} prompts ({prompt_tokens} prompt tokens), greedy, max_new_tokens={args.max_new_tokens}, "
          f"fp32, torch threads={torch.get_num_threads()}, batch_size={args.batch_size}")
    print(f"ours     (LocalBackend, batched):      {ours_s:7.1f} s  {args.n / ours_s:6.2f} prompts/s  {tokens / ours_s:7.1f} new tokens/s")
    print(f"baseline (pipeline, one at a time):    {base_s:7.1f} s  {args.n / base_s:6.2f} prompts/s  {tokens / base_s:7.1f} new tokens/s")
    for i, (a, b) in enumerate(zip(ours, base)):
        if a.text != b:
            print(f"DIFFERENT output {i}:\n  ours:     {a.text!r}\n  baseline: {b!r}")
    print(f"example: {ours[0].text!r}")
    print(f"ratio={base_s / ours_s:.2f} identical={identical}/{args.n} ours_s={ours_s:.1f} baseline_s={base_s:.1f}")
    if identical != args.n:
        sys.exit(1)


if __name__ == "__main__":
    main()
