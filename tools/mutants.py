"""Mutation testing of personalign's core: apply named mutations one at a time, run the tests that
should notice, and report which mutants the suite kills (`make mutants`).

Nothing touches the checkout: the tracked and untracked (not ignored) files are copied into a
temporary directory, which comes first on PYTHONPATH, and every mutant is applied there. The listed
tests run first on the unmutated copy (the baseline); if any fails the harness refuses to score.
Each mutant replaces one exact snippet (it must occur exactly once) in one module and runs its test
files with `pytest -x -q` in a fixed order. A mutant is *killed* only when pytest reports a test
failure (exit 1); a collection or usage error, an empty selection (exit 2-5) is an *error*, and a
run past `--timeout` a *timeout*: neither counts as killed.

    python tools/mutants.py                 # every mutant
    python tools/mutants.py --only loop     # mutants whose id contains "loop"
    python tools/mutants.py --list          # the mutants, without running them

The score per module and the explanation of every survivor are recorded in docs/testing.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "personalign"


@dataclass(frozen=True)
class Mutant:
    id: str
    module: str  # path under personalign/
    old: str
    new: str
    tests: tuple[str, ...]


T_LOSSES = ("tests/train/test_losses.py",)
T_OBJECTIVE = ("tests/train/test_objective.py",)
T_LOOP = ("tests/train/test_objective.py", "tests/train/test_checkpoints.py", "tests/train/test_loop.py")
T_LOGPROBS = ("tests/models/test_logprobs.py", "tests/records/test_tokens.py")
T_SCORER = ("tests/models/test_scorer.py",)
T_STORE = ("tests/tokenstore/test_store.py", "tests/train/test_collate.py")
T_REFCACHE = ("tests/train/test_objective.py", "tests/eval/test_alignment.py")
T_METRICS = ("tests/test_metrics.py", "tests/eval/test_alignment.py")
T_ALIGNMENT = ("tests/eval/test_alignment.py", "tests/eval/test_suite.py")
T_PROFILE = ("tests/views/test_profile.py", "tests/views/test_build.py")
T_VIEWS = ("tests/views/test_build.py", "tests/records/test_tokens.py")
T_VERDICT = ("tests/llm/test_verdict.py", "tests/llm/test_logprob_verdict.py")
T_CHECKPOINTS = ("tests/train/test_checkpoints.py",)
T_MEMORY = ("tests/memory/test_store.py", "tests/serve/test_memory.py")
T_AUTH = ("tests/serve/test_memory.py", "tests/serve/test_app.py")
T_BEST_OF = ("tests/eval/test_rm.py",)
T_GEN_CACHE = ("tests/llm/test_cache.py", "tests/eval/test_generate.py")
T_COLLATE = ("tests/train/test_collate.py", "tests/train/test_objective.py")
T_REWARDS = ("tests/models/test_rewards.py",)

MUTANTS = [
    # train/losses.py
    Mutant("losses:sigmoid-sign", "train/losses.py", "- eps * F.logsigmoid(-z)",
           "- eps * F.logsigmoid(z)", T_LOSSES),
    Mutant("losses:sigmoid-z", "train/losses.py", "-(1.0 - eps) * F.logsigmoid(z) - eps * F",
           "-(1.0 - eps) * F.logsigmoid(-z) - eps * F", T_LOSSES),
    Mutant("losses:hinge-margin", "train/losses.py", "torch.relu(1.0 - z)", "torch.relu(-z)", T_LOSSES),
    Mutant("losses:ipo-target", "train/losses.py", "(avg - 1.0 / (2.0 * beta)) ** 2",
           "(avg - 1.0 / beta) ** 2", T_LOSSES),
    Mutant("losses:ipo-no-length-average", "train/losses.py", "avg = w / nw.clamp(min=1) - l / nl.clamp(min=1)",
           "avg = w - l / nl.clamp(min=1)", T_LOSSES),
    Mutant("losses:simpo-gamma-scale", "train/losses.py", "u = aw - al - simpo_gamma / beta",
           "u = aw - al - simpo_gamma", T_LOSSES),
    Mutant("losses:orpo-plain-ratio", "train/losses.py", "log_odds = (aw - al) - (_log1mexp(aw) - _log1mexp(al))",
           "log_odds = (aw - al)", T_LOSSES),
    Mutant("losses:kto-kl-sign", "train/losses.py", "torch.sigmoid(beta * (good - kl))",
           "torch.sigmoid(beta * (good + kl))", T_LOSSES),
    Mutant("losses:rm-margin-sign", "train/losses.py", "rewards[:, 1] - (0.0 if margin is None else margin)",
           "rewards[:, 1] + (0.0 if margin is None else margin)", T_LOSSES),
    Mutant("losses:rm-pl-last-stage", "train/losses.py", "stages[torch.arange(len(r)), n_valid - 1] = False",
           "stages[torch.arange(len(r)), 0] = False", T_LOSSES),
    Mutant("losses:rewards-beta", "train/losses.py", "chosen_rewards = beta * chosen_logratios.detach()",
           "chosen_rewards = chosen_logratios.detach()", T_LOSSES),
    Mutant("losses:sft-per-response-mean", "train/losses.py", "loss = -token_logp_sum.sum() / n_tokens.sum()",
           "loss = -(token_logp_sum / n_tokens).mean()", T_LOSSES),
    Mutant("losses:pro-sft-weight", "train/losses.py", "sft_weight * (n_valid - 1).to(s.dtype) ** 2 * best_nll",
           "sft_weight * best_nll", T_LOSSES),
    Mutant("losses:pro-tau-max", "train/losses.py", '.amax(dim=2).masked_fill(~has_later, 0.0)',
           '.amin(dim=2).masked_fill(~has_later, 0.0)', T_LOSSES),
    # train/loop.py, train/objective.py, the best-ahead rule in metrics.py
    Mutant("loop:zeroed-reference", "train/objective.py", "logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], beta=cfg.beta",
           "logps[:, 0], logps[:, 1], 0 * ref[:, 0], 0 * ref[:, 1], beta=cfg.beta", T_OBJECTIVE),
    Mutant("loop:swapped-reference", "train/objective.py", "logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], beta=cfg.beta",
           "logps[:, 0], logps[:, 1], ref[:, 1], ref[:, 0], beta=cfg.beta", T_OBJECTIVE),
    Mutant("loop:accumulation-mismatch", "train/loop.py",
           "gradient_accumulation_steps=cfg.gradient_accumulation_steps,", "gradient_accumulation_steps=1,", T_OBJECTIVE),
    Mutant("loop:no-pruning", "train/loop.py", "pruned = prune_checkpoints(out, cfg.save_total_limit)", "pruned = []",
           T_LOOP),
    Mutant("loop:scheduler-not-stepped", "train/loop.py", "            scheduler.step()\n", "", T_OBJECTIVE),
    Mutant("loop:stale-epoch-order", "train/loop.py", "epoch_order(n_records, cfg.seed, epoch), epoch",
           "epoch_order(n_records, cfg.seed, 0), epoch", T_OBJECTIVE),
    Mutant("loop:eval-accuracy-reference-swapped", "metrics.py", "r[:, 0], r[rows, worst])",
           "r[rows, worst], r[:, 0])", T_OBJECTIVE),
    Mutant("loop:no-clipping", "train/loop.py", "if accelerator.sync_gradients and cfg.max_grad_norm:",
           "if False:", T_LOOP),
    # train/checkpoints.py (the "no pruning" and "wrong best checkpoint" changes)
    Mutant("checkpoints:wrong-best", "train/checkpoints.py", "return max(reversed(scored), key=lambda pm: sign(pm[1]))[0]",
           "return min(reversed(scored), key=lambda pm: sign(pm[1]))[0]", T_CHECKPOINTS),
    Mutant("checkpoints:earliest-among-equals", "train/checkpoints.py", "max(reversed(scored),", "max(scored,",
           T_CHECKPOINTS),
    Mutant("checkpoints:prune-the-last", "train/checkpoints.py", "keep = {found[-1], best_checkpoint(output_dir)}",
           "keep = {best_checkpoint(output_dir)}", T_CHECKPOINTS),
    # models/logprobs.py
    Mutant("logprobs:no-eos", "records/tokens.py", "end = [eos_id] if eos else []", "end = []", T_LOGPROBS),
    Mutant("logprobs:positions-continue", "models/logprobs.py", "position_ids[b, start : start + n] = torch.arange(p, p + n)",
           "position_ids[b, start : start + n] = torch.arange(start, start + n)", T_LOGPROBS),
    Mutant("logprobs:siblings-visible", "models/logprobs.py",
           "allowed = causal & (k != PAD_SEGMENT) & (q != PAD_SEGMENT) & ((k == PROMPT_SEGMENT) | (k == q))",
           "allowed = causal & (k != PAD_SEGMENT) & (q != PAD_SEGMENT)", T_LOGPROBS),
    Mutant("logprobs:prediction-offset", "models/logprobs.py", "pred_cols += [p - 1, *range(start, start + n - 1)]",
           "pred_cols += [p, *range(start + 1, start + n)]", T_LOGPROBS),
    Mutant("logprobs:prompt-cut-side", "records/tokens.py", "head = head[prompt_cut:]",
           "head = head[: len(head) - prompt_cut]", T_LOGPROBS),
    # models/scorer.py, tokenstore/store.py
    Mutant("scorer:journal-ignored", "models/scorer.py", "if i not in done], dtype=np.int64)",
           "if True], dtype=np.int64)", T_SCORER),
    Mutant("scorer:ranks-out-of-step", "models/scorer.py", "rounds = math.ceil(len(batches) / world)",
           "rounds = len(mine)", T_SCORER),
    Mutant("store:view-blind-key", "tokenstore/store.py", '"view": self.view.model_dump(mode="json"), ',
           "", T_STORE),
    Mutant("store:skip-ignores-objective", "tokenstore/store.py", "                if not ok(n):\n",
           "                if False:\n", T_STORE),
    # models/refcache.py
    Mutant("refcache:data-blind-key", "tokenstore/store.py", "key = cache_key(data=data_digest(source), tokenizer=",
           "key = cache_key(tokenizer=", T_REFCACHE),
    Mutant("refcache:model-blind-key", "models/refcache.py", 'getattr(store, "suffix", ""), model=model_fingerprint(model),',
           'getattr(store, "suffix", ""),', T_REFCACHE),
    Mutant("refcache:content-blind-digest", "files.py", "                h.update(chunk)\n",
           "                pass\n", T_REFCACHE),
    Mutant("refcache:drop-truncated-flag", "models/scorer.py", "n[:k], bool(cut)))",
           "n[:k], False))", T_REFCACHE),
    # metrics.py
    Mutant("metrics:ties-correct", "metrics.py", "    return margin > 0\n", "    return margin >= 0\n", T_METRICS),
    Mutant("metrics:reference-sign", "metrics.py", "margin = margin - (np.asarray(ref_chosen",
           "margin = margin + (np.asarray(ref_chosen", T_METRICS),
    Mutant("metrics:interval-tails", "metrics.py", "low, high = np.quantile(means, [tail, 1.0 - tail])",
           "low, high = np.quantile(means, [0.0, 1.0])", T_METRICS),
    Mutant("metrics:paired-direction", "metrics.py", "return bootstrap(a - b, n_boot=n_boot",
           "return bootstrap(b - a, n_boot=n_boot", T_METRICS),
    Mutant("metrics:slice-mask", "metrics.py", "out[name] = bootstrap(c[mask], n_boot=n_boot, seed=seed)",
           "out[name] = bootstrap(c, n_boot=n_boot, seed=seed)", T_METRICS),
    # eval/alignment.py
    Mutant("alignment:exchanged-policy-reference", "eval/alignment.py", "return best_ahead(policy, 1, reference)",
           "return best_ahead(reference, 1, policy)", T_ALIGNMENT),
    Mutant("alignment:reference-view-ignored", "eval/alignment.py", "ref_view = cfg.reference_view or cfg.view",
           "ref_view = cfg.view", T_ALIGNMENT),
    Mutant("alignment:raw-ignores-view", "eval/alignment.py",
           "raw = reference == policy and ref_view == cfg.view", "raw = reference == policy", T_ALIGNMENT),
    Mutant("alignment:protocol-template", "eval/alignment.py",
           'view = view.model_copy(update={"template": "alignx-eval", "sample_history": False, "max_length": None})',
           'view = view.model_copy(update={"sample_history": False, "max_length": None})', T_ALIGNMENT),
    # views/profile.py
    Mutant("profile:upper-threshold", "views/profile.py", "1.0 if 5 * h >= 6 * n", "1.0 if 5 * h > 6 * n", T_PROFILE),
    Mutant("profile:lower-threshold", "views/profile.py", "0.0 if 5 * h <= 4 * n", "0.0 if 5 * h < 4 * n", T_PROFILE),
    Mutant("profile:fallback-side", "views/profile.py", "if n - top < low:", "if n - top <= low:", T_PROFILE),
    Mutant("profile:label-leak", "views/profile.py",
           "vectors = [it.direction for it in items_used if it.direction is not None]",
           "vectors = [it.direction for it in items_used if it.direction is not None] or "
           "([user.direction] if user.direction else [])", T_PROFILE),
    Mutant("profile:phrase-sides", "views/profile.py", "phrases = [d.positive if v == 1 else d.negative",
           "phrases = [d.negative if v == 1 else d.positive", T_PROFILE),
    # views/build.py
    Mutant("views:rejected-persona-not-swapped", "views/build.py", "    if persona_source not in REJECTED_SIDE:\n",
           "    if True:\n", T_VIEWS),
    Mutant("views:sampling-cap", "views/build.py", "draws = MAX_SAMPLED + 1", "draws = MAX_SAMPLED", T_VIEWS),
    Mutant("views:history-order", "views/build.py", "items = [*ugc, *pairs]", "items = [*pairs, *ugc]", T_VIEWS),
    Mutant("views:budget-without-eos", "views/build.py", "budget = cfg.max_length - 1 - max(",
           "budget = cfg.max_length - max(", T_VIEWS),
    Mutant("views:keep-oldest", "views/build.py", "candidate = render(_history(items[len(items) - k :]))",
           "candidate = render(_history(items[:k]))", T_VIEWS),
    # llm/verdict.py
    Mutant("verdict:first-statement-wins", "llm/verdict.py", "if best is None or m.end() >= best[0]:",
           "if best is None:", T_VERDICT),
    Mutant("verdict:worse-not-flipped", "llm/verdict.py", "verdict = p if winner or p is None else 3 - p",
           "verdict = p", T_VERDICT),
    Mutant("verdict:no-tie-stage", "llm/verdict.py", "    if _TIE.search(text):\n        return None\n", "", T_VERDICT),
    Mutant("verdict:order-average", "llm/verdict.py", "return (a[0] + b[1]) / 2", "return (a[0] + b[0]) / 2",
           T_VERDICT),
    Mutant("verdict:no-echo-removal", "llm/verdict.py", "    text = _ECHO.sub(\" \", text)\n", "", T_VERDICT),
    # memory/store.py, serve/memory.py
    Mutant("memory:export-sees-its-own-label", "memory/store.py", "earlier = doc[\"history\"][:k]",
           "earlier = doc[\"history\"][:k + 1]", T_MEMORY),
    Mutant("memory:retry-not-recognised", "memory/store.py", "    if row is None:\n        return None\n    if any(",
           "    if True:\n        return None\n    if any(", T_MEMORY),
    Mutant("memory:request-id-conflict-ignored", "memory/store.py",
           "if any(getattr(row, k) != values.get(k) for k in _SAME):", "if False:", T_MEMORY),
    Mutant("memory:delete-keeps-history", "memory/store.py", "n = conn.execute(items.delete().where(items.c.user_id == user_id)).rowcount",
           "n = 0", T_MEMORY),
    Mutant("memory:scoped-key-reaches-others", "serve/memory.py", "if scope is not None and requested is not None and requested != scope:",
           "if False:", T_MEMORY),
    Mutant("memory:scoped-key-without-user-acts-for-none", "serve/memory.py",
           "return requested if requested is not None else scope", "return requested", T_MEMORY),
    # serve auth, best-of-n, the generation cache, the collator, reward pooling
    Mutant("serve:any-bearer-accepted", "serve/memory.py", "if hmac.compare_digest(given, expected) and not found[0]:",
           "if given and not found[0]:", T_AUTH),
    Mutant("best-of:least-rewarded", "eval/generate.py", "best = max(range(len(cands)), key=rewards.__getitem__)",
           "best = min(range(len(cands)), key=rewards.__getitem__)", T_BEST_OF),
    Mutant("best-of:first-candidate", "eval/generate.py", "best = max(range(len(cands)), key=rewards.__getitem__)",
           "best = 0", T_BEST_OF),
    Mutant("gen-cache:settings-blind-key", "llm/cache.py", "keys = [generation_key(backend.identity, task, settings, r)",
           "keys = [generation_key(backend.identity, task, r)", T_GEN_CACHE),
    Mutant("gen-cache:not-durable", "llm/cache.py", "    def add(self, items: Sequence[tuple[str, str]]) -> None:\n",
           "    def add(self, items: Sequence[tuple[str, str]]) -> None:\n        return\n", T_GEN_CACHE),
    Mutant("collate:reference-rows-by-position", "train/collate.py",
           "ref[torch.as_tensor(list(indices), dtype=torch.long), :width]", "ref[: len(indices), :width]", T_COLLATE),
    Mutant("collate:kto-partner-is-self", "train/collate.py", "return [(i - 1) % len(self.store) for i in indices]",
           "return list(indices)", T_COLLATE),
    Mutant("rewards:pooled-before-last-token", "models/rewards.py", "batch.pred_cols + 1, reduce=\"amax\")",
           "batch.pred_cols, reduce=\"amax\")", T_REWARDS),
]


OUTCOMES = ("killed", "survived", "error", "timeout")


def outcome(returncode: int | None) -> str:
    """A pytest exit status as a mutant's fate: only a test failure (1) kills; None is a timeout."""
    if returncode is None:
        return "timeout"
    return {0: "survived", 1: "killed"}.get(returncode, "error")


def copy_checkout(dest: Path) -> Path:
    """The checkout's tracked and untracked, not ignored, files copied under `dest`, with the shared data
    beside it as beside the checkout (a link)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    shared = REPO.parent / "shared"
    if shared.is_dir() and not (dest.parent / "shared").exists():
        (dest.parent / "shared").symlink_to(shared.resolve())
    return dest


def pytest(root: Path, tests: tuple[str, ...], timeout: float, log: Path | None = None) -> int | None:
    """pytest's exit status on `tests` in the copy at `root` (None past `timeout`), its process group
    killed on the way out; its output goes to `log` (default: nowhere)."""
    env = {**os.environ, "PYTHONPATH": str(root), "PERSONALIGN_HOME": os.environ.get(
        "PERSONALIGN_HOME", str(REPO / ".cache" / "personalign-test"))}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:random_order",
           "-p", "no:cacheprovider", *tests]
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
        if log:
            out.close()


def run_mutant(m: Mutant, root: Path, timeout: float) -> tuple[str, float]:
    path = root / "personalign" / m.module
    original = path.read_text()
    if original.count(m.old) != 1:
        return f"stale ({original.count(m.old)} matches)", 0.0
    started = time.perf_counter()
    try:
        path.write_text(original.replace(m.old, m.new))
        fate = outcome(pytest(root, m.tests, timeout))
    finally:
        path.write_text(original)
    return fate, time.perf_counter() - started


def table(results: list[tuple[Mutant, str]]) -> str:
    """Killed / survived / error / timeout per module, as a markdown table."""
    by_module: dict[str, list[str]] = defaultdict(list)
    for m, fate in results:
        by_module[m.module].append(fate)
    lines = ["| module | mutants | killed | survived | error | timeout | score |", "|---|---:|---:|---:|---:|---:|---:|"]
    for module, fates in [*sorted(by_module.items()), ("**all**", [f for _, f in results])]:
        counts = [sum(f == o for f in fates) for o in OUTCOMES]
        name = module if module.startswith("**") else f"`{module}`"
        lines.append(f"| {name} | {len(fates)} | " + " | ".join(map(str, counts)) + f" | {counts[0] / len(fates):.0%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="Run the mutants whose id contains this text.")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--timeout", type=float, default=900.0, help="Seconds per mutant (past it: a timeout).")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or args.only in m.id]
    if args.list:
        for m in chosen:
            print(f"{m.id:45} {m.module:22} {' '.join(m.tests)}")
        return
    if not chosen:
        sys.exit(f"no mutant id contains {args.only!r}")
    stale = [m.id for m in chosen if (PKG / m.module).read_text().count(m.old) != 1]
    if stale:
        sys.exit(f"stale mutants (their snippet is not in the code exactly once): {', '.join(stale)}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="personalign-mutants-") as tmp:
        root = copy_checkout(Path(tmp) / REPO.name)
        tests = tuple(sorted({t for m in chosen for t in m.tests}))
        base = pytest(root, tests, args.timeout * 2, log=Path(tmp) / "baseline.log")
        print(f"baseline: {len(tests)} test files pass on the unmutated copy: {'yes' if base == 0 else 'NO'} "
              f"(pytest exit {base}, {time.perf_counter() - started:.0f}s)", flush=True)
        if base != 0:
            print((Path(tmp) / "baseline.log").read_text()[-4000:])
            sys.exit("the listed tests do not pass on unmutated code: no score")
        results = []
        for m in chosen:
            fate, seconds = run_mutant(m, root, args.timeout)
            results.append((m, fate))
            print(f"{fate:18} {seconds:6.1f}s  {m.id}", flush=True)
    print("\n" + table(results))
    survivors = [m.id for m, fate in results if fate != "killed"]
    print(f"\nnot killed: {', '.join(survivors) if survivors else 'none'}  ({time.perf_counter() - started:.0f}s)")
    sys.exit(1 if any(fate.startswith("stale") for _, fate in results) else 0)


if __name__ == "__main__":
    main()
