from __future__ import annotations

import shutil

import pytest
import torch

from personalign import files
from personalign.models import loading
from personalign.models.loading import (
    ModelNotFoundError,
    is_prepared,
    load_model,
    load_tokenizer,
    model_fingerprint,
    resolve_model,
)
from personalign.testing import CHATML_TEMPLATE, save_tiny, tiny_causal_lm, tiny_tokenizer

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
]


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def test_tiny_tokenizer_is_deterministic_and_round_trips():
    a, b = tiny_tokenizer(), tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    assert 500 < len(a) <= 1024
    text = "The user prefers concise answers, café ☕ 2025!"
    ids = a(text, add_special_tokens=False)["input_ids"]
    assert a.decode(ids) == text
    assert len(ids) < len(text.encode())  # merges were learned
    assert (a.eos_token, a.pad_token) == ("<|im_end|>", "<|endoftext|>")


def test_chat_template_renders_chatml():
    tok = tiny_tokenizer()
    text = tok.apply_chat_template(MESSAGES, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
    )
    prompt = tok.apply_chat_template(MESSAGES[1:2], tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert prompt.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3


def test_tiny_model_is_deterministic_by_seed():
    a, tok = tiny_causal_lm(seed=3)
    b, _ = tiny_causal_lm(tok, seed=3)
    c, _ = tiny_causal_lm(tok, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.embed_tokens.weight"], sc["model.embed_tokens.weight"])
    assert not a.training and a.config.num_hidden_layers == 2


@pytest.mark.parametrize("arch", ["qwen2", "gemma2"])
def test_tiny_model_other_architectures(arch):
    model, tok = tiny_causal_lm(arch=arch)
    logits = _logits(model, tok("Hello world", add_special_tokens=False)["input_ids"])
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()


def test_save_load_round_trip_gives_identical_logits(tiny_lm, tiny_model_dir):
    model, tok = tiny_lm
    loaded, loaded_tok = load_model(tiny_model_dir)
    ids = tok("Tell me a joke about cats.", add_special_tokens=False)["input_ids"]
    assert loaded_tok(
        "Tell me a joke about cats.", add_special_tokens=False
    )["input_ids"] == ids
    assert torch.equal(_logits(model, ids), _logits(loaded, ids))
    assert not loaded.training
    assert loaded.config._attn_implementation == "sdpa"
    assert loaded_tok.pad_token == "<|endoftext|>" and loaded_tok.padding_side == "left"
    assert loaded_tok.apply_chat_template(MESSAGES, tokenize=False) == tok.apply_chat_template(MESSAGES, tokenize=False)


def test_load_tokenizer_falls_back_to_eos_for_padding(tmp_path):
    tok = tiny_tokenizer()
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path, padding_side="right")
    assert loaded.pad_token == loaded.eos_token == "<|im_end|>"
    assert loaded.padding_side == "right"


def test_load_model_dtype(tiny_model_dir):
    model, _ = load_model(tiny_model_dir, dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_resolve_model(tiny_model_dir, tmp_path):
    assert resolve_model(tiny_model_dir) == str(tiny_model_dir)
    assert resolve_model("some-org/some-model") == "some-org/some-model"
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelNotFoundError, match="got a file"):
        resolve_model(tmp_path / "file.txt")


def test_unavailable_hub_id_gives_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="cannot load model 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model")


def test_model_fingerprint_tracks_weights(tmp_path, tiny_model_dir):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert model_fingerprint(tiny_model_dir) == model_fingerprint(tiny_model_dir)
    save_tiny(copy, seed=1)
    assert model_fingerprint(copy) != model_fingerprint(tiny_model_dir)

    model, _ = tiny_causal_lm()
    before = model_fingerprint(model)
    assert before == model_fingerprint(tiny_causal_lm()[0])
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    assert model_fingerprint(model) != before


def test_interrupted_prepare_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(files.HOME_ENV, str(tmp_path))

    def interrupted(out, gguf, status):  # half the files written, then Ctrl-C
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(loading, "_dequantise_into", interrupted)
    with pytest.raises(KeyboardInterrupt, match=""):
        loading.prepare_default_model(progress=False)
    assert not is_prepared(loading.default_model_dir())
    assert [p.name for p in (tmp_path / "models").iterdir()] == [f".{loading.DEFAULT_MODEL}.lock"]


def test_processes_starting_at_once_prepare_the_model_once(tmp_path, monkeypatch):
    """Two callers at once (xdist workers, two commands): one de-quantises, the other waits on the lock."""
    import threading

    monkeypatch.setenv(files.HOME_ENV, str(tmp_path))
    calls, inside, most_inside = [], [0], [0]
    second_waiting = threading.Event()

    def fake_dequantise(out, gguf, status):
        inside[0] += 1
        most_inside[0] = max(most_inside[0], inside[0])
        second_waiting.wait(10)  # the other caller has started and is blocked on the lock (or returns once done)
        calls.append(out)
        (out / loading.MANIFEST).write_text("{}")
        inside[0] -= 1

    monkeypatch.setattr(loading, "_dequantise_into", fake_dequantise)
    first = threading.Thread(target=loading.prepare_default_model, kwargs={"progress": False})
    first.start()
    while not calls and inside[0] == 0:
        threading.Event().wait(0.01)
    second_waiting.set()
    assert loading.prepare_default_model(progress=False) == loading.default_model_dir()
    first.join(10)
    assert len(calls) == 1 and most_inside[0] == 1
    assert is_prepared(loading.default_model_dir())


def test_default_model_prepares_and_loads(default_model_dir):
    assert is_prepared(default_model_dir)
    assert resolve_model(None) == str(default_model_dir) == resolve_model("smollm2")
    model, tok = load_model()
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None
    assert tok.apply_chat_template(MESSAGES, tokenize=False) == tiny_tokenizer().apply_chat_template(
        MESSAGES, tokenize=False
    )
    assert tok.chat_template == CHATML_TEMPLATE
    ids = tok("Hello, how are you?", add_special_tokens=False)["input_ids"]
    logits = _logits(model, ids)
    assert logits.shape == (1, len(ids), model.config.vocab_size)
    assert torch.isfinite(logits).all()


def test_the_converted_embedded_model_matches_golden_logits(default_model_dir):
    """Golden values of the GGUF -> safetensors conversion (recorded 2026-12-02, transformers 5.24, gguf
    de-quantisation of SmolLM2-135M-Instruct Q4_1): a conversion bug or a changed loader shows here."""
    import torch

    from personalign.models.loading import load_model

    model, tok = load_model(default_model_dir)
    ids = tok("The capital of France is", add_special_tokens=False)["input_ids"]
    assert ids == [504, 3575, 282, 4649, 314]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].float()
    values, top = logits.topk(5)
    assert top.tolist() == [7042, 260, 4528, 2250, 1315] and tok.decode(top[:1]) == " Paris"
    assert values.tolist() == pytest.approx([17.3713, 14.8886, 13.245, 13.0095, 12.9515], abs=2e-3)
    assert logits.mean().item() == pytest.approx(-1.8583, abs=2e-3)
    assert logits.std().item() == pytest.approx(3.56928, abs=2e-3)


@pytest.mark.parametrize("option", ["load_in_4bit", "load_in_8bit"])
def test_quantized_loading_off_cuda_is_one_clear_error_before_any_load(option, tiny_model_dir, tmp_path, monkeypatch):
    """bitsandbytes quantizes on CUDA only: on this CPU, load_model, load_reward_model and `train` refuse
    with one line naming the option (exit 2), before reading the model."""
    from typer.testing import CliRunner

    from personalign.cli import app
    from personalign.errors import UserError
    from personalign.models.rewards import load_reward_model

    monkeypatch.setattr(loading, "resolve_model", lambda *a, **k: pytest.fail("the model was looked up"))
    for load in (loading.load_model, load_reward_model):
        with pytest.raises(UserError, match="bitsandbytes on a CUDA GPU only") as e:
            load(tiny_model_dir, **{option: True})
        assert e.value.option == option
    monkeypatch.undo()
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    res = CliRunner().invoke(app, ["train", f"model={tiny_model_dir}", f"data={tmp_path / 'pairs.jsonl'}",
                                   f"output_dir={tmp_path / 'run'}", f"{option}=true", "use_peft=true",
                                   "report_to=none"])
    lines = [line for line in res.stderr.splitlines() if line.strip().startswith("error")]
    assert res.exit_code == 2 and len(lines) == 1 and option in lines[0] and "CUDA" in lines[0], res.output
    res = CliRunner().invoke(app, ["train", f"model={tiny_model_dir}", f"data={tmp_path / 'pairs.jsonl'}",
                                   f"output_dir={tmp_path / 'run2'}", f"{option}=true"])
    assert res.exit_code == 2 and "QLoRA" in res.output and "Traceback" not in res.output
