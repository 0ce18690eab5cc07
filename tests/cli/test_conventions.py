"""TRL-style configs and what a trained model carries: a conversational file trained through TRL's
names, trackers (TensorBoard and wandb offline), the model card, and eval defaulting to the trained view."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from personalign.cli import app
from personalign.models.card import read_provenance

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def conversational(path, n=8):
    rows = []
    for i in range(n):
        pet = ("cat", "dog")[i % 2]
        rows.append({"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                {"role": "user", "content": f"Any tip for me ({i})?"}],
                     "chosen": [{"role": "assistant", "content": f"Brush your {pet} daily."}],
                     "rejected": [{"role": "assistant", "content": "Buy a boat."}],
                     "Demographic Information": f"The user has a {pet}."})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """One step of LoRA DPO on a conversational file, configured with TRL's names, reporting to
    TensorBoard and wandb (offline)."""
    root = tmp_path_factory.mktemp("conventions")
    data, out = conversational(root / "conv.jsonl"), root / "run"
    args = ["train", f"model_name_or_path={tiny_model_dir}", f"dataset_name={data}", "use_peft=true", "lora_r=4",
            "warmup_steps=1", "max_steps=1", "per_device_train_batch_size=4", "max_length=96", "learning_rate=1e-3",
            "view.view=demo", "eval_strategy=no", "save_strategy=no", "run_name=conv-run",
            "report_to=[tensorboard, wandb]", f"output_dir={out}"]
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_PROJECT": "personalign-test"}
    res = runner.invoke(app, args, env=env)
    assert res.exit_code == 0, res.output
    return data, out


def test_conversational_file_trains_one_step_with_trl_names(trained):
    _, out = trained
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 1
    assert {"train/logps/chosen", "train/logps/rejected", "train/rewards/margins"} <= rows[-1].keys()
    assert rows[-1]["train/logps/chosen"] < 0
    assert (out / "final" / "adapter_config.json").is_file()
    assert json.loads((out / "final" / "adapter_config.json").read_text())["r"] == 4


def test_trackers_write_tensorboard_and_wandb(trained):
    _, out = trained
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_model_card_and_provenance(trained):
    data, out = trained
    info = read_provenance(out / "final")
    assert info["view"]["view"] == "demo" and info["view"]["template"] == "chat"
    assert info["loss"] == "dpo" and info["adapter"] is True and info["records"] == 8 and info["steps"] == 1
    assert info["name"] == "conv-run" and len(info["data_digest"]) == 16
    card = (out / "final" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft") and "| view | `demo` |" in card and "train/loss" in card


def test_eval_defaults_to_the_trained_view_and_warns_on_another(trained, tmp_path):
    data, out = trained
    res = runner.invoke(app, ["eval", "accuracy", "--data", str(data), "--policy", str(out / "final"),
                              "--max-length", "96", "--out", str(tmp_path / "acc")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "acc" / "accuracy.json").read_text())["config"]["view"]["view"] == "demo"
    assert "trained with view" not in res.output
    res = runner.invoke(app, ["eval", "accuracy", "--data", str(data), "--policy", str(out / "final"), "--view",
                              "none", "--max-length", "96", "--out", str(tmp_path / "acc2")])
    assert res.exit_code == 0, res.output
    assert "warning: the model was trained with view 'demo' and template 'chat', but is used with view 'none'" \
        in " ".join(res.output.split())


def test_export_carries_the_card(trained, tmp_path):
    _, out = trained
    res = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "exp"), "--merge"])
    assert res.exit_code == 0, res.output
    info = read_provenance(tmp_path / "exp")
    assert info["adapter"] is False and info["view"]["view"] == "demo"
    assert (tmp_path / "exp" / "README.md").read_text().startswith("---\nlibrary_name: transformers")


def test_resume_true_without_checkpoints_is_one_line(trained):
    data, out = trained
    res = runner.invoke(app, ["train", f"data={data}", f"output_dir={out}", "resume_from_checkpoint=true",
                              "report_to=none"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: resume_from_checkpoint=latest: no checkpoint")


def test_push_to_hub_uploads_final(tiny_model_dir, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls.append(("create", repo_id, private))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls.append(("upload", repo_id, sorted(p.name for p in __import__("pathlib").Path(folder_path).iterdir())))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    data = conversational(tmp_path / "conv.jsonl", n=4)
    res = runner.invoke(app, ["train", f"model={tiny_model_dir}", f"data={data}", "max_steps=1", "max_length=96",
                              "per_device_train_batch_size=4", "report_to=none", "save_strategy=no",
                              f"output_dir={tmp_path / 'run'}", "push_to_hub=true", "hub_model_id=me/tiny-dpo",
                              "hub_private_repo=true"])
    assert res.exit_code == 0, res.output
    assert calls[0] == ("create", "me/tiny-dpo", True)
    assert calls[1][0] == "upload" and {"README.md", "personalign.json", "model.safetensors"} <= set(calls[1][2])
