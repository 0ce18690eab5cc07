"""Loss acceptance tests: the DPO family against TRL 1.16's own loss code, PRO against a naive loop.

TRL 1.16 has no standalone ``dpo_loss``: the loss lives inside ``DPOTrainer._compute_loss``, after
the model forward. ``trl_dpo`` calls that method unbound, on a ``SimpleNamespace`` carrying the
attributes it reads, with a stand-in model that returns fixed per-token log-probs as TRL's fused
LM head would (a ``FusedCausalLMOutput``, zero off the completion) and precomputed reference
log-probs. Everything from the log-probs to the loss and the logged metrics is TRL's code.
"""
from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from trl.experimental.cpo.cpo_trainer import CPOTrainer
from trl.experimental.orpo.orpo_trainer import ORPOTrainer
from trl.trainer.dpo_trainer import DPOTrainer
from trl.trainer.kto_trainer import KTOTrainer
from trl.trainer.reward_trainer import RewardTrainer
from trl.trainer.utils import FusedCausalLMOutput

from personalign.train.loss_names import DPO_LOSS_TYPES
from personalign.train.losses import (
    dpo_loss,
    kto_loss,
    orpo_loss,
    pro_loss,
    reward_loss,
    sft_loss,
    simpo_loss,
)

BATCH, LENGTH = 8, 16


def make_pairs(seed: int, *, presorted: bool = False) -> SimpleNamespace:
    """Random per-token policy log-probs for [chosen; rejected] rows and reference sums.

    ``presorted`` orders the pairs by policy log-ratio and gives ascending reference log-ratios,
    so that sorting the batch (TRL's ``aot`` loss) leaves every pair in place.
    """
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(1, 5, (2 * BATCH,), generator=g)
    response = torch.randint(1, LENGTH - 5, (2 * BATCH,), generator=g)
    pos = torch.arange(LENGTH)
    completion = (pos >= prompt[:, None]) & (pos < (prompt + response)[:, None])
    shift = completion[:, 1:]
    tokens = -3.0 * torch.rand(2 * BATCH, LENGTH - 1, generator=g, dtype=torch.float64) * shift
    ref = tokens.sum(1) + 6.0 * torch.randn(2 * BATCH, generator=g, dtype=torch.float64)
    if presorted:
        sums = tokens.sum(1)
        order = torch.argsort(sums[:BATCH] - sums[BATCH:])
        rows = torch.cat([order, order + BATCH])
        tokens, completion, shift = tokens[rows], completion[rows], shift[rows]
        ref_ratio = torch.sort(6.0 * torch.randn(BATCH, generator=g, dtype=torch.float64)).values
        ref = torch.cat([ref[BATCH:] + ref_ratio, ref[BATCH:]])
    sums, n_tokens = tokens.sum(1), shift.sum(1)
    return SimpleNamespace(
        tokens=tokens, completion=completion.long(), shift=shift,
        policy_chosen=sums[:BATCH], policy_rejected=sums[BATCH:],
        ref_chosen=ref[:BATCH], ref_rejected=ref[BATCH:],
        chosen_n_tokens=n_tokens[:BATCH], rejected_n_tokens=n_tokens[BATCH:],
    )


def ours(p: SimpleNamespace, **kwargs):
    return dpo_loss(p.policy_chosen, p.policy_rejected, p.ref_chosen, p.ref_rejected,
                    chosen_n_tokens=p.chosen_n_tokens, rejected_n_tokens=p.rejected_n_tokens,
                    **kwargs)


def trl_dpo(p: SimpleNamespace, loss_types: list[str], *, beta: float,
            label_smoothing: float = 0.0, loss_weights: list[float] | None = None):
    """TRL's loss and logged metrics for the pairs in ``p`` (see the module docstring)."""
    def model(*, labels, fused_lm_head, **_):
        assert fused_lm_head and torch.equal(labels[:, 1:] != -100, p.shift)
        zeros = torch.zeros_like(p.tokens)
        return FusedCausalLMOutput(log_probs=p.tokens, entropy=zeros, mean_logits=zeros,
                                   is_top1=zeros.bool())

    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather=lambda t: t,
                                    gather_for_metrics=lambda t: t),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type="reverse_kl", use_weighting=False,
        loss_types=loss_types, loss_weights=loss_weights or [1.0] * len(loss_types),
        beta=beta, label_smoothing=label_smoothing, args=SimpleNamespace(discopop_tau=0.05),
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros_like(p.completion),
        "attention_mask": torch.ones_like(p.completion),
        "completion_mask": p.completion,
        "ref_chosen_logps": p.ref_chosen, "ref_rejected_logps": p.ref_rejected,
    }
    loss = DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, {k: v[-1] for k, v in trainer._metrics["train"].items()}


def assert_close(a, b):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64),
                               torch.as_tensor(b, dtype=torch.float64), rtol=0.0, atol=1e-6)


@pytest.mark.parametrize("loss_type", [t for t in DPO_LOSS_TYPES if t != "sft"])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_matches_trl(loss_type, beta):
    p = make_pairs(seed=int(beta * 10))
    smoothing = 0.1 if loss_type in ("exo_pair", "robust", "aot", "aot_unpaired") else 0.0
    out = ours(p, beta=beta, loss_type=loss_type, label_smoothing=smoothing)
    trl_loss, trl_metrics = trl_dpo(p, [loss_type], beta=beta, label_smoothing=smoothing)
    assert_close(out.loss, trl_loss)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                 "logps/rejected"):
        assert_close(out.metrics[name], trl_metrics[name])
    assert 0.0 < out.metrics["rewards/accuracies"] < 1.0
    if loss_type == "hinge" and beta == 0.5:
        z = beta * ((p.policy_chosen - p.ref_chosen) - (p.policy_rejected - p.ref_rejected))
        assert (z > 1).any() and (z < 1).any()  # both sides of the hinge are exercised


@pytest.mark.parametrize("label_smoothing", [0.1, 0.3])
def test_label_smoothed_sigmoid_matches_trl_aot_on_presorted_pairs(label_smoothing):
    # TRL 1.16 applies -(1-e) log s(z) - e log s(-z) only in `aot`, to batch-sorted log-ratios;
    # on presorted pairs that sort is the identity, so `aot` is label-smoothed sigmoid DPO.
    p = make_pairs(seed=3, presorted=True)
    out = ours(p, beta=0.2, label_smoothing=label_smoothing)
    trl_loss, _ = trl_dpo(p, ["aot"], beta=0.2, label_smoothing=label_smoothing)
    assert_close(out.loss, trl_loss)
    assert not torch.allclose(out.loss, ours(p, beta=0.2).loss)


def test_dpo_nll_term_matches_trl_sigmoid_plus_sft():
    p = make_pairs(seed=4)
    nll = sft_loss(p.policy_chosen, p.chosen_n_tokens).loss
    out = ours(p, beta=0.1, chosen_nll=nll, nll_weight=0.7)
    trl_loss, _ = trl_dpo(p, ["sigmoid", "sft"], beta=0.1, loss_weights=[1.0, 0.7])
    assert_close(out.loss, trl_loss)
    assert_close(out.loss - ours(p, beta=0.1).loss, 0.7 * nll)
    assert_close(out.metrics["nll"], nll)


def test_loss_type_lists_and_the_old_aot_pair_name_match_trl_combinations():
    p = make_pairs(seed=7)
    out = ours(p, beta=0.2, loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0])
    trl_loss, _ = trl_dpo(p, ["sigmoid", "bco_pair", "sft"], beta=0.2, loss_weights=[0.8, 0.2, 1.0])
    assert_close(out.loss, trl_loss)
    assert_close(ours(p, beta=0.2, loss_type="aot_pair").loss, trl_dpo(p, ["aot_unpaired"], beta=0.2)[0])


def _namespace(**attrs):
    return SimpleNamespace(accelerator=SimpleNamespace(device=torch.device("cpu")), **attrs)


@pytest.mark.parametrize("beta, gamma, smoothing, cpo_alpha", [(2.0, 0.5, 0.0, 0.0), (0.5, 1.0, 0.1, 1.0)])
def test_simpo_matches_trl_cpo_trainer(beta, gamma, smoothing, cpo_alpha):
    p = make_pairs(seed=8)
    out = simpo_loss(p.policy_chosen, p.policy_rejected, p.chosen_n_tokens, p.rejected_n_tokens, beta=beta,
                     simpo_gamma=gamma, label_smoothing=smoothing, cpo_alpha=cpo_alpha)
    trainer = _namespace(alpha=0.0, beta=beta, simpo_gamma=gamma, label_smoothing=smoothing, loss_type="simpo")
    avg_w, avg_l = p.policy_chosen / p.chosen_n_tokens, p.policy_rejected / p.rejected_n_tokens
    losses, chosen_rewards, rejected_rewards = CPOTrainer.cpo_loss(trainer, avg_w, avg_l)
    nll = -p.tokens[:BATCH][p.shift[:BATCH]].mean()  # TRL's cross entropy over the chosen tokens
    assert_close(out.loss, losses.mean() + cpo_alpha * nll)
    assert_close(out.metrics["rewards/margins"], (chosen_rewards - rejected_rewards).mean())


def test_orpo_matches_trl_orpo_trainer():
    p = make_pairs(seed=9)
    out = orpo_loss(p.policy_chosen, p.policy_rejected, p.chosen_n_tokens, p.rejected_n_tokens, beta=0.25)
    avg_w, avg_l = p.policy_chosen / p.chosen_n_tokens, p.policy_rejected / p.rejected_n_tokens
    losses, _, _, ratio, log_odds = ORPOTrainer.odds_ratio_loss(_namespace(beta=0.25), avg_w, avg_l)
    nll = -p.tokens[:BATCH][p.shift[:BATCH]].mean()
    assert_close(out.loss, nll - losses.mean())
    assert_close(out.metrics["log_odds_ratio"], ratio)
    assert_close(out.metrics["log_odds_chosen"], log_odds)


def trl_kto(tokens, kl_tokens, completion, kl_completion, ref, ref_kl, labels, *, beta, dw, uw):
    """TRL's KTO loss on fixed per-token log-probs (main and mismatched KL rows), stand-in model as `trl_dpo`."""
    ids, kl_ids = torch.zeros_like(completion), torch.ones_like(kl_completion)

    def model(*, input_ids, labels, fused_lm_head, **_):
        log_probs = kl_tokens if input_ids is kl_ids else tokens
        zeros = torch.zeros_like(log_probs)
        return FusedCausalLMOutput(log_probs=log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), calculate_KL=True, precompute_ref_logps=True, loss_type="kto",
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda t: t),
        aux_loss_enabled=False, beta=beta, desirable_weight=dw, undesirable_weight=uw,
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )
    trainer._compute_kl_logps = lambda m, b: KTOTrainer._compute_kl_logps(trainer, m, b)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": completion,
             "KL_input_ids": kl_ids, "KL_attention_mask": torch.ones_like(kl_ids), "KL_completion_mask": kl_completion,
             "label": labels, "ref_logps": ref, "ref_KL_logps": ref_kl}
    return KTOTrainer._compute_loss(trainer, model, batch, return_outputs=False), trainer._metrics["train"]


@pytest.mark.parametrize("dw, uw", [(1.0, 1.0), (1.0, 1.33)])
def test_kto_matches_trl_kto_trainer(dw, uw):
    p, q = make_pairs(seed=10), make_pairs(seed=11)  # q's rows: the mismatched (prompt, response) pairs
    tokens = torch.cat([p.tokens[:BATCH], p.tokens[BATCH:]])
    labels = torch.tensor([True] * BATCH + [False] * BATCH)
    policy = tokens.sum(1)
    ref = torch.cat([p.ref_chosen, p.ref_rejected])
    kl_policy = q.tokens.sum(1)
    ref_kl = kl_policy - 0.6 + 0.4 * torch.rand(2 * BATCH, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = kto_loss(policy, ref, labels, kl_policy, ref_kl, beta=0.3, desirable_weight=dw, undesirable_weight=uw)
    trl_loss, metrics = trl_kto(tokens, q.tokens, p.completion, q.completion, ref, ref_kl, labels,
                                beta=0.3, dw=dw, uw=uw)
    assert_close(out.loss, trl_loss)
    assert_close(out.metrics["kl"], metrics["kl"][-1])
    assert out.metrics["kl"] > 0.3  # the KL estimate is exercised, not clamped to 0
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert_close(out.metrics[name], metrics[name][-1])


def test_dpo_metrics_by_hand():
    zero = torch.zeros(2)
    out = dpo_loss(torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -2.0]), zero, zero, beta=0.5)
    metrics = {k: v.item() for k, v in out.metrics.items()}
    assert metrics["rewards/chosen"] == pytest.approx(-0.75)
    assert metrics["rewards/rejected"] == pytest.approx(-1.25)
    assert metrics["rewards/margins"] == pytest.approx(0.5)
    assert metrics["rewards/accuracies"] == 0.5  # z = [1, 0]: a tie is not a win
    assert metrics["loss"] == pytest.approx((math.log1p(math.exp(-1.0)) + math.log(2.0)) / 2)


def test_sft_loss_is_token_mean():
    out = sft_loss(torch.tensor([-2.0, -3.0]), torch.tensor([1, 3]))
    assert out.loss.item() == pytest.approx(5.0 / 4.0)  # per-response mean would give 1.5
    assert out.metrics["loss"].item() == pytest.approx(1.25)


def naive_pro(s, r, n_valid, nll, w):
    """PRO from its formula with python floats; only the first n_valid[b] entries are read."""
    total = 0.0
    for b, n in enumerate(n_valid):
        loss = 0.0
        for k in range(n - 1):
            taus = [1.0 if r is None else r[b][k] - r[b][j] for j in range(k + 1, n)]
            tau_k = max(taus)
            denom = math.exp(s[b][k] * tau_k)
            denom += sum(math.exp(s[b][j] * t) for j, t in zip(range(k + 1, n), taus))
            loss += math.log(denom) - s[b][k] * tau_k
        total += loss + w * (n - 1) ** 2 * nll[b]
    return total / len(n_valid)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("with_rewards", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_pro_matches_naive_loop(n, with_rewards, padded):
    g = torch.Generator().manual_seed(10 * n + 2 * with_rewards + padded)
    s = -3.0 * torch.rand(BATCH, n, generator=g, dtype=torch.float64)
    nll = 40.0 * torch.rand(BATCH, generator=g, dtype=torch.float64)
    rewards = None
    if with_rewards:  # small integers, sorted best-first: ties (tau = 0) occur
        rewards = torch.randint(0, 4, (BATCH, n), generator=g).double()
        rewards = rewards.sort(dim=1, descending=True).values
    n_valid = [n] * BATCH
    mask = None
    if padded:
        n_valid = torch.randint(2, n + 1, (BATCH,), generator=g).tolist()
        mask = torch.arange(n)[None, :] < torch.tensor(n_valid)[:, None]
        s = s.masked_fill(~mask, float("nan"))
        if rewards is not None:
            rewards = rewards.masked_fill(~mask, float("nan"))
    out = pro_loss(s, rewards, best_nll=nll, mask=mask, sft_weight=0.05)
    expected = naive_pro(s.tolist(), None if rewards is None else rewards.tolist(), n_valid,
                         nll.tolist(), 0.05)
    assert out.loss.item() == pytest.approx(expected, rel=1e-9)
    assert_close(out.metrics["pro/ranking_loss"] + out.metrics["pro/sft_loss"], out.loss)


def test_pro_two_responses_without_rewards_is_softmax_cross_entropy_plus_sft():
    g = torch.Generator().manual_seed(7)
    s = -2.0 * torch.rand(BATCH, 2, generator=g)
    nll = 30.0 * torch.rand(BATCH, generator=g)
    out = pro_loss(s, best_nll=nll, sft_weight=0.05)
    expected = (-torch.log_softmax(s, dim=1)[:, 0] + 0.05 * nll).mean()
    torch.testing.assert_close(out.loss, expected)


def test_pro_accuracy_needs_the_best_response_strictly_on_top():
    s = torch.tensor([[-1.0, -2.0, -3.0], [-2.0, -1.0, -3.0], [-1.0, -1.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, True], [True, True, False]])
    out = pro_loss(s, best_nll=torch.zeros(3), mask=mask)
    assert out.metrics["pro/accuracy"].item() == pytest.approx(1 / 3)


def sgd_step_decreases(loss_fn, params, lr=0.05):
    before = loss_fn()
    before.loss.backward()
    with torch.no_grad():
        for t in params:
            t -= lr * t.grad
    return loss_fn().loss.item() < before.loss.item()


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_dpo_gradient_step_lowers_loss_and_favours_chosen(loss_type):
    p = make_pairs(seed=5)
    chosen = p.policy_chosen.clone().requires_grad_()
    rejected = p.policy_rejected.clone().requires_grad_()

    def loss_fn():
        return dpo_loss(chosen, rejected, p.ref_chosen, p.ref_rejected, beta=0.1,
                        loss_type=loss_type, chosen_n_tokens=p.chosen_n_tokens,
                        rejected_n_tokens=p.rejected_n_tokens)

    assert sgd_step_decreases(loss_fn, [chosen, rejected])
    assert (chosen.grad <= 0).all() and (rejected.grad >= 0).all() and (chosen.grad < 0).any()


def test_pro_gradient_step_lowers_loss_and_ignores_padding():
    g = torch.Generator().manual_seed(6)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    s = (-3.0 * torch.rand(2, 4, generator=g)).masked_fill(~mask, float("nan")).requires_grad_()
    rewards = torch.tensor([[3.0, 2.0, 1.0, 0.0], [1.0, 0.5, float("nan"), float("nan")]])
    nll = torch.tensor([20.0, 10.0], requires_grad=True)

    def loss_fn():
        return pro_loss(s, rewards, best_nll=nll, mask=mask)

    assert sgd_step_decreases(loss_fn, [s, nll])
    assert torch.isfinite(s.grad).all() and (s.grad[~mask] == 0).all()
    assert (s.grad[:, 0] < 0).all() and s.grad[0, 3] > 0 and s.grad[1, 1] > 0


def test_sft_gradient_step_lowers_loss():
    logp = torch.tensor([-20.0, -35.0], requires_grad=True)
    assert sgd_step_decreases(lambda: sft_loss(logp, torch.tensor([10, 20])), [logp])


@pytest.mark.parametrize("call, message", [
    (lambda p: ours(p, loss_type="kto"), "unknown DPO loss_type"),
    (lambda p: ours(p, loss_type="hinge", label_smoothing=0.1), "label_smoothing applies to"),
    (lambda p: ours(p, loss_type="exo_pair"), "needs label_smoothing > 0"),
    (lambda p: ours(p, loss_type=["sigmoid", "ipo"], loss_weights=[1.0]), "2 loss types"),
    (lambda p: ours(p, label_smoothing=0.5), r"\[0, 0.5\)"),
    (lambda p: ours(p, nll_weight=0.5), "needs chosen_nll"),
    (lambda p: dpo_loss(p.policy_chosen, p.policy_rejected, p.ref_chosen, p.ref_rejected,
                        loss_type="ipo"), "needs chosen_n_tokens"),
])
def test_dpo_rejects_inconsistent_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call(make_pairs(seed=0))


def test_pro_rejects_unsorted_rewards_and_single_responses():
    s, nll = torch.zeros(1, 3), torch.zeros(1)
    with pytest.raises(ValueError, match="sorted best-first"):
        pro_loss(s, torch.tensor([[1.0, 2.0, 0.0]]), best_nll=nll)
    with pytest.raises(ValueError, match="2\\+ responses"):
        pro_loss(s, best_nll=nll, mask=torch.tensor([[True, False, False]]))


def trl_reward(chosen: torch.Tensor, rejected: torch.Tensor, *, margin=None, center=None):
    """TRL's RewardTrainer.compute_loss on fixed rewards: a stand-in model returns them as logits."""
    def model(**_):
        return SimpleNamespace(logits=torch.cat([chosen, rejected])[:, None])

    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), args=SimpleNamespace(center_rewards_coefficient=center),
        accelerator=SimpleNamespace(gather=lambda t: t, gather_for_metrics=lambda t: t),
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )
    inputs = {"input_ids": torch.zeros(2 * len(chosen), 3), "attention_mask": torch.ones(2 * len(chosen), 3)}
    if margin is not None:
        inputs["margin"] = margin
    loss = RewardTrainer.compute_loss(trainer, model, inputs)
    return loss, {k: v[-1] for k, v in trainer._metrics["train"].items()}


@pytest.mark.parametrize("margin, center", [(False, None), (True, None), (False, 0.01), (True, 0.1)])
def test_bradley_terry_matches_trl_reward_trainer(margin, center):
    g = torch.Generator().manual_seed(12)
    chosen, rejected = torch.randn(BATCH, generator=g, dtype=torch.float64), torch.randn(BATCH, generator=g, dtype=torch.float64)
    m = torch.rand(BATCH, generator=g, dtype=torch.float64) if margin else None
    out = reward_loss(torch.stack([chosen, rejected], dim=1), margin=m, center_rewards_coefficient=center)
    trl_loss, metrics = trl_reward(chosen, rejected, margin=m, center=center)
    assert_close(out.loss, trl_loss)
    assert_close(out.metrics["accuracy"], metrics["accuracy"])
    assert_close(out.metrics["rewards/margins"], metrics["margin"])
    assert 0 < metrics["accuracy"] < 1


@pytest.mark.parametrize("padded", [False, True])
def test_plackett_luce_matches_a_naive_loop_and_has_finite_gradients(padded):
    g = torch.Generator().manual_seed(13)
    r = torch.randn(3, 4, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True] * 4, [True, True, True, False], [True, True, False, False]]) if padded else None
    r = r.masked_fill(~mask, float("nan")) if padded else r
    r.requires_grad_()
    out = reward_loss(r, mask)
    expected = []
    for i in range(3):
        vals = [float(v) for v, ok in zip(r[i].detach(), mask[i] if padded else [True] * 4) if ok]
        expected.append(sum(math.log(sum(math.exp(v) for v in vals[k:])) - vals[k] for k in range(len(vals) - 1)))
    assert_close(out.loss, sum(expected) / 3)
    out.loss.backward()
    assert torch.isfinite(r.grad).all() and (not padded or (r.grad[~mask] == 0).all())


def test_reward_loss_of_a_pair_is_plackett_luce_of_two():
    r = torch.tensor([[0.3, -0.2], [1.0, 2.0]])
    padded = torch.tensor([[0.3, -0.2, 0.0], [1.0, 2.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    assert_close(reward_loss(r).loss, reward_loss(padded, mask).loss)
    assert reward_loss(r).metrics["accuracy"] == 0.5
