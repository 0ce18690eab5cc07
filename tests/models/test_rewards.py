"""The packed reward path against a plain forward of the sequence-classification model, one text at a time."""
import pytest
import torch

from personalign.models.logprobs import pack_batch
from personalign.models.lora import LoraSettings, apply_lora
from personalign.models.rewards import ResponseRewards, is_reward_model, load_reward_model
from personalign.models.scorer import InMemoryRows, score_store
from personalign.records.tokens import tokenize_pair

ITEMS = [("Tell me about cats.", ["Cats are small.", "No.", "Cats purr a lot, and sleep even more."]),
         ("Hi", ["Hello there, how can I help?", "Go away."])]


def plain_rewards(model, tokenizer):
    """Each (prompt, response) as its own unpadded sequence through the model's own forward and pooling."""
    out = []
    for prompt, responses in ITEMS:
        row = []
        for r in responses:
            t = tokenize_pair(tokenizer, prompt, [r])
            ids = torch.tensor([t.prompt_ids + t.response_ids[0]])
            with torch.no_grad():
                row.append(model(input_ids=ids).logits[0, 0].item())
        out.append(row)
    return out


@pytest.fixture()
def reward_model(tiny_model_dir):
    torch.manual_seed(0)
    return load_reward_model(tiny_model_dir)


def test_packed_rewards_equal_a_plain_forward(reward_model):
    model, tokenizer = reward_model
    assert is_reward_model(model)
    batch = pack_batch([tokenize_pair(tokenizer, p, rs) for p, rs in ITEMS])
    with torch.no_grad():
        rewards, counts = ResponseRewards(model)(**{k: getattr(batch, k) for k in batch.__slots__})
    expected = plain_rewards(model, tokenizer)
    torch.testing.assert_close(rewards[0], torch.tensor(expected[0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(rewards[1, :2], torch.tensor(expected[1]), atol=1e-5, rtol=0)
    assert rewards[1, 2] == 0 and counts[1, 2] == 0  # a padded slot
    assert len({round(v, 4) for v in expected[0]}) == 3  # the rewards differ, so the check can fail


def test_score_store_reads_rewards_of_a_lora_reward_model(reward_model):
    model, tokenizer = reward_model
    lora = apply_lora(model, LoraSettings(r=4), task_type="SEQ_CLS").eval()
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    table = score_store(lora, InMemoryRows([tokenize_pair(tokenizer, p, rs) for p, rs in ITEMS]), progress=False)
    expected = plain_rewards(lora, tokenizer)
    torch.testing.assert_close(table.logps[0], torch.tensor(expected[0]), atol=1e-5, rtol=0)
    assert not lora.training  # scoring leaves the caller's module in the mode it was in
    with lora.disable_adapter():
        without = torch.tensor(plain_rewards(lora, tokenizer)[0])
    assert (table.logps[0] - without).abs().max() > 1e-3  # the adapters (and the copied head) are used


def test_rewards_have_gradients_for_the_head_and_the_decoder(reward_model):
    model, tokenizer = reward_model
    model.train()
    batch = pack_batch([tokenize_pair(tokenizer, p, rs) for p, rs in ITEMS])
    rewards, _ = ResponseRewards(model)(**{k: getattr(batch, k) for k in batch.__slots__})
    (rewards[:, 0] - rewards[:, 1]).sum().backward()
    assert model.score.weight.grad.abs().sum() > 0
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
