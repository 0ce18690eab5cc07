"""The training loop learns: DPO raises alignment accuracy, SFT and PRO lower their losses, LoRA
adapters save and load exactly, and the data order is a fixed function of (seed, step)."""
from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from plain import agreement_slack, plain_scores
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from personalign.cli import app
from personalign.curate.synth import synth_ranking
from personalign.models.loading import load_model
from personalign.models.lora import LoraSettings
from personalign.models.scorer import ResponseLogprobs, score_responses
from personalign.records.io import read_examples, write_jsonl
from personalign.tokenstore import store as store_module
from personalign.train.build import trainable_module
from personalign.train.config import TrainConfig
from personalign.train.loop import train
from personalign.train.losses import pro_loss, sft_loss
from personalign.train.schedule import epoch_order, step_micro_batches
from personalign.views.build import ViewConfig, render_views

VIEW = ViewConfig(view="demo", sample_history=True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pet_records(n: int) -> list[dict]:
    """AlignX-like pairs: which reply wins depends only on the user's demographic text."""
    prompts = ["Any advice for me?", "What should I do this weekend?", "Give me a tip."]
    out = []
    for i in range(n):
        pet, other = ("cats", "dogs") if i % 2 == 0 else ("dogs", "cats")
        out.append({"prompt": prompts[i % 3], "chosen": f"Here is a tip for {pet} people.",
                    "rejected": f"Here is a tip for {other} people.",
                    "Demographic Information": f"The user loves {pet}."})
    return out


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    write_jsonl(pet_records(32), path)
    return path


def config(model_dir, data, out, **kw) -> TrainConfig:
    base = dict(model=str(model_dir), data=str(data), view=VIEW, learning_rate=1e-3, per_device_train_batch_size=8,
                max_length=96, logging_steps=5, save_steps=1000, output_dir=str(out))
    return TrainConfig(**(base | kw))


def scores(model, tok, data, view=VIEW):
    """Expected scores from plain forwards (tests/plain.py), independent of the engine's scorer."""
    return plain_scores(model, tok, data, view)


def logp(model, tok, data) -> torch.Tensor:
    return torch.tensor([s.logp for s in scores(model, tok, data)])


def test_dpo_raises_alignment_accuracy(tiny_model_dir, pairs, tmp_path, monkeypatch):
    start, tok = load_model(tiny_model_dir)
    before = logp(start, tok, pairs)
    raw_before = (before[:, 0] > before[:, 1]).float().mean().item()
    assert 0.25 <= raw_before <= 0.75  # the untrained model cannot tell users apart

    calls = []
    real = store_module.tokenize_pair
    monkeypatch.setattr(store_module, "tokenize_pair", lambda *a, **k: calls.append(1) or real(*a, **k))
    fresh = tmp_path / "pairs.jsonl"  # a copy of its own: no token store beside it yet, whatever ran before
    fresh.write_bytes(pairs.read_bytes())
    result = train(config(tiny_model_dir, fresh, tmp_path / "run", eval_data=str(fresh), num_train_epochs=10,
                          eval_steps=20))
    assert len(calls) == 64  # 32 training + 32 eval records, each tokenized once for 40 steps

    trained, _ = load_model(result.final_dir)
    after = logp(trained, tok, pairs)
    margin = (after[:, 0] - after[:, 1]) - (before[:, 0] - before[:, 1])
    accuracy = (margin > 0).float().mean().item()
    assert accuracy > 0.9, f"alignment accuracy {accuracy:.2f} (raw before: {raw_before:.2f})"
    assert abs(result.eval_metrics["eval/accuracy"] - accuracy) <= agreement_slack(margin.tolist()) / 32
    assert result.global_step == 40 and (fresh.parent / ".personalign-cache").is_dir()
    logged = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if "train/loss" in row] == [5, 10, 15, 20, 25, 30, 35, 40]


def test_sft_lowers_its_loss(tiny_model_dir, pairs, tmp_path):
    start, tok = load_model(tiny_model_dir)

    def nll(model):
        s = scores(model, tok, pairs)
        return sft_loss(torch.tensor([x.logp[0] for x in s]), torch.tensor([x.n_tokens[0] for x in s])).loss.item()

    result = train(config(tiny_model_dir, pairs, tmp_path / "sft", loss="sft", max_steps=8))
    assert nll(result.policy) < nll(start) - 0.5


def test_pro_lowers_its_loss(tiny_model_dir, tmp_path):
    data = tmp_path / "ranking.jsonl"
    write_jsonl(synth_ranking(8, k=3, seed=0), data)
    start, tok = load_model(tiny_model_dir)
    view = ViewConfig(view="none")

    def loss(model):
        s = scores(model, tok, data, view)
        best_nll = torch.tensor([-x.logp[0] for x in s])
        rewards = torch.tensor([r.rewards for r in read_examples(data)])
        return pro_loss(torch.tensor([x.avg_logp for x in s]), rewards, best_nll=best_nll).loss.item()

    result = train(config(tiny_model_dir, data, tmp_path / "pro", view=view, loss="pro", max_steps=10,
                          per_device_train_batch_size=4, gradient_accumulation_steps=2, max_length=256))
    assert loss(result.policy) < 0.85 * loss(start)


def test_lora_adapter_saves_loads_and_exports(tiny_model_dir, pairs, tmp_path):
    run = tmp_path / "lora"
    result = train(config(tiny_model_dir, pairs, run, lora=LoraSettings(r=4, lora_alpha=8, lora_dropout=0.0),
                          learning_rate=1e-2, max_steps=3, save_steps=3))
    final = result.final_dir
    assert (final / "adapter_config.json").is_file() and (final / "adapter_model.safetensors").is_file()
    saved = load_file(str(run / "checkpoint-3" / "model.safetensors"))  # adapters only, not the base model
    trainable = {n for n, p in ResponseLogprobs(result.policy).named_parameters() if p.requires_grad}
    assert saved and set(saved) == trainable and all("lora_" in k for k in saved)
    assert not (final / "model.safetensors").exists()

    base, tok = load_model(tiny_model_dir)
    base_logp = logp(base, tok, pairs)
    in_memory = logp(result.policy, tok, pairs)
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), final)
    torch.testing.assert_close(logp(loaded, tok, pairs), in_memory, atol=1e-5, rtol=0)
    assert (in_memory - base_logp).abs().max() > 1e-3  # the adapter changed the model

    runner = CliRunner()
    for source, out in ((run, tmp_path / "merged"), (run / "checkpoint-3", tmp_path / "merged-ckpt")):
        res = runner.invoke(app, ["export", str(source), "--out", str(out), "--merge"])
        assert res.exit_code == 0, res.output
        assert not (out / "adapter_config.json").exists()
        merged, _ = load_model(out)
        torch.testing.assert_close(logp(merged, tok, pairs), in_memory, atol=1e-4, rtol=0)
    res = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "adapter")])
    assert res.exit_code == 0 and (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_lora_resumes_from_an_adapter_only_checkpoint(tiny_model_dir, pairs, tmp_path):
    lora = LoraSettings(r=4, lora_alpha=8, lora_dropout=0.0)
    constant = dict(lr_scheduler_type="cosine_with_min_lr", min_lr_rate=1.0, learning_rate=1e-2, save_steps=1,
                    per_device_train_batch_size=4, lora=lora)
    whole = train(config(tiny_model_dir, pairs, tmp_path / "whole", max_steps=2, **constant))
    train(config(tiny_model_dir, pairs, tmp_path / "cut", max_steps=1, **constant))
    resumed = train(config(tiny_model_dir, pairs, tmp_path / "cut", max_steps=2, resume_from_checkpoint="latest",
                           **constant))
    assert resumed.resumed_from == tmp_path / "cut" / "checkpoint-1"
    a, b = load_file(str(whole.final_dir / "adapter_model.safetensors")), \
        load_file(str(resumed.final_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)


def test_the_lm_head_in_one_piece_trains_like_the_chunked_head(tiny_model_dir, pairs, tmp_path):
    """`logits_chunk_size: null` (no chunks, nothing recomputed) takes the same steps as the default. AdamW with
    eps=1 makes each update ≈ lr·g, so the weights compare the gradients themselves."""
    common = dict(max_steps=2, learning_rate=1.0, adam_epsilon=1.0, weight_decay=0.0, max_grad_norm=None,
                  lr_scheduler_type="constant", per_device_train_batch_size=4, logging_steps=1, report_to="none")
    chunked = train(config(tiny_model_dir, pairs, tmp_path / "chunked", logits_chunk_size=7, **common))
    whole = train(config(tiny_model_dir, pairs, tmp_path / "whole", logits_chunk_size=None, **common))
    a = load_file(str(chunked.final_dir / "model.safetensors"))
    b = load_file(str(whole.final_dir / "model.safetensors"))
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    assert max((a[k] - start[k]).abs().max().item() for k in start) > 1e-3
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-5, msg=name)
    assert whole.train_metrics["train/loss"] == pytest.approx(chunked.train_metrics["train/loss"], abs=1e-5)
    for size in (None, 7):  # the setting reaches the module the loop trains
        cfg = config(tiny_model_dir, pairs, tmp_path / "x", logits_chunk_size=size)
        assert trainable_module(load_model(str(tiny_model_dir))[0], cfg).chunk_size == size


def test_data_order_is_a_function_of_seed_and_step():
    n, per_device, ga = 10, 2, 2  # global batch 4 = 4 × 1 process = 2 × 2 processes; the 3rd step wraps
    order = epoch_order(n, seed=7, epoch=0)
    assert torch.equal(order, epoch_order(n, seed=7, epoch=0))
    assert not torch.equal(order, epoch_order(n, seed=7, epoch=1))
    steps = [step_micro_batches(order, k, per_device=4, accumulation=1, rank=0, world=1)[0] for k in range(3)]
    seen = [i for s in steps for i in s]
    assert sorted(seen[:n]) == list(range(n)) and seen[n:] == order[:2].tolist()
    for k in range(3):  # two processes × accumulation 2 see exactly the single-process global batch
        one = step_micro_batches(order, k, per_device=per_device * 2, accumulation=ga, rank=0, world=1)
        two = [step_micro_batches(order, k, per_device=per_device, accumulation=ga, rank=r, world=2) for r in (0, 1)]
        for j in range(ga):
            assert one[j] == two[0][j] + two[1][j]


def test_a_model_trains_in_the_dtype_it_was_loaded_in(tiny_model_dir, pairs, tmp_path):
    """`dtype: bfloat16` loads the weights in bf16 (no fp32 copy) and trains and saves them in bf16;
    the reference cache of such a run is not the fp32 run's."""
    caches = lambda: set(pairs.parent.glob(".personalign-cache/tokens-*/logprobs-*.safetensors"))  # noqa: E731
    before = caches()
    result = train(config(tiny_model_dir, pairs, tmp_path / "bf16", dtype="bfloat16", max_steps=2, logging_steps=1,
                          report_to="none"))
    assert {p.dtype for p in result.policy.parameters()} == {torch.bfloat16}
    assert torch.isfinite(torch.tensor(result.train_metrics["train/loss"]))
    saved = AutoModelForCausalLM.from_pretrained(result.final_dir, dtype="auto")
    assert {p.dtype for p in saved.parameters()} == {torch.bfloat16}
    fp32 = train(config(tiny_model_dir, pairs, tmp_path / "fp32", max_steps=1, report_to="none"))
    assert {p.dtype for p in fp32.policy.parameters()} == {torch.float32}
    assert len(caches() - before) >= 1 and len(caches()) >= 2  # the bf16 reference is not the fp32 one
    from personalign.models.refcache import precision

    keys = {precision(config(tiny_model_dir, pairs, tmp_path, dtype=d), bf16_autocast=b)
            for d in ("float32", "bfloat16") for b in (False, True)}
    assert len(keys) == 4


@pytest.mark.parametrize("loss, extra", [("simpo", {"beta": 2.0}), ("orpo", {"beta": 0.5}), ("kto", {}),
                                         ("dpo", {"loss_type": ["sigmoid", "bco_pair"]})])
def test_every_objective_learns_the_users_preference(loss, extra, tiny_model_dir, pairs, tmp_path, monkeypatch):
    """Each objective trains through the one loop; reference-free ones never score a reference, kto
    scores each record's mismatched response as a third one."""
    from personalign.train import data as train_data

    start, tok = load_model(tiny_model_dir)
    before = scores(start, tok, pairs)
    referenced = []
    real = train_data.reference_table
    monkeypatch.setattr(train_data, "reference_table", lambda model, rows, *a: referenced.append(rows.width)
                        or real(model, rows, *a))
    result = train(config(tiny_model_dir, pairs, tmp_path / loss, loss=loss, eval_data=str(pairs),
                          num_train_epochs=10, eval_steps=1000, **extra))
    after = scores(result.policy, tok, pairs)
    if loss in ("simpo", "orpo"):
        assert referenced == []
        margins = [a.avg_logp[0] - a.avg_logp[1] for a in after]
    else:
        assert referenced == ([3, 3] if loss == "kto" else [2, 2])  # training and eval rows
        margins = [(a.logp[0] - a.logp[1]) - (b.logp[0] - b.logp[1]) for a, b in zip(after, before)]
    accuracy = sum(m > 0 for m in margins) / len(margins)
    assert accuracy > 0.85, f"{loss}: accuracy {accuracy:.2f}"
    assert abs(result.eval_metrics["eval/accuracy"] - accuracy) <= agreement_slack(margins) / 32
    if loss == "kto":
        assert "eval/kl" in result.eval_metrics


@pytest.mark.parametrize("lora", [None, LoraSettings(r=8, lora_alpha=16)])
def test_a_reward_model_learns_the_users_preference(lora, tiny_model_dir, pairs, tmp_path, monkeypatch):
    """loss rm: a scalar head trained on the demo view ranks each user's reply first when scored by the
    saved model's own forward, one text at a time; no reference is ever scored."""
    from personalign.models.rewards import load_reward_model
    from personalign.train import data as train_data

    monkeypatch.setattr(train_data, "reference_table", lambda *a: pytest.fail("a reward model needs no reference"))
    result = train(config(tiny_model_dir, pairs, tmp_path / "rm", loss="rm", eval_data=str(pairs), lora=lora,
                          num_train_epochs=10, eval_steps=1000, learning_rate=3e-3))
    model, tok = load_reward_model(result.final_dir)
    margins = []
    for r in render_views(read_examples(pairs), VIEW, tok):
        values = []
        for response in r.responses:  # ids built by hand: prompt, response, EOS
            ids = tok(r.prompt)["input_ids"] + tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            with torch.no_grad():
                values.append(model(input_ids=torch.tensor([ids])).logits[0, 0].item())
        margins.append(values[0] - values[1])
    accuracy = sum(m > 0 for m in margins) / len(margins)
    assert accuracy > 0.85, f"reward accuracy {accuracy:.2f}"
    assert abs(result.eval_metrics["eval/accuracy"] - accuracy) <= agreement_slack(margins) / 32
    assert (result.final_dir / ("adapter_config.json" if lora else "model.safetensors")).is_file()


def test_kto_trains_on_unpaired_completions_mixed_with_pairs(tiny_model_dir, tmp_path):
    """TRL's unpaired format (prompt, completion, label) in the same file as pairs: each labelled
    completion is one KTO example; afterwards the implied reward (log-prob gain over the starting
    model) of the desirable completions is above that of the undesirable ones."""
    rows = []
    for i, r in enumerate(pet_records(32)):
        if i % 2:
            rows.append(r)
        else:
            rest = {k: v for k, v in r.items() if k not in ("chosen", "rejected")}
            rows.append(rest | {"completion": r["chosen"] if i % 4 == 0 else r["rejected"], "label": i % 4 == 0})
    data = tmp_path / "mixed.jsonl"
    write_jsonl(rows, data)
    start, tok = load_model(tiny_model_dir)
    examples = list(read_examples(data))
    assert sorted({len(ex.responses) for ex in examples}) == [1, 2]
    result = train(config(tiny_model_dir, data, tmp_path / "kto", loss="kto", num_train_epochs=20))
    singles = [(ex, ex.label) for ex in examples if len(ex.responses) == 1]
    items = [(r.prompt, r.responses) for r in render_views([ex for ex, _ in singles], VIEW, tok)]
    before = score_responses(start, tok, items, progress=False)
    after = score_responses(result.policy, tok, items, progress=False)
    gain = [(a.logp[0] - b.logp[0], good) for (_, good), a, b in zip(singles, after, before)]
    ordered = [g > b for g, good in gain if good for b, bad in gain if not bad]
    assert len(ordered) == 64 and sum(ordered) / len(ordered) > 0.85
    assert "train/kl" in json.loads((result.output_dir / "metrics.jsonl").read_text().splitlines()[-1])


def test_sft_rejects_undesirable_completions_and_dpo_rejects_single_ones(tiny_model_dir, tmp_path):
    from personalign.tokenstore.store import load_store
    from personalign.train.collate import store_spec

    data = tmp_path / "unpaired.jsonl"
    write_jsonl([{"prompt": "Hi", "completion": "Hello there.", "label": True},
                 {"prompt": "Hi", "completion": "Go away.", "label": False}, pet_records(1)[0]], data)
    _, tok = load_model(tiny_model_dir)
    seen = {}
    for loss in ("sft", "dpo", "kto"):
        store, _ = load_store(data, store_spec(VIEW, loss=loss, max_length=96, on_invalid="skip"), tok, progress=False)
        rejects = tmp_path / "unpaired.rejects.jsonl"  # the rejects of the latest build
        fields = [json.loads(line)["field"] for line in rejects.read_text().splitlines()] if rejects.is_file() else []
        seen[loss] = (len(store), fields)
    assert seen == {"sft": (2, ["label"]), "dpo": (1, ["responses", "responses"]), "kto": (3, [])}
