"""Alignment accuracy end to end on tiny models: raw vs reference mode, cache reuse, sharding."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from plain import agreement_slack, plain_scores
from procs import retry_on_port_conflict, run

from personalign.eval.alignment import AccuracyConfig, evaluate_accuracy, write_accuracy
from personalign.models.loading import load_model
from personalign.records.io import write_jsonl
from personalign.testing import save_tiny

WORDS = "red blue green small large quick slow happy calm bright dark warm cold".split()


def _pairs(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n):
        w = rng.choice(WORDS, size=6)
        rec = {"prompt": f"Describe item {i}: {' '.join(w[:3])}", "chosen": " ".join(w[2:]), "rejected": " ".join(w[:4])}
        if i % 3 == 0:
            rec["Pair-wise Comparative Feedback"] = [{"prompt": "p", "chosen": "a b", "rejected": "c d"}]
        if i % 3 == 1:
            rec["User-Generated Content"] = [{"prompt": "post", "comment": "nice"}]
        recs.append(rec)
    return recs


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("acc") / "pairs.jsonl"
    write_jsonl(_pairs(24), path)
    return path


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-b"), seed=1)


def test_raw_accuracy_matches_direct_scoring(pair_file, tiny_model_dir, tmp_path):
    cfg = AccuracyConfig(data=str(pair_file), policy=str(tiny_model_dir), cache=False, n_boot=200)
    res = evaluate_accuracy(cfg)
    assert res.mode == "raw" and res.reference is None
    model, tok = load_model(tiny_model_dir)
    from personalign.views.build import ViewConfig

    margins = [s.logp[0] - s.logp[1] for s in plain_scores(model, tok, pair_file, ViewConfig(max_length=4096))]
    expected = np.mean([m > 0 for m in margins])  # from plain forwards; only near-ties may differ
    assert abs(res.estimates["overall"].value - expected) <= agreement_slack(margins) / len(margins)
    assert {"pairs", "ugc", "none"} <= set(res.estimates)
    js, md, sc = write_accuracy(res, tmp_path)
    assert json.loads(js.read_text())["mode"] == "raw"
    assert "Raw log-prob accuracy" in md.read_text()
    assert len(sc.read_text().splitlines()) == 24


def test_reference_mode_uses_margin_and_cache(pair_file, tiny_model_dir, second_model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_bytes(pair_file.read_bytes())
    cfg = AccuracyConfig(data=str(data), policy=str(second_model_dir), reference=str(tiny_model_dir), n_boot=200)
    res = evaluate_accuracy(cfg)
    assert res.mode == "alignment"
    margins = [(p.logp[0] - p.logp[1]) - (r.logp[0] - r.logp[1]) for p, r in zip(res.policy, res.reference)]
    assert res.estimates["overall"].value == pytest.approx(np.mean([m > 0 for m in margins]))
    cached = sorted((tmp_path / ".personalign-cache").glob("tokens-*/logprobs-*.safetensors"))
    assert len(cached) == 2
    again = evaluate_accuracy(cfg)
    assert [p.logp for p in again.policy] == [p.logp for p in res.policy]
    assert sorted((tmp_path / ".personalign-cache").glob("tokens-*/*.safetensors")) == cached  # nothing new


def _run(cmd: list[str] | Callable[[int], list[str]], cwd: Path, **env: str) -> str:
    """Run `cmd`, or `cmd(port)` on a free port (another one if that was taken meanwhile)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200", **env)
    proc = retry_on_port_conflict(lambda port: run(cmd(port) if callable(cmd) else cmd, cwd=cwd, env=env, timeout=600))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.duration(21)
def test_two_processes_write_the_same_accuracy_file(pair_file, tiny_model_dir, second_model_dir, tmp_path):
    common = ["eval", "accuracy", "--data", str(pair_file), "--policy", str(second_model_dir),
              "--reference", str(tiny_model_dir), "cache=false"]
    single = _run([sys.executable, "-m", "personalign", *common, "--out", str(tmp_path / "one")], tmp_path)
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    # accelerate's `--cpu` runs several processes only under MPI; this starts two gloo processes on CPU
    sharded = _run(lambda port: [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port",
                                 str(port), "-m", "personalign", *common, "--out", str(tmp_path / "two")],
                   tmp_path, ACCELERATE_USE_CPU="true")
    single, sharded = " ".join(single.split()), " ".join(sharded.split())  # rich wraps long paths
    assert "scored on 1 process)" in single and "scored on 2 processes" in sharded
    one, two = (tmp_path / "one" / "accuracy.json").read_bytes(), (tmp_path / "two" / "accuracy.json").read_bytes()
    assert one == two
    assert (tmp_path / "one" / "scores.jsonl").read_text().count("\n") == 24


def _plain_logp(model, tok, prompt: str, response: str) -> float:
    """logp(response | prompt) from one ordinary forward over prompt ‖ response ‖ EOS (independent of the engine)."""
    import torch

    p = tok(prompt, add_special_tokens=False)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logits = model(torch.tensor([p + r])).logits[0].float().log_softmax(-1)
    return sum(logits[len(p) - 1 + i, t].item() for i, t in enumerate(r))


def test_alignx_protocol_scores_the_reference_under_the_ica_eval_layout(tiny_model_dir, second_model_dir, tmp_path):
    """AlignX's released protocol: a PBA policy under its PBA prompt, the reference under the ICA
    evaluation layout with all history (not under the policy's PBA prompt)."""
    recs = []
    for i in range(4):
        recs.append({"prompt": f"Describe item {i}", "chosen": "red blue", "rejected": "slow dark cold",
                     "profile": "Likes brevity", "User-Generated Content": [{"prompt": f"post {i}", "comment": "nice"}],
                     "Pair-wise Comparative Feedback": [{"prompt": "p", "chosen": "a b", "rejected": "c d"}],
                     "Demographic Information": "A student."})
    data = tmp_path / "pba.jsonl"
    write_jsonl(recs, data)
    cfg = AccuracyConfig(data=str(data), policy=str(second_model_dir), reference=str(tiny_model_dir), n_boot=50,
                         view={"view": "pba"}, protocol="alignx", cache=False)
    assert cfg.view.template == "alignx-eval" and cfg.reference_view.view == "ica"
    res = evaluate_accuracy(cfg)
    policy, ptok = load_model(second_model_dir)
    reference, rtok = load_model(tiny_model_dir)
    from personalign.records.io import read_examples
    from personalign.views.build import ViewConfig, build_view
    from personalign.views.templates import history_text, render_prompt

    for ex, p_scores, r_scores in zip(read_examples(data), res.policy, res.reference):
        pba_prompt = build_view(ex, ViewConfig(view="pba", template="alignx-eval")).prompt
        assert "***User Preferences***\n\nLikes brevity" in pba_prompt
        ica_prompt = render_prompt("alignx-eval", "ica", ex.prompt, history_text(ex.user.ugc, ex.user.pairs),
                                   ex.user.demographic)
        assert "A student." in ica_prompt and "post" in ica_prompt
        for j, response in enumerate(ex.responses):
            assert p_scores.logp[j] == pytest.approx(_plain_logp(policy, ptok, pba_prompt, response), abs=1e-4)
            assert r_scores.logp[j] == pytest.approx(_plain_logp(reference, rtok, ica_prompt, response), abs=1e-4)
    assert res.config["reference_view"]["template"] == "alignx-eval"


def test_reference_view_can_be_set_on_its_own_and_same_model_other_view_is_not_raw(tiny_model_dir, pair_file):
    cfg = AccuracyConfig(data=str(pair_file), policy=str(tiny_model_dir), reference=str(tiny_model_dir), cache=False,
                         view={"view": "none"}, reference_view={"view": "ica"}, n_boot=50, limit=6)
    res = evaluate_accuracy(cfg)
    assert res.mode == "alignment"
    with_history = [i for i, s in enumerate(res.slices) if s != "none"]
    assert any(res.policy[i].logp != res.reference[i].logp for i in with_history)
    with pytest.raises(ValueError, match="protocol 'alignx' evaluates the ica or pba method"):
        AccuracyConfig(data="x", view={"view": "none"}, protocol="alignx")


def test_exchanging_policy_and_reference_mirrors_the_accuracy_from_independent_scoring(pair_file, tiny_model_dir,
                                                                                      second_model_dir):
    """Expected values come from plain forwards of each model, never from the result object itself."""
    from personalign.records.io import read_examples
    from personalign.views.build import ViewConfig, build_view

    a, atok = load_model(tiny_model_dir)
    b, btok = load_model(second_model_dir)
    margins = []
    for ex in read_examples(pair_file):
        prompt = build_view(ex, ViewConfig(), atok).prompt
        da = _plain_logp(a, atok, prompt, ex.chosen) - _plain_logp(a, atok, prompt, ex.rejected)
        db = _plain_logp(b, btok, prompt, ex.chosen) - _plain_logp(b, btok, prompt, ex.rejected)
        margins.append(db - da)
    b_over_a = np.mean([m > 0 for m in margins])
    a_over_b = np.mean([m < 0 for m in margins])
    assert 0 < b_over_a < 1 and b_over_a != pytest.approx(0.5)  # the two directions must differ
    res_ba = evaluate_accuracy(AccuracyConfig(data=str(pair_file), policy=str(second_model_dir),
                                              reference=str(tiny_model_dir), cache=False, n_boot=50))
    res_ab = evaluate_accuracy(AccuracyConfig(data=str(pair_file), policy=str(tiny_model_dir),
                                              reference=str(second_model_dir), cache=False, n_boot=50))
    assert res_ba.estimates["overall"].value == pytest.approx(b_over_a)
    assert res_ab.estimates["overall"].value == pytest.approx(a_over_b)


def test_truncation_counts_survive_the_cache(tiny_model_dir, tmp_path):
    data = tmp_path / "long.jsonl"
    write_jsonl([{"prompt": "Describe " + "the item carefully " * 30, "chosen": "red " * 20, "rejected": "blue"}
                 for _ in range(3)], data)
    cfg = AccuracyConfig(data=str(data), policy=str(tiny_model_dir), max_length=48, n_boot=20)
    first, second = evaluate_accuracy(cfg), evaluate_accuracy(cfg)  # the second reads the cache
    assert (data.parent / ".personalign-cache").is_dir()
    assert first.counts["truncated_for_scoring"] == second.counts["truncated_for_scoring"] == 3
    assert [s.truncated for s in second.policy] == [True] * 3


def test_scoring_reads_the_token_store_one_batch_at_a_time(pair_file, tiny_model_dir, second_model_dir, tmp_path,
                                                            monkeypatch):
    """The policy and reference passes take rows from the memory-mapped store per batch: the records
    held in Python at once are bounded by the batch, not by the file."""
    from personalign.tokenstore.store import TokenStore

    data = tmp_path / "pairs.jsonl"
    data.write_bytes(pair_file.read_bytes())
    reads: list[int] = []
    real = TokenStore.examples
    monkeypatch.setattr(TokenStore, "examples", lambda self, idx: reads.append(len(idx)) or real(self, idx))
    res = evaluate_accuracy(AccuracyConfig(data=str(data), policy=str(second_model_dir),
                                           reference=str(tiny_model_dir), max_tokens_per_batch=256, n_boot=50))
    n = res.counts["records"]
    assert n >= 20 and sum(reads) == 2 * n  # each row read once per model
    assert max(reads) < n / 2  # several batches, each a few rows


def test_alignx_protocol_keeps_all_history_and_cuts_prompts_from_the_left(tiny_model_dir, tmp_path):
    """The seed's lengths (eval/loss_ica.py): no history dropped, each prompt cut to its last N tokens
    (7679 by default), responses whole; scores equal a plain forward over those hand-cut ids."""
    assert AccuracyConfig(data="x", view={"view": "ica"}, protocol="alignx").max_prompt_tokens == 8192 - 512 - 1
    assert AccuracyConfig(data="x", view={"view": "ica"}, protocol="alignx").max_length is None
    with pytest.raises(ValueError, match="keeps the seed's lengths"):
        AccuracyConfig(data="x", view={"view": "ica"}, protocol="alignx", max_length=4096)
    recs = [{"prompt": f"Describe item {i}", "chosen": "red blue", "rejected": "slow dark cold",
             "User-Generated Content": [{"prompt": f"post {j}", "comment": "I like long walks. " * 8} for j in range(6)]}
            for i in range(3)]
    write_jsonl(recs, tmp_path / "ica.jsonl")
    cfg = AccuracyConfig(data=str(tmp_path / "ica.jsonl"), policy=str(tiny_model_dir), protocol="alignx",
                         max_prompt_tokens=64, view={"view": "ica"}, cache=False, n_boot=20)
    res = evaluate_accuracy(cfg)
    model, tok = load_model(tiny_model_dir)
    from personalign.records.io import read_examples
    from personalign.views.templates import history_text, render_prompt

    for ex, scores in zip(read_examples(tmp_path / "ica.jsonl"), res.policy):
        prompt = render_prompt("alignx-eval", "ica", ex.prompt, history_text(ex.user.ugc, ex.user.pairs), None)
        assert all(f"post {j}" in prompt for j in range(6))  # all history written
        ids = tok(prompt, add_special_tokens=False)["input_ids"]  # alignx-eval writes BOS as text: kept, then the rest cut
        assert ids[0] == tok.bos_token_id and len(ids) > 65
        kept = [ids[0]] + ids[-64:]
        for j, response in enumerate(ex.responses):
            r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            with torch.no_grad():
                logits = model(torch.tensor([kept + r])).logits[0].float().log_softmax(-1)
            expected = sum(logits[64 + i, t].item() for i, t in enumerate(r))
            assert scores.logp[j] == pytest.approx(expected, abs=1e-4)
