"""Training objectives (docs/fidelity.md, "the preference-objective family") as pure functions: log-prob tensors in, a `LossOutput` out.

Every loss returns the batch loss (a scalar with gradient) and a dict of detached scalar metrics,
so the training loop can log ``metrics`` without knowing which objective it runs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from personalign.train.loss_names import LENGTH_NORMALIZED, dpo_loss_check


@dataclass(frozen=True)
class LossOutput:
    """A batch loss (scalar tensor with gradient) and detached scalar metrics keyed by log name."""

    loss: Tensor
    metrics: dict[str, Tensor]


def _pair_terms(kind: str, w: Tensor, l: Tensor, pw: Tensor, pl: Tensor, beta: float, eps: float,
                nw: Tensor | None, nl: Tensor | None, tau: float) -> Tensor:
    """Per-pair loss `[B]` of one DPO loss type; w, l: log-ratios policy − reference; pw, pl: policy log-probs."""
    z = beta * (w - l)
    if kind == "sigmoid":
        return -(1.0 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
    if kind == "hinge":
        return torch.relu(1.0 - z)
    if kind in ("ipo", "sigmoid_norm"):
        avg = w / nw.clamp(min=1) - l / nl.clamp(min=1)
        return (avg - 1.0 / (2.0 * beta)) ** 2 if kind == "ipo" else -F.logsigmoid(beta * avg)
    if kind == "exo_pair":
        return (torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-eps))
                + torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(eps)))
    if kind == "nca_pair":
        return -F.logsigmoid(beta * w) - 0.5 * F.logsigmoid(-beta * w) - 0.5 * F.logsigmoid(-beta * l)
    if kind == "robust":
        return (-(1.0 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1.0 - 2.0 * eps)
    if kind == "bco_pair":
        return -F.logsigmoid(beta * w) - F.logsigmoid(-beta * l)
    if kind == "sppo_hard":
        return (w - 0.5 / beta) ** 2 + (l + 0.5 / beta) ** 2
    if kind in ("aot", "aot_unpaired"):
        if kind == "aot":  # sorted over the batch: policy log-odds against reference log-odds
            delta = torch.sort(pw - pl).values - torch.sort((pw - w) - (pl - l)).values
        else:
            delta = torch.sort(w).values - torch.sort(l).values
        return -(1.0 - eps) * F.logsigmoid(beta * delta) - eps * F.logsigmoid(-beta * delta)
    if kind == "apo_zero":
        return 1.0 - torch.sigmoid(beta * w) + torch.sigmoid(beta * l)
    if kind == "apo_down":
        return torch.sigmoid(beta * w) + 1.0 - torch.sigmoid(z)
    if kind == "discopop":
        mix = torch.sigmoid(z / tau)
        return -F.logsigmoid(z) * (1.0 - mix) + torch.exp(-z) * mix
    # sft: the chosen responses' token-mean NLL, the same for every pair
    return (-pw.sum() / nw.sum()).expand(pw.shape[0])


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    *,
    beta: float = 0.1,
    loss_type: str | Sequence[str] = "sigmoid",
    loss_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
    discopop_tau: float = 0.05,
    chosen_n_tokens: Tensor | None = None,
    rejected_n_tokens: Tensor | None = None,
    chosen_nll: Tensor | None = None,
    nll_weight: float = 0.0,
) -> LossOutput:
    """DPO-family loss over a batch of pairs; log-prob inputs are ``[B]`` sums over response tokens.

    Every ``loss_type`` of TRL 1.16's ``DPOTrainer`` (``loss_names.DPO_LOSS_TYPES``), with TRL's formulas; a list
    of loss types is their sum weighted by ``loss_weights`` (TRL's MPO-style combination). With
    Δ = logp_π − logp_ref and z = β(Δ_w − Δ_l), e.g. ``sigmoid``: −(1−ε)·log σ(z) − ε·log σ(−z)
    (conservative DPO with ε = ``label_smoothing``; TRL 1.16's sigmoid is the ε = 0 case), ``hinge``:
    relu(1 − z), ``ipo``: (Δ_w/n_w − Δ_l/n_l − 1/(2β))² on length-averaged log-ratios.
    ``label_smoothing`` applies to sigmoid, robust, exo_pair (which needs it > 0) and the aot pair.
    ``ipo``, ``sigmoid_norm`` and ``sft`` need ``chosen_n_tokens`` / ``rejected_n_tokens`` (summed
    log-probs in, averaging here). ``aot``/``aot_unpaired`` sort over the batch, as TRL does.

    ``chosen_nll`` (mean token NLL of the chosen responses) is added with weight ``nll_weight`` (RPO).
    Metrics follow TRL's names; rewards come from the summed log-probs for every loss type.
    """
    kinds, weights = dpo_loss_check(loss_type, loss_weights, label_smoothing)
    if nll_weight and chosen_nll is None:
        raise ValueError("nll_weight > 0 needs chosen_nll")
    needs_counts = [k for k in kinds if k in LENGTH_NORMALIZED]
    if needs_counts and (chosen_n_tokens is None or rejected_n_tokens is None):
        raise ValueError(f"loss_type={needs_counts[0]!r} needs chosen_n_tokens and rejected_n_tokens")

    chosen_logratios = policy_chosen - ref_chosen
    rejected_logratios = policy_rejected - ref_rejected
    z = beta * (chosen_logratios - rejected_logratios)
    loss = sum(weight * _pair_terms(kind, chosen_logratios, rejected_logratios, policy_chosen, policy_rejected,
                                    beta, label_smoothing, chosen_n_tokens, rejected_n_tokens, discopop_tau).mean()
               for kind, weight in zip(kinds, weights))
    if nll_weight:
        loss = loss + nll_weight * chosen_nll

    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    metrics = _pair_metrics(chosen_rewards, rejected_rewards, policy_chosen, policy_rejected, loss)
    metrics["rewards/accuracies"] = (z.detach() > 0).float().mean()
    if chosen_nll is not None:
        metrics["nll"] = chosen_nll.detach()
    return LossOutput(loss, metrics)


def _pair_metrics(chosen_rewards: Tensor, rejected_rewards: Tensor, policy_chosen: Tensor, policy_rejected: Tensor,
                  loss: Tensor) -> dict[str, Tensor]:
    """TRL's logged pair metrics: rewards (mean, margin, accuracy), policy log-probs, the loss."""
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "logps/chosen": policy_chosen.detach().mean(),
        "logps/rejected": policy_rejected.detach().mean(),
        "loss": loss.detach(),
    }


def simpo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, chosen_n_tokens: Tensor, rejected_n_tokens: Tensor, *,
    beta: float = 2.0, simpo_gamma: float = 0.5, label_smoothing: float = 0.0, cpo_alpha: float = 0.0,
) -> LossOutput:
    """SimPO (Meng et al. 2024), reference-free, as TRL's CPOTrainer computes it (loss_type 'simpo'):
    with a = mean token log-probs, u = a_w − a_l − γ/β, loss = −(1−ε)·log σ(βu) − ε·log σ(−βu), plus
    ``cpo_alpha`` × the chosen token-mean NLL (CPO-SimPO; 0 is SimPO itself). Rewards are β·a."""
    aw, al = policy_chosen / chosen_n_tokens.clamp(min=1), policy_rejected / rejected_n_tokens.clamp(min=1)
    u = aw - al - simpo_gamma / beta
    loss = (-(1.0 - label_smoothing) * F.logsigmoid(beta * u) - label_smoothing * F.logsigmoid(-beta * u)).mean()
    nll = -policy_chosen.sum() / chosen_n_tokens.sum()
    if cpo_alpha:
        loss = loss + cpo_alpha * nll
    metrics = _pair_metrics(beta * aw.detach(), beta * al.detach(), aw, al, loss)
    metrics["nll"] = nll.detach()
    return LossOutput(loss, metrics)


def orpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, chosen_n_tokens: Tensor, rejected_n_tokens: Tensor,
              *, beta: float = 0.1) -> LossOutput:
    """ORPO (Hong et al. 2024), reference-free, as TRL's ORPOTrainer: with a = mean token log-probs,
    log-odds = (a_w − a_l) − (log(1 − e^{a_w}) − log(1 − e^{a_l})), loss = NLL(chosen) − β·mean log σ(log-odds);
    NLL is the chosen responses' token mean. Rewards are β·a."""
    aw = (policy_chosen / chosen_n_tokens.clamp(min=1)).float()
    al = (policy_rejected / rejected_n_tokens.clamp(min=1)).float()
    log_odds = (aw - al) - (_log1mexp(aw) - _log1mexp(al))
    ratio = F.logsigmoid(log_odds)
    nll = -policy_chosen.sum() / chosen_n_tokens.sum()
    loss = nll - beta * ratio.mean()
    metrics = _pair_metrics(beta * aw.detach(), beta * al.detach(), aw, al, loss)
    metrics |= {"nll": nll.detach(), "log_odds_ratio": ratio.detach().mean(), "log_odds_chosen": log_odds.detach().mean()}
    return LossOutput(loss, metrics)


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 − eˣ) for x < 0, stably (x > −log 2: log(−expm1 x); else log1p(−eˣ))."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def kto_loss(
    policy: Tensor, ref: Tensor, desirable: Tensor, policy_kl: Tensor, ref_kl: Tensor, *, beta: float = 0.1,
    desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
) -> LossOutput:
    """KTO (Ethayarajh et al. 2024) as TRL's KTOTrainer, over ``[N]`` summed log-probs of single responses
    (``policy``, ``ref``) labelled ``desirable`` (bool ``[N]``); ``policy_kl``/``ref_kl`` score mismatched
    (prompt, response) pairs for the KL estimate z₀ = max(0, mean(policy_kl − ref_kl)), detached. With
    r = β(logp_π − logp_ref): 1 − σ(r − βz₀) for desirable, 1 − σ(βz₀ − r) for undesirable responses,
    weighted by ``desirable_weight`` / ``undesirable_weight``, averaged over all N. A pair gives one of each."""
    kl = (policy_kl - ref_kl).mean().detach().clamp(min=0)
    logratios = policy - ref
    good, bad = logratios[desirable], logratios[~desirable]
    losses = torch.cat([desirable_weight * (1.0 - torch.sigmoid(beta * (good - kl))),
                        undesirable_weight * (1.0 - torch.sigmoid(beta * (kl - bad)))])
    loss = losses.mean()
    chosen_rewards, rejected_rewards = beta * good.detach(), beta * bad.detach()
    metrics = {"kl": kl, "loss": loss.detach(), "logps/chosen": policy[desirable].detach().mean(),
               "logps/rejected": policy[~desirable].detach().mean()}
    if good.numel():
        metrics["rewards/chosen"] = chosen_rewards.mean()
    if bad.numel():
        metrics["rewards/rejected"] = rejected_rewards.mean()
    if good.numel() and bad.numel():
        metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
    return LossOutput(loss, metrics)


def sft_loss(token_logp_sum: Tensor, n_tokens: Tensor) -> LossOutput:
    """Mean token NLL over the batch: −Σ token_logp_sum / Σ n_tokens (``[B]`` each).

    Every token weighs the same, whatever its response's length (TRL's SFT token mean), rather
    than averaging per-response means.
    """
    loss = -token_logp_sum.sum() / n_tokens.sum()
    return LossOutput(loss, {"loss": loss.detach()})


def pro_loss(
    avg_logps: Tensor,
    rewards: Tensor | None = None,
    *,
    best_nll: Tensor,
    mask: Tensor | None = None,
    sft_weight: float = 0.05,
) -> LossOutput:
    """PRO (Song et al. 2024) over rankings of up to n responses, best first.

    ``avg_logps`` [B, n]: s_i = avg_logp_π(y_i|x). ``rewards`` [B, n]: r_1 ≥ … ≥ r_n among the
    valid entries, or None for τ_kj = 1. ``mask`` [B, n] bool marks valid entries (default: all);
    entry 0 is the best response and each example needs at least two. ``best_nll`` [B]: NLL of y_1
    summed over its tokens. Per example, with n its number of valid responses,
    L = Σ_{k<n} [logsumexp(s_k τ_k, {s_j τ_kj}_{j>k}) − s_k τ_k] + sft_weight·(n−1)²·NLL(y_1),
    τ_kj = r_k − r_j, τ_k = max_j τ_kj; the batch loss is the mean over examples. Padded entries
    may hold any value, NaN included.
    """
    if mask is None:
        mask = torch.ones_like(avg_logps, dtype=torch.bool)
    n_valid = mask.sum(dim=1)
    if not bool(mask[:, 0].all()) or int(n_valid.min()) < 2:
        raise ValueError("each PRO example needs its best response at index 0 and 2+ responses")
    n = avg_logps.shape[1]
    later = torch.ones(n, n, dtype=torch.bool, device=mask.device).triu(diagonal=1)
    pairs = later & mask[:, :, None] & mask[:, None, :]  # [B, k, j]: j ranks below k, both valid
    s = avg_logps.masked_fill(~mask, 0.0)
    if rewards is None:
        tau = pairs.to(s.dtype)
    else:
        r = rewards.masked_fill(~mask, 0.0)
        tau = (r[:, :, None] - r[:, None, :]).masked_fill(~pairs, 0.0)
        if bool((tau < 0).any()):
            raise ValueError("PRO rewards must be sorted best-first (non-increasing) per example")
    has_later = pairs.any(dim=2)  # [B, k]: stage k has at least one response ranked below it
    tau_k = tau.masked_fill(~pairs, float("-inf")).amax(dim=2).masked_fill(~has_later, 0.0)
    positive = s * tau_k
    negatives = (s[:, None, :] * tau).masked_fill(~pairs, float("-inf"))
    stage_logits = torch.cat([positive[:, :, None], negatives], dim=2)
    stage_loss = (torch.logsumexp(stage_logits, dim=2) - positive).masked_fill(~has_later, 0.0)
    ranking = stage_loss.sum(dim=1)
    sft = sft_weight * (n_valid - 1).to(s.dtype) ** 2 * best_nll
    loss = (ranking + sft).mean()

    best_other = avg_logps.detach().masked_fill(~mask, float("-inf"))[:, 1:].amax(dim=1)
    metrics = {
        "pro/ranking_loss": ranking.detach().mean(),
        "pro/sft_loss": sft.detach().mean(),
        "pro/accuracy": (avg_logps.detach()[:, 0] > best_other).float().mean(),
        "loss": loss.detach(),
    }
    return LossOutput(loss, metrics)


def reward_loss(rewards: Tensor, mask: Tensor | None = None, *, margin: Tensor | None = None,
                center_rewards_coefficient: float | None = None) -> LossOutput:
    """Reward-model loss over ``[B, n]`` scalar rewards of responses ranked best first (``mask`` marks
    the valid ones; default all; each example needs 2+).

    Plackett–Luce: per example Σ_{k<n} [logsumexp(r_k, …, r_n) − r_k], the negative log-likelihood of
    the ranking; for a pair that is Bradley–Terry, −log σ(r_w − r_l), with ``margin`` [B] subtracted
    from the difference as in TRL's RewardTrainer (pairs only). ``center_rewards_coefficient`` adds
    TRL's centering term c·mean((Σ_j r_j)²), which for a pair is c·mean((r_w + r_l)²). Metrics:
    TRL's ``accuracy`` (best reward above the worst), reward means and margins."""
    if mask is None:
        mask = torch.ones_like(rewards, dtype=torch.bool)
    n_valid = mask.sum(dim=1)
    if not bool(mask[:, 0].all()) or int(n_valid.min()) < 2:
        raise ValueError("each reward-model example needs its best response at index 0 and 2+ responses")
    if margin is not None and rewards.shape[1] != 2:
        raise ValueError("a reward margin applies to pairs only")
    r = rewards.masked_fill(~mask, -1e9)  # finite, so padded stages have finite gradients (then masked out)
    if rewards.shape[1] == 2:
        per_example = -F.logsigmoid(rewards[:, 0] - rewards[:, 1] - (0.0 if margin is None else margin))
    else:
        tails = torch.logcumsumexp(r.flip(1), dim=1).flip(1)  # logsumexp(r_k, ..., r_n) for every k
        stages = mask.clone()
        stages[torch.arange(len(r)), n_valid - 1] = False  # the last valid response has no stage
        per_example = (tails - rewards).masked_fill(~stages, 0.0).sum(dim=1)
    loss = per_example.mean()
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * (rewards.masked_fill(~mask, 0.0).sum(dim=1) ** 2).mean()
    rows = torch.arange(len(r))
    best, worst = rewards[:, 0].detach(), rewards[rows, n_valid - 1].detach()
    metrics = {
        "accuracy": (best > worst).float().mean(),
        "rewards/chosen": best.mean(),
        "rewards/rejected": worst.mean(),
        "rewards/margins": (best - worst).mean(),
        "loss": loss.detach(),
    }
    return LossOutput(loss, metrics)
