"""`personalign eval rm` and `eval reward` on a reward model trained with loss rm."""
import json

import pytest
import torch
from typer.testing import CliRunner

from personalign.cli import app
from personalign.models.rewards import load_reward_model
from personalign.records.io import read_examples, write_jsonl
from personalign.records.tokens import tokenize_pair
from personalign.train.config import TrainConfig
from personalign.train.loop import train
from personalign.views.build import ViewConfig, render_views
from personalign.views.templates import build_prompt

VIEW = ViewConfig(view="demo")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pet_records(n: int, offset: int = 0) -> list[dict]:
    """Which reply a user prefers depends only on their demographic text (cats or dogs)."""
    out = []
    for i in range(offset, offset + n):
        pet, other = ("cats", "dogs") if i % 2 == 0 else ("dogs", "cats")
        out.append({"prompt": ["Any advice?", "A tip, please."][i % 2], "chosen": f"A tip for {pet} people.",
                    "rejected": f"A tip for {other} people.", "Demographic Information": f"The user loves {pet}.",
                    "user_id": f"u{i}"})
    return out


@pytest.fixture(scope="module")
def rm_run(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("rm")
    write_jsonl(pet_records(32), root / "train.jsonl")
    write_jsonl(pet_records(16, offset=100), root / "held_out.jsonl")
    result = train(TrainConfig(model=str(tiny_model_dir), data=str(root / "train.jsonl"), loss="rm", view=VIEW,
                               learning_rate=3e-3, per_device_train_batch_size=8, num_train_epochs=10,
                               max_length=96, output_dir=str(root / "run"), report_to=[]))
    return root, result.final_dir


def plain(model, tok, prompt: str, response: str) -> float:
    t = tokenize_pair(tok, prompt, [response])
    with torch.no_grad():
        return model(input_ids=torch.tensor([t.prompt_ids + t.response_ids[0]])).logits[0, 0].item()


def test_eval_rm_reports_accuracy_by_slice_under_the_trained_view(rm_run):
    root, final = rm_run
    res = CliRunner().invoke(app, ["eval", "rm", "--data", str(root / "held_out.jsonl"), "--model", str(final),
                                   "--out", str(root / "eval")])
    assert res.exit_code == 0, res.output
    doc = json.loads((root / "eval" / "rm.json").read_text())
    assert doc["config"]["view"]["view"] == "demo"  # the trained view, from personalign.json
    model, tok = load_reward_model(final)
    rendered = list(render_views(read_examples(root / "held_out.jsonl"), VIEW, tok))
    correct = [plain(model, tok, r.prompt, r.responses[0]) > plain(model, tok, r.prompt, r.responses[1])
               for r in rendered]
    overall = doc["accuracy"]["overall"]
    assert overall["value"] == pytest.approx(sum(correct) / len(correct)) and overall["n"] == 16
    assert overall["value"] > 0.8 and overall["low"] <= overall["value"] <= overall["high"]
    rows = [json.loads(line) for line in (root / "eval" / "rewards.jsonl").read_text().splitlines()]
    assert rows[0]["rewards"][0] == pytest.approx(plain(model, tok, rendered[0].prompt, rendered[0].responses[0]),
                                                  abs=1e-4)
    assert "reward-model accuracy" in res.output


def test_eval_reward_scores_an_rm_as_it_was_trained(rm_run):
    root, final = rm_run
    gen = root / "generations.jsonl"
    write_jsonl([{"prompt": "Any advice?", "response": "A tip for cats people."},
                 {"prompt": "Hi", "response": "Hello."}], gen)
    res = CliRunner().invoke(app, ["eval", "reward", str(gen), "--model", str(final), "--out", str(root / "r.json")])
    assert res.exit_code == 0, res.output
    model, tok = load_reward_model(final)
    expected = [plain(model, tok, build_prompt("chat", "none", p, tokenizer=tok).text, r)
                for p, r in [("Any advice?", "A tip for cats people."), ("Hi", "Hello.")]]
    mean = sum(1 / (1 + pow(2.718281828459045, -v)) for v in expected) / 2
    assert json.loads((root / "r.json").read_text())["all"]["reward"]["value"] == pytest.approx(mean, abs=1e-4)


def test_best_of_4_with_the_embedded_model_against_greedy_under_the_judge(rm_run, default_model_dir, tmp_path):
    root, final = rm_run
    run = CliRunner().invoke
    data = str(root / "held_out.jsonl")
    common = ["--data", data, "--limit", "3", "--view", "demo", "--max-new-tokens", "8"]
    res = run(app, ["eval", "generate", *common, "--out", str(tmp_path / "greedy")])
    assert res.exit_code == 0, res.output
    res = run(app, ["eval", "generate", *common, "--out", str(tmp_path / "best"), "--best-of", "4",
                    "--reward-model", str(final), "--temperature", "1.0"])
    assert res.exit_code == 0, res.output
    assert "best of 4" in res.output
    rows = [json.loads(line) for line in (tmp_path / "best" / "generations.jsonl").read_text().splitlines()]
    model, tok = load_reward_model(final)
    rendered = list(render_views(read_examples(data), VIEW, tok))[:3]
    for row, r in zip(rows, rendered):
        assert len(row["candidates"]) == 4
        expected = [plain(model, tok, r.prompt, c) for c in row["candidates"]]
        assert row["candidate_rewards"] == pytest.approx(expected, abs=1e-4)
        assert row["response"] == row["candidates"][max(range(4), key=expected.__getitem__)]
    assert len({c for row in rows for c in row["candidates"]}) > 3  # sampling gave different candidates
    settings = json.loads((tmp_path / "best" / "generation.json").read_text())
    assert settings["counts"]["generated"] + settings["counts"]["reused"] == 12 and settings["best_of"] == 4

    res = run(app, ["eval", "judge", "--base", str(tmp_path / "greedy"), "--test", str(tmp_path / "best"),
                    "--out", str(tmp_path / "judge"), "--rubric", "quality"])
    assert res.exit_code == 0, res.output
    judged = json.loads((tmp_path / "judge" / "judge.json").read_text())
    assert judged["config"]["test_decoding"] == f"best of 4 by {final}"
    assert judged["config"]["base_decoding"] == "greedy"
    res = run(app, ["report", str(tmp_path / "judge"), "--out", str(tmp_path / "report.html")])
    assert res.exit_code == 0, res.output
    assert f"best of 4 by {final} vs greedy" in (tmp_path / "report.md").read_text()


def test_a_lora_reward_model_exports_merged_and_scores_the_same(tiny_model_dir, tmp_path):
    from personalign.models.lora import LoraSettings
    from personalign.train.checkpoints import export_model

    write_jsonl(pet_records(16), tmp_path / "train.jsonl")
    result = train(TrainConfig(model=str(tiny_model_dir), data=str(tmp_path / "train.jsonl"), loss="rm", view=VIEW,
                               lora=LoraSettings(r=4), learning_rate=3e-3, per_device_train_batch_size=8, max_steps=4,
                               max_length=96, output_dir=str(tmp_path / "run"), report_to=[], save_steps=2))
    merged = export_model(tmp_path / "run", tmp_path / "merged", merge=True)
    from_checkpoint = export_model(tmp_path / "run" / "checkpoint-4", tmp_path / "from-checkpoint", merge=True)
    adapter, tok = load_reward_model(result.final_dir)
    for exported in (merged, from_checkpoint):
        model, _ = load_reward_model(exported)
        assert (exported / "model.safetensors").is_file()
        for prompt, response in [("Any advice?", "A tip for cats people."), ("Hi", "Hello.")]:
            assert plain(model, tok, prompt, response) == pytest.approx(plain(adapter, tok, prompt, response), abs=1e-4)
