"""Benchmark: scoring ICA prompts with long histories, our log-prob engine vs AlignX's eval loop.

Synthetic AlignX records with a full history (4 comments + 4 past pairs each, no sampling) are
rendered as ICA views with the embedded model's chat template, so every prompt holds several
hundred tokens and is shared by a chosen and a rejected response. Three contenders score them
with the embedded SmolLM2-135M-Instruct (fp32, SDPA attention, `torch.inference_mode`):

* alignx: the loop of AlignX `eval/loss_ica.py`: batch size 1, one forward per (prompt,
          response) with logits for every position, `-log_softmax` over the vocabulary, gather
          of the targets, prompt positions masked out, summed. The token ids are the engine's
          (rendered prompt without added special tokens, response + EOS), so both score the same
          sequences; `use_cache=False` spares it the KV cache it never reads.
* ours:   `score_responses` (one packed `prompt ‖ r1 ‖ r2` batch per example group; without
          gradients the prompts run first through SDPA's causal kernel and the responses then
          attend to their cached keys; LM head only on response positions) at
          `--max-tokens-per-batch` 2048: here that is one ~1,100-token example per batch, which
          on CPU is as fast per token as larger batches and pads nothing.
* bound:  the least work any exact method must do: one forward of the bare decoder (hidden
          states only, no LM head, no mask: SDPA's causal path; right padding cannot change
          the real positions) over the same packed sequences, batched like ours, on tensors
          tokenized and padded beforehand (untimed).

Contenders are interleaved at batch granularity: the examples are split into our engine's
batches and, batch by batch, each contender scores the same examples (the order rotates), so
load drifts on a shared machine hit all three alike. Times are wall-clock seconds and CPU
seconds of this process (`time.process_time`, which sums all torch intra-op threads). The
default is ONE intra-op thread: on a machine whose cores other jobs also use, every OpenMP
barrier can wait a scheduler time slice for a descheduled sibling thread while the waiting
thread spins, a cost per kernel rather than per FLOP that makes every contender slower in wall
and CPU time (on this project's shared 2-core machine, 2 threads ran the bound ~2.7x slower
than 1) and charges methods by their kernel count (ours runs two model calls) instead of
their work. `--threads 0` keeps torch's default. Tokens/s count the tokens each method runs
through the decoder (alignx reads the prompt once per response); "useful" tokens/s use one
common denominator, the unique tokens (prompt once + responses).

Log-prob check: every response's summed log-prob from ours must be within 1e-4 of the AlignX
loop's. Plain fp32 log_softmax over the 49k vocabulary drifts ~2e-5 per token, so the check
uses the AlignX loop's logits with log_softmax in float64 (computed with its clock paused);
the fp32 difference is printed too.

Usage:
    PERSONALIGN_HOME=... .venv/bin/python bench/scoring.py [--n 12] [--max-tokens-per-batch 2048]
        [--threads 1] [--max-length 2048] [--seed 0]
The last line reads `ratio=<examples/s ours over alignx, wall> cpu_ratio=... bound_ratio=<bound
time / our time, wall> cpu_bound_ratio=... max_abs_diff=... ...`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from personalign.models.logprobs import length_batches, pack_batch  # noqa: E402
from personalign.models.scorer import score_responses  # noqa: E402
from personalign.records.tokens import Tokenized, tokenize_pair  # noqa: E402

IGNORE_INDEX = -100
ATOL = 1e-4
Item = tuple[str, list[str]]


class Stopwatch:
    """Accumulates wall and CPU seconds over start/stop sections."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._since: tuple[float, float] | None = None

    def start(self) -> None:
        self._since = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        wall, cpu = self._since
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self._since = None


def build_items(tokenizer, n: int, seed: int, ugc: int, pairs: int, max_length: int) -> tuple[list[Item], int]:
    """Rendered (ICA prompt, [chosen, rejected]) items and the history items dropped to fit."""
    from personalign.curate.synth import synth_records
    from personalign.records.validate import to_example
    from personalign.views.build import ViewConfig, render_views

    records = synth_records(n, seed=seed, ugc_per_user=ugc, pairs_per_user=pairs)
    examples = [to_example(r, file="synth", line=i + 1) for i, r in enumerate(records)]
    cfg = ViewConfig(view="ica", template="chat", sample_history=False, max_length=max_length)
    views = list(render_views(examples, cfg, tokenizer))
    return [(v.prompt, list(v.responses)) for v in views], sum(v.history_dropped for v in views)


def alignx_scores(model, tokenizer, items: Sequence[Item], clock: Stopwatch
                  ) -> tuple[list[list[float]], list[list[float]]]:
    """AlignX `eval/loss_ica.py`: one full forward per (prompt, response), summed response log-probs.

    Returns the fp32 sums (its own result) and float64-log_softmax sums of the same logits,
    the latter computed while `clock` is stopped.
    """
    eos = tokenizer.eos_token_id
    fp32, fp64 = [], []
    for prompt, responses in items:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        sums32, sums64 = [], []
        for response in responses:
            response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
            seq = prompt_ids + response_ids + [eos]
            labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids + [eos]
            outputs = model(input_ids=torch.tensor(seq, device=model.device).reshape(1, -1), use_cache=False)
            logits = outputs["logits"][..., :-1, :].contiguous()
            label = torch.tensor(labels, device=model.device).reshape(1, -1)[..., 1:].contiguous().unsqueeze(-1)
            log_probs = -F.log_softmax(logits, dim=-1)
            padding_mask = label.eq(IGNORE_INDEX)
            nll = log_probs.gather(dim=-1, index=torch.clamp(label, min=0))
            nll.masked_fill_(padding_mask, 0.0)
            sums32.append(-nll.sum().item())
            clock.stop()
            rows = logits[0, len(prompt_ids) - 1 :].double()
            targets = torch.tensor(response_ids + [eos], device=model.device)[:, None]
            sums64.append(torch.log_softmax(rows, dim=-1).gather(-1, targets).sum().item())
            clock.start()
        fp32.append(sums32)
        fp64.append(sums64)
    return fp32, fp64


def our_scores(model, tokenizer, items: Sequence[Item], max_length: int, max_tokens_per_batch: int
               ) -> list[list[float]]:
    scores = score_responses(model, tokenizer, items, max_length=max_length,
                             max_tokens_per_batch=max_tokens_per_batch, progress=False)
    return [s.logp for s in scores]


def bound_forward(decoder: torch.nn.Module, input_ids: torch.Tensor) -> None:
    decoder(input_ids=input_ids, use_cache=False)


def token_stats(values: Sequence[int]) -> str:
    return f"min {min(values)}, mean {statistics.mean(values):.0f}, max {max(values)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="examples (one synthetic user each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ugc", type=int, default=4, help="comments per user (all rendered)")
    ap.add_argument("--pairs", type=int, default=4, help="past pairs per user (all rendered)")
    ap.add_argument("--max-length", type=int, default=2048, help="token budget of prompt + longest response")
    ap.add_argument("--max-tokens-per-batch", type=int, default=2048,
                    help="our engine's padded-token budget (the bound is batched the same way)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1, see above; 0 = torch's default)")
    ap.add_argument("--model", default=None, help="model name or directory (default: the embedded model)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (bench/gpu_smoke.sh)")
    ap.add_argument("--dtype", default="float32", help="weight dtype (float32 on CPU; bfloat16 on a GPU)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from personalign.models.loading import load_model

    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device, attn_implementation="sdpa")
    decoder = model.get_decoder()
    items, dropped = build_items(tokenizer, args.n, args.seed, args.ugc, args.pairs, args.max_length)
    tokenized: list[Tokenized] = [tokenize_pair(tokenizer, p, rs, args.max_length) for p, rs in items]
    if any(t.truncated for t in tokenized):
        raise SystemExit("some examples exceed --max-length; raise it so every method scores the same tokens")
    batches = length_batches([t.packed_length for t in tokenized], max_tokens_per_batch=args.max_tokens_per_batch)
    bound_inputs = [pack_batch([tokenized[i] for i in idx]).input_ids.to(model.device) for idx in batches]

    prompt_len = [len(t.prompt_ids) for t in tokenized]
    resp_len = [len(r) for t in tokenized for r in t.response_ids]
    unique = sum(t.packed_length for t in tokenized)
    alignx_tokens = sum(len(t.prompt_ids) * len(t.response_ids) + sum(map(len, t.response_ids)) for t in tokenized)
    padded = sum(x.numel() for x in bound_inputs)
    print(f"model {model.config._name_or_path} ({model.config._attn_implementation}, fp32), "
          f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads", flush=True)
    print(f"{len(items)} examples, {len(resp_len)} responses; prompt tokens {token_stats(prompt_len)}; "
          f"response tokens {token_stats(resp_len)}; history items dropped to fit: {dropped}")
    print(f"our batches (max_tokens_per_batch={args.max_tokens_per_batch}): {len(batches)}, rows "
          f"{[len(b) for b in batches]}; unique tokens {unique}, padded {padded} "
          f"({100 * (padded - unique) / padded:.1f}% padding); alignx reads {alignx_tokens} tokens", flush=True)

    clocks = {name: Stopwatch() for name in ("alignx", "ours", "bound")}
    alignx32: dict[int, list[float]] = {}
    alignx64: dict[int, list[float]] = {}
    ours: dict[int, list[float]] = {}

    def run_alignx(idx: list[int], _k: int) -> None:
        got32, got64 = alignx_scores(model, tokenizer, [items[i] for i in idx], clocks["alignx"])
        alignx32.update(zip(idx, got32))
        alignx64.update(zip(idx, got64))

    def run_ours(idx: list[int], _k: int) -> None:
        ours.update(zip(idx, our_scores(model, tokenizer, [items[i] for i in idx], args.max_length,
                                        args.max_tokens_per_batch)))

    def run_bound(_idx: list[int], k: int) -> None:
        bound_forward(decoder, bound_inputs[k])

    runners: list[tuple[str, Callable[[list[int], int], None]]] = [
        ("alignx", run_alignx), ("ours", run_ours), ("bound", run_bound)]
    with torch.inference_mode():
        warm, warm_items = Stopwatch(), [items[batches[-1][-1]]]
        warm.start()
        alignx_scores(model, tokenizer, warm_items, warm)
        our_scores(model, tokenizer, warm_items, args.max_length, args.max_tokens_per_batch)
        bound_forward(decoder, pack_batch([tokenized[batches[-1][-1]]]).input_ids)
        for k, idx in enumerate(batches):
            for name, run in runners[k % 3 :] + runners[: k % 3]:
                clocks[name].start()
                run(idx, k)
                clocks[name].stop()
            done = sum(map(len, batches[: k + 1]))
            print(f"  batch {k + 1}/{len(batches)} ({done}/{len(items)} examples): "
                  + ", ".join(f"{n} {c.wall:.1f} s / {c.cpu:.1f} CPU-s" for n, c in clocks.items()), flush=True)

    diff64 = max(abs(a - b) for i in ours for a, b in zip(alignx64[i], ours[i]))
    diff32 = max(abs(a - b) for i in ours for a, b in zip(alignx32[i], ours[i]))
    self32 = max(abs(a - b) for i in ours for a, b in zip(alignx32[i], alignx64[i]))
    n = len(items)
    processed = {"alignx": alignx_tokens, "ours": unique, "bound": unique}
    for name, c in clocks.items():
        print(f"{name:6s}: {c.wall:7.1f} s wall, {c.cpu:7.1f} CPU-s | tokens/s {processed[name] / c.wall:6.0f} "
              f"(per CPU-s {processed[name] / c.cpu:5.0f}) | useful tokens/s {unique / c.wall:6.0f} "
              f"(per CPU-s {unique / c.cpu:5.0f}) | examples/s {n / c.wall:.3f} (per CPU-s {n / c.cpu:.3f})")
    a, b, c = clocks["alignx"], clocks["ours"], clocks["bound"]
    ratio, cpu_ratio = a.wall / b.wall, a.cpu / b.cpu
    bound_ratio, cpu_bound_ratio = c.wall / b.wall, c.cpu / b.cpu
    print(f"max |logp ours - logp alignx| per response: {diff64:.2e} (alignx log_softmax in float64), "
          f"{diff32:.2e} (alignx fp32 as run; its own fp32-vs-float64 drift {self32:.2e}); "
          f"tolerance {ATOL:g}: {'OK' if diff64 <= ATOL else 'FAILED'}")
    print(f"ours vs alignx (examples/s): {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU "
          f"(target >= 2: {'met' if min(ratio, cpu_ratio) >= 2 else 'NOT met'})")
    print(f"ours vs bound (time ours / bound): {1 / bound_ratio:.3f} wall, {1 / cpu_bound_ratio:.3f} CPU "
          f"(target <= 1.25: {'met' if max(1 / bound_ratio, 1 / cpu_bound_ratio) <= 1.25 else 'NOT met'})")
    print(f"ratio={ratio:.2f} cpu_ratio={cpu_ratio:.2f} bound_ratio={bound_ratio:.3f} "
          f"cpu_bound_ratio={cpu_bound_ratio:.3f} max_abs_diff={diff64:.1e} max_abs_diff_fp32={diff32:.1e} "
          f"ours_tps={unique / b.wall:.0f} alignx_tps={alignx_tokens / a.wall:.0f} bound_tps={unique / c.wall:.0f} "
          f"examples={n} "
          f"max_tokens_per_batch={args.max_tokens_per_batch} threads={torch.get_num_threads()}")


if __name__ == "__main__":
    main()
