"""ScalingAlignment's rendering as a template (`template: hh`): raw HH text, each response tokenized
with the prompt after one space and no EOS, and a record's `sft_index` choosing the response PRO's
SFT term imitates, all through the token store and `train`."""
from __future__ import annotations

import torch

from personalign.records.io import read_examples, write_jsonl
from personalign.testing import tiny_tokenizer
from personalign.tokenstore.store import load_store
from personalign.train import loop
from personalign.train import objective as objective_module
from personalign.train.collate import store_spec
from personalign.train.config import TrainConfig
from personalign.train.loop import train
from personalign.views.build import ViewConfig, build_view

HH = ViewConfig(view="none", template="hh")


def scaling_alignment(n: int, sft_index: int | None = None) -> list[dict]:
    """ScalingAlignment ranking records: `prefix` pieces with <|prompter|>/<|assistant|>, `suffix`, `reward`."""
    rows = []
    for i in range(n):
        prefix = ["<|prompter|>", f"How do I keep basil {i} alive?", "<|assistant|>"]
        row = {"prefix": [prefix] * 3, "suffix": [f"Water it often, friend {i}.", "Sunlight.", "No idea."],
               "reward": [2.0, 1.0, 0.0]}
        rows.append(row | ({} if sft_index is None else {"sft_index": sft_index}))
    return rows


def test_hh_renders_raw_text_and_tokenizes_responses_with_the_prompt_without_eos(tmp_path):
    """As ScalingAlignment's `train_data_collator`: prompt "\\n\\nHuman: …\\n\\nAssistant:", the text
    prompt + " " + response tokenized whole, no EOS added."""
    tok = tiny_tokenizer()
    write_jsonl(scaling_alignment(3), tmp_path / "r.jsonl")
    ex = next(iter(read_examples(tmp_path / "r.jsonl")))
    assert build_view(ex, HH, tok).prompt == "\n\nHuman: How do I keep basil 0 alive?\n\nAssistant:"
    assert build_view(ex.__class__("Plain question?", ["a"]), HH, tok).prompt == "\n\nHuman: Plain question?\n\nAssistant:"
    store, _ = load_store(tmp_path / "r.jsonl", store_spec(HH, loss="pro", max_length=256), tok, progress=False)
    for t, rec in zip(store.examples(range(3)), scaling_alignment(3)):
        prompt = "".join(rec["prefix"][0]).replace("<|prompter|>", "\n\nHuman: ").replace("<|assistant|>",
                                                                                            "\n\nAssistant: ").rstrip()
        for response, ids in zip(rec["suffix"], t.response_ids):
            whole = tok(prompt + " " + response)["input_ids"]  # the seed's text, tokenized in one piece
            assert t.prompt_ids + ids == whole and ids[-1] != tok.eos_token_id


def test_pro_imitates_the_response_sft_index_names(tiny_model_dir, tmp_path, monkeypatch, one_torch_thread):
    """PRO's SFT term: the NLL of response `sft_index` of each record (ScalingAlignment's `sft_index`),
    not of the best one; a record without one imitates the best."""
    seen = []
    real_objective, real_pro = loop.objective, objective_module.pro_loss
    monkeypatch.setattr(loop, "objective", lambda cfg, logps, n, ref, rewards, sft=None:
                        seen.append({"logps": logps.detach(), "sft": sft}) or real_objective(cfg, logps, n, ref, rewards, sft))
    monkeypatch.setattr(objective_module, "pro_loss", lambda avg, rewards, best_nll, **k:
                        seen[-1].update(best_nll=best_nll.detach()) or real_pro(avg, rewards, best_nll=best_nll, **k))
    write_jsonl(scaling_alignment(2, sft_index=2) + scaling_alignment(2), tmp_path / "ranked.jsonl")
    train(TrainConfig(model=str(tiny_model_dir), data=str(tmp_path / "ranked.jsonl"), loss="pro", view=HH,
                      max_steps=1, per_device_train_batch_size=4, max_length=128, report_to="none",
                      output_dir=str(tmp_path / "run")))
    (step,) = seen
    assert sorted(step["sft"].tolist()) == [0, 0, 2, 2]
    rows = torch.arange(4)
    torch.testing.assert_close(step["best_nll"], -step["logps"][rows, step["sft"]])
