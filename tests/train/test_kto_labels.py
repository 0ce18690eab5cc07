"""KTO's labels through `train`: by position for pairs and rankings, from the record's own label for an
unpaired completion; stored rewards (any scale) and a rejected-side persona never flip them.

Each test records the `desirable` mask the loop hands to `kto_loss` (the real loss still runs) and
compares it with the labels written by hand for the records of the file.
"""
from __future__ import annotations

import pytest
import torch

from personalign.records.io import write_jsonl
from personalign.train import loop
from personalign.train import objective as objective_module
from personalign.train.config import TrainConfig
from personalign.train.loop import train


@pytest.fixture
def desirable(monkeypatch) -> list[tuple[list[int], torch.Tensor]]:
    """(the batch's record indices, the mask handed to kto_loss) of every training micro-batch."""
    seen, batches = [], []
    real_loss, real_collate = objective_module.kto_loss, loop.collate
    monkeypatch.setattr(loop, "collate", lambda store, idx, *a: batches.append(list(idx)) or real_collate(store, idx, *a))
    monkeypatch.setattr(objective_module, "kto_loss", lambda p, r, d, *a, **k: seen.append((batches[-1], d.clone()))
                        or real_loss(p, r, d, *a, **k))
    return seen


def run(model_dir, tmp_path, records: list[dict], view: str = "none", **settings) -> None:
    write_jsonl(records, tmp_path / "data.jsonl")
    train(TrainConfig(model=str(model_dir), data=str(tmp_path / "data.jsonl"), loss="kto", max_steps=1,
                      per_device_train_batch_size=len(records), max_length=64, report_to="none",
                      view={"view": view, **settings}, output_dir=str(tmp_path / "run")))


def test_a_rewarded_ranking_is_labelled_by_position_not_by_reward_size(tiny_model_dir, tmp_path, desirable,
                                                                      one_torch_thread):
    """Rewards [3.1, 1.2] are both above 0.5, [0.3, 0.1] both below: the best response is desirable, the other not."""
    records = [{"prompt": f"Question {i}?", "responses": [f"Good answer {i}.", "Bad."], "rewards": rewards}
               for i, rewards in enumerate([[3.1, 1.2], [0.3, 0.1], [3.1, 1.2], [0.3, 0.1]])]
    run(tiny_model_dir, tmp_path, records)
    ((_, mask),) = desirable
    assert mask.tolist() == [True, False] * 4  # row by row: (best, other)


def test_an_unpaired_label_survives_a_rejected_side_persona(tiny_model_dir, tmp_path, desirable, one_torch_thread):
    """Under a rejected-side persona a pair's order flips (the rejected persona's user prefers the rejected
    response), but an unpaired completion keeps its own label."""
    personas = {"chosen_persona": "The user likes detail.", "rejected_persona": "The user likes brevity."}
    records = [{"prompt": "Plan my day?", "chosen": "A detailed plan.", "rejected": "Rest.", **personas},
               {"prompt": "A book?", "completion": "A long novel.", "label": True, **personas},
               {"prompt": "A film?", "completion": "Anything.", "label": False, **personas}]
    run(tiny_model_dir, tmp_path, records, "persona", persona_source="rejected")
    ((order, mask),) = desirable
    expected = {0: [True, False], 1: [True], 2: [False]}  # the pair (reordered: "Rest." first), then the labels
    assert mask.tolist() == [label for i in order for label in expected[i]]
