from __future__ import annotations

import json
import math
import random
from fractions import Fraction

import numpy as np
import pytest
from typer.testing import CliRunner

from personalign.cli import app
from personalign.curate.diversity import (
    Bigrams,
    diversity,
    diversity_curve,
    mean_cosine_distance,
    random_diversity,
    select_diverse,
    tokenize,
)
from personalign.curate.synth import synth_ranking
from personalign.records.io import write_jsonl
from personalign.testing import tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def naive_greedy(token_ids: list[list[int]], k: int, seed: int) -> list[int]:
    """The plain greedy: at each step score every candidate exactly (tuples, sets, Fractions);
    ties to the earliest in the seeded permutation."""
    order = np.random.default_rng(seed).permutation(len(token_ids)).tolist()
    bigrams = [list(zip(t, t[1:])) for t in token_ids]
    covered: set = set()
    total, picked = 0, []
    for _ in range(k):
        def score(i):
            den = total + len(bigrams[i])
            return (Fraction(len(covered | set(bigrams[i])), den) if den else Fraction(0)), -order.index(i)
        best = max((i for i in range(len(token_ids)) if i not in picked), key=score)
        picked.append(best)
        covered |= set(bigrams[best])
        total += len(bigrams[best])
    return picked


def test_d_by_hand():
    ids = [[1, 2, 3, 1, 2], [2, 3, 4], [5], []]
    # bigrams: (1,2) (2,3) (3,1) (1,2) | (2,3) (3,4) | none | none -> 6 bigrams, 4 distinct;
    # (2,2) and (4,5) across prompt boundaries do not count
    d = diversity(ids)
    assert (d.n, d.distinct, d.total) == (4, 4, 6)
    assert d.d == pytest.approx(math.sqrt(4) * 4 / 6)
    sub = diversity(ids, [1, 2])
    assert (sub.n, sub.distinct, sub.total) == (2, 2, 2)
    assert sub.d == pytest.approx(math.sqrt(2))
    assert diversity([[7], []]).d == 0.0
    assert Bigrams.from_token_ids(ids).offsets.tolist() == [0, 4, 6, 6, 6]


def test_tokenize_matches_single_calls(tok):
    prompts = [r["prompt"] for r in synth_ranking(30, seed=1)]
    assert tokenize(prompts, tok, batch_size=7) == [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]


def test_curve_is_d_of_nested_prefixes_of_the_seeded_shuffle():
    rng = random.Random(0)
    ids = [[rng.randrange(30) for _ in range(rng.randrange(0, 9))] for _ in range(200)]
    sizes = [1, 5, 50, 199, 200]
    order = np.random.default_rng(4).permutation(200)
    assert diversity_curve(ids, sizes, seed=4) == [diversity(ids, order[:s]) for s in sizes]
    assert diversity_curve(ids, [200])[0] == diversity(ids)
    with pytest.raises(ValueError, match="between 1 and 200"):
        diversity_curve(ids, [201])


@pytest.mark.parametrize("seed", range(6))
def test_select_diverse_is_the_exact_greedy(seed):
    rng = random.Random(seed)
    vocab = (3, 6, 25)[seed % 3]
    ids = [[rng.randrange(vocab) for _ in range(rng.randrange(0, 10))] for _ in range(40)]
    k = rng.randrange(1, 41)
    assert select_diverse(ids, k, seed) == naive_greedy(ids, k, seed)


def test_select_diverse_beats_random_subsets(tok):
    prompts = [r["prompt"] for r in synth_ranking(400, seed=2)]
    bigrams = Bigrams.from_token_ids(tokenize(prompts, tok))
    picked = select_diverse(bigrams, 40, seed=0)
    assert len(set(picked)) == 40
    rand = [r.d for r in random_diversity(bigrams, 40, draws=20, seed=1)]
    assert diversity(bigrams, picked).d > max(rand) > np.mean(rand)
    with pytest.raises(ValueError, match="cannot select 401 of 400"):
        select_diverse(bigrams, 401)


def test_semantic_mean_distance_equals_brute_force():
    e = np.random.default_rng(0).normal(size=(50, 16)) * np.random.default_rng(1).uniform(0.5, 3, size=(50, 1))
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    sims = unit @ unit.T
    brute = 1 - (sims.sum() - np.trace(sims)) / (50 * 49)
    assert mean_cosine_distance(e) == pytest.approx(brute, abs=1e-12)
    same = np.tile(unit[:1], (5, 1))
    assert mean_cosine_distance(same) == pytest.approx(0.0, abs=1e-12)
    assert mean_cosine_distance(np.vstack([unit[:1], -unit[:1]])) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="at least 2"):
        mean_cosine_distance(unit[:1])
    with pytest.raises(ValueError, match="zero vector"):
        mean_cosine_distance(np.vstack([unit[:2], np.zeros((1, 16))]))


def test_cli_diversity_and_select(tmp_path, tok):
    tok.save_pretrained(tmp_path / "tok")
    records = [{**r, "id": i} for i, r in enumerate(synth_ranking(120, seed=4))]
    write_jsonl(records, tmp_path / "r.jsonl")
    runner = CliRunner()
    res = runner.invoke(app, ["data", "diversity", str(tmp_path / "r.jsonl"), "--tokenizer", str(tmp_path / "tok"),
                              "--plot", str(tmp_path / "d.png"), "--sizes", "10,60,120",
                              "--json", str(tmp_path / "div.json")], terminal_width=200)
    assert res.exit_code == 0, res.output
    d = diversity(tokenize([r["prompt"] for r in records], tok))
    assert f"{d.d:.4f}" in res.output and "N=60 D=" in res.output
    doc = json.loads((tmp_path / "div.json").read_text())
    assert doc["kind"] == "diversity"
    (curve,) = doc["curves"].values()
    assert [p["n"] for p in curve] == [10, 60, 120] and curve[-1]["d"] == pytest.approx(d.d)
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = runner.invoke(app, ["data", "select", str(tmp_path / "r.jsonl"), "--size", "12", "--by", "diversity",
                              "--out", str(tmp_path / "sel.jsonl"), "--tokenizer", str(tmp_path / "tok")],
                        terminal_width=200)
    assert res.exit_code == 0, res.output
    picked = [json.loads(line)["id"] for line in open(tmp_path / "sel.jsonl")]
    ids = tokenize([r["prompt"] for r in records], tok)
    assert picked == select_diverse(ids, 12, 0)
    assert f"D selected {diversity(ids, picked).d:.4f}" in res.output and "20 random subsets: mean" in res.output


def test_scaling_alignment_convention_adds_default_special_tokens_and_cuts_at_512():
    from personalign.curate.diversity import Bigrams, diversity, tokenize
    from personalign.testing import tiny_tokenizer

    tok = tiny_tokenizer(adds_bos=True)
    long = "the quick brown fox jumps over the lazy dog " * 80
    prompts = ["Which answer do you prefer?", "She rejected the first draft.", long]
    ours = tokenize(prompts, tok)
    paper = tokenize(prompts, tok, convention="scaling-alignment")
    assert all(ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1 for ids in ours + paper)
    assert len(paper[2]) == 512 and len(ours[2]) > 512
    # D by hand over the paper's ids: sqrt(N) * distinct / total bigrams
    grams = [tuple(ids[i:i + 2]) for ids in paper for i in range(len(ids) - 1)]
    expected = 3 ** 0.5 * len(set(grams)) / len(grams)
    assert diversity(Bigrams.from_token_ids(paper)).d == pytest.approx(expected)
    with pytest.raises(ValueError, match="convention must be one of"):
        tokenize(prompts, tok, convention="nltk")


def test_prompts_without_bigrams_say_that_d_is_undefined(tmp_path, tok):
    """One-token prompts have no bigram: D is 0/0, reported as n/a with a warning naming the file."""
    tok.save_pretrained(tmp_path / "tok")
    one = tok.convert_ids_to_tokens([tok("word", add_special_tokens=False)["input_ids"][0]])[0]
    word = tok.convert_tokens_to_string([one])
    write_jsonl([{"prompt": word, "chosen": "a", "rejected": "b"} for _ in range(4)], tmp_path / "w.jsonl")
    assert diversity(tokenize([word] * 4, tok)).total == 0
    res = CliRunner().invoke(app, ["data", "diversity", str(tmp_path / "w.jsonl"), "--tokenizer", str(tmp_path / "tok")],
                             terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "n/a" in res.stdout and "w.jsonl:noprompthastwotokens" in "".join(res.stderr.split())  # however wrapped
