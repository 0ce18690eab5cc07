"""Reward scoring matches a plain forward of a tiny random reward model; BLEU matches hand-counted n-grams."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification
from typer.testing import CliRunner

from personalign.cli import app
from personalign.eval.reward import reward_text, score_files
from personalign.models.rewards import load_reward_model
from personalign.records.errors import RecordError
from personalign.records.io import write_jsonl
from personalign.report.html import build_report
from personalign.testing import tiny_tokenizer

ROWS_A = [
    {"prompt": "What is the capital of France?", "response": "Paris is the capital of France.",
     "chosen": "The capital of France is Paris."},
    {"prompt": "Tell me a joke about cats.", "response": "Why did the cat sit on the computer? To watch the mouse!",
     "chosen": "Why did the cat sit on the computer? Because it wanted to keep an eye on the mouse!"},
    {"prompt": "Hi", "response": "Hello there, how can I help you today with your question?", "chosen": "Hello!"},
]
ROWS_B = [
    {"prompt": f"Give me tip number {i} for learning to cook.", "response": "Practice a little every day. " * (i + 1),
     "chosen": "Start with simple recipes and practice a little every day."}
    for i in range(5)
]


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    """A tiny random Llama reward model (num_labels=1) with the tiny tokenizer, saved to a directory."""
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1, initializer_range=0.2,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config).eval()
    directory = tmp_path_factory.mktemp("rm")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def files(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(ROWS_A, a)
    write_jsonl(ROWS_B, b)
    return a, b


def plain_rewards(model_dir, rows) -> np.ndarray:
    """σ(score), one unpadded forward per row."""
    model, tokenizer = load_reward_model(model_dir)
    out = []
    for r in rows:
        ids = tokenizer(reward_text(tokenizer, r["prompt"], r["response"]), add_special_tokens=False,
                        return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out.append(torch.sigmoid(model(input_ids=ids).logits[0, 0]).item())
    return np.array(out)


def test_rewards_match_a_plain_forward_per_file_and_weighted_over_all(reward_model_dir, files):
    per_file, overall = score_files(reward_model_dir, files, batch_size=3, n_boot=100)
    expected_a, expected_b = plain_rewards(reward_model_dir, ROWS_A), plain_rewards(reward_model_dir, ROWS_B)
    assert len(set(np.round(np.concatenate([expected_a, expected_b]), 6))) == 8, "a random model scores rows apart"
    assert [r.n for r in per_file] == [3, 5] and overall.n == 8
    assert per_file[0].reward.value == pytest.approx(expected_a.mean(), abs=1e-5)
    assert per_file[1].reward.value == pytest.approx(expected_b.mean(), abs=1e-5)
    assert overall.reward.value == pytest.approx((3 * expected_a.mean() + 5 * expected_b.mean()) / 8, abs=1e-5)
    assert overall.bleu is None


def test_bleu_is_corpus_bleu_by_hand(reward_model_dir, tmp_path):
    """Word n-gram precisions counted by hand: "a b c d e" vs "a b c d f" matches 4/5, 3/4, 2/3, 1/2; no
    brevity penalty; BLEU = 100 · (4/5 · 3/4 · 2/3 · 1/2)^(1/4). An exact copy scores 100."""
    path = tmp_path / "bleu.jsonl"
    write_jsonl([{"prompt": "p", "response": "a b c d e", "chosen": "a b c d f"}], path)
    same = tmp_path / "same.jsonl"
    write_jsonl([{"prompt": "p", "response": "the cat sat on the mat", "chosen": "the cat sat on the mat"}], same)
    per_file, overall = score_files(reward_model_dir, [path, same], reference_field="chosen", n_boot=10)
    assert per_file[0].bleu == pytest.approx(100 * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25, abs=1e-3)
    assert per_file[1].bleu == pytest.approx(100.0)
    # over both rows: clipped matches add up per order, (4+6)/(5+6), (3+5)/(4+5), (2+4)/(3+4), (1+3)/(2+3)
    expected = 100 * (10 / 11 * 8 / 9 * 6 / 7 * 4 / 5) ** 0.25
    assert overall.bleu == pytest.approx(expected, abs=1e-3)


def test_a_row_without_the_field_names_its_line(reward_model_dir, tmp_path):
    path = tmp_path / "bad.jsonl"
    write_jsonl([ROWS_A[0], {"prompt": "no response"}], path)
    with pytest.raises(RecordError, match=r"bad.jsonl:2: field 'response'"):
        score_files(reward_model_dir, [path])


def test_the_command_writes_json_that_the_report_shows(reward_model_dir, files, tmp_path):
    out = tmp_path / "results" / "reward.json"
    res = CliRunner().invoke(app, ["eval", "reward", "--model", str(reward_model_dir), *map(str, files),
                                   "--reference-field", "chosen", "--out", str(out)])
    assert res.exit_code == 0, res.output
    saved = json.loads(out.read_text())
    assert saved["kind"] == "reward" and [f["n"] for f in saved["files"]] == [3, 5] and saved["all"]["n"] == 8
    page = build_report([out.parent], tmp_path / "report.html").read_text()
    assert "Reward scores" in page and f"{saved['all']['reward']['value']:.3f}" in page


def test_seed_bleu_is_character_level_sentence_bleu_by_hand():
    from personalign.eval.reward import seed_bleu

    assert seed_bleu(["abcd"], ["abcd"]) == pytest.approx(1.0)
    # characters of "abcde" vs "abcdf": 1-grams 4/5, 2-grams 3/4, 3-grams 2/3, 4-grams 1/2, no brevity penalty
    expected = (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert seed_bleu([" abcde "], ["abcdf"]) == pytest.approx(expected)
    assert seed_bleu(["abcde", "abcd"], ["abcdf", "abcd"]) == pytest.approx((expected + 1) / 2)


def test_scaling_alignment_convention_scores_oasst_text_with_raw_logits(reward_model_dir, files):
    from personalign.eval.reward import oasst_text

    model, tok = load_reward_model(reward_model_dir)
    assert oasst_text(tok, "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bye", "See you") == (
        "<|prompter|>Hi<|im_end|><|assistant|>Hello<|im_end|><|prompter|>Bye<|im_end|><|assistant|>See you<|im_end|>")
    per_file, overall = score_files(reward_model_dir, files, reference_field="chosen", convention="scaling-alignment")
    expected = []
    for row in ROWS_A:
        ids = tok(f"<|prompter|>{row['prompt']}<|im_end|><|assistant|>{row['response']}<|im_end|>")["input_ids"]
        with torch.no_grad():
            expected.append(model(torch.tensor([ids[-1024:]])).logits[0, 0].item())
    assert per_file[0].reward.value == pytest.approx(np.mean(expected), abs=1e-5)  # raw score, not σ
    assert per_file[0].as_dict()["reward_metric"] == "mean raw score (logit)"
    from nltk.translate.bleu_score import sentence_bleu

    chars = np.mean([sentence_bleu([r["chosen"]], r["response"]) for r in ROWS_A])
    assert per_file[0].bleu == pytest.approx(chars)
    with pytest.raises(ValueError, match="convention must be one of"):
        score_files(reward_model_dir, files, convention="paper")
