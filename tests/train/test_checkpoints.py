"""Checkpoint pruning and best-checkpoint selection on hand-made checkpoint states."""
from __future__ import annotations

import json

from personalign.train.checkpoints import STATE_FILE, best_checkpoint, checkpoints, prune_checkpoints


def make(out, step: int, value: float | None, greater: bool = True):
    d = out / f"checkpoint-{step}"
    d.mkdir(parents=True)
    metric = None if value is None else {"name": "m", "value": value, "greater_is_better": greater}
    (d / STATE_FILE).write_text(json.dumps({"step": step, "metric": metric}))
    return d


def names(paths):
    return [p.name for p in paths]


def test_best_is_the_highest_accuracy_latest_among_equals(tmp_path):
    for step, value in [(1, 0.5), (2, 0.75), (3, 0.75), (4, 0.25), (5, None)]:
        make(tmp_path, step, value)
    assert best_checkpoint(tmp_path).name == "checkpoint-3"


def test_best_is_the_lowest_loss_when_smaller_is_better(tmp_path):
    for step, value in [(1, 0.9), (2, 0.3), (3, 0.6)]:
        make(tmp_path, step, value, greater=False)
    assert best_checkpoint(tmp_path).name == "checkpoint-2"
    assert best_checkpoint(tmp_path / "none") is None


def test_pruning_keeps_the_limit_the_last_and_the_best(tmp_path):
    for step, value in [(1, 0.9), (2, 0.1), (3, 0.2), (4, 0.3), (5, 0.4)]:
        make(tmp_path, step, value)
    deleted = prune_checkpoints(tmp_path, 2)
    assert names(deleted) == ["checkpoint-2", "checkpoint-3", "checkpoint-4"]
    assert names(checkpoints(tmp_path)) == ["checkpoint-1", "checkpoint-5"]  # best (0.9) and last
    assert prune_checkpoints(tmp_path, 2) == []
    assert names(prune_checkpoints(tmp_path, None)) == []


def test_pruning_removes_oldest_first_when_the_best_is_last(tmp_path):
    for step, value in [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)]:
        make(tmp_path, step, value)
    assert names(prune_checkpoints(tmp_path, 3)) == ["checkpoint-1"]
    assert names(checkpoints(tmp_path)) == ["checkpoint-2", "checkpoint-3", "checkpoint-4"]


def test_training_prunes_as_it_saves(tiny_model_dir, tmp_path, one_torch_thread):
    from personalign.records.io import write_jsonl
    from personalign.train.config import TrainConfig
    from personalign.train.loop import train
    from personalign.views.build import ViewConfig

    data = tmp_path / "d.jsonl"
    write_jsonl([{"prompt": f"Q{i}?", "chosen": f"yes {i}", "rejected": "no"} for i in range(8)], data)
    result = train(TrainConfig(model=str(tiny_model_dir), data=str(data), view=ViewConfig(), max_steps=4,
                               per_device_train_batch_size=4, save_steps=1, save_total_limit=2, logging_steps=1,
                               learning_rate=1e-3, max_length=64, output_dir=str(tmp_path / "run"), report_to="none"))
    kept = checkpoints(result.output_dir)
    states = [json.loads((p / STATE_FILE).read_text()) for p in kept]
    assert len(kept) == 2 and kept[-1].name == "checkpoint-4"
    rows = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}
    best_step = min(losses, key=lambda s: (losses[s], -s))  # each save ranks the mean train loss since the last
    assert result.best_checkpoint.name == f"checkpoint-{best_step}"
    # after the last save: the last and the best stay; older ones go first until 2 are left
    expected = [4] if best_step == 4 else [best_step, 4]
    expected = sorted(expected + [s for s in (3, 2, 1) if s not in expected][: 2 - len(expected)])
    assert [s["step"] for s in states] == expected


def test_the_last_checkpoint_survives_even_beyond_the_limit(tmp_path):
    for step, value in [(1, 0.9), (2, 0.1), (3, 0.2)]:
        make(tmp_path, step, value)
    assert names(prune_checkpoints(tmp_path, 1)) == ["checkpoint-2"]
    assert names(checkpoints(tmp_path)) == ["checkpoint-1", "checkpoint-3"]  # best and last: 2 > limit 1
