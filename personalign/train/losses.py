"""Training objectives (DESIGN §5) as pure functions: log-prob tensors in, a `LossOutput` out.

Every loss returns the batch loss (a scalar with gradient) and a dict of detached scalar metrics,
so the training loop can log ``metrics`` without knowing which objective it runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")


@dataclass(frozen=True)
class LossOutput:
    """A batch loss (scalar tensor with gradient) and detached scalar metrics keyed by log name."""

    loss: Tensor
    metrics: dict[str, Tensor]


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_n_tokens: Tensor | None = None,
    rejected_n_tokens: Tensor | None = None,
    chosen_nll: Tensor | None = None,
    nll_weight: float = 0.0,
) -> LossOutput:
    """DPO-family loss over a batch of pairs; log-prob inputs are ``[B]`` sums over response tokens.

    With Δ = logp_π − logp_ref and z = β(Δ_w − Δ_l):

    * ``sigmoid``: −(1−ε)·log σ(z) − ε·log σ(−z), conservative DPO with ε = ``label_smoothing``.
      TRL 1.16 uses ``label_smoothing`` only in robust/EXO/AOT; its ``sigmoid`` is the ε = 0 case.
    * ``hinge``: relu(1 − z), as in TRL.
    * ``ipo``: (Δ_w/n_w − Δ_l/n_l − 1/(2β))², i.e. (z/β − 1/(2β))² on length-averaged
      log-probs, as in TRL. Pass the summed log-probs with ``chosen_n_tokens`` and
      ``rejected_n_tokens``; the averaging happens here, so sums and averages cannot be mixed up.

    ``chosen_nll`` (mean token NLL of the chosen responses, e.g. ``sft_loss(policy_chosen,
    chosen_n_tokens).loss``) is added with weight ``nll_weight``. Metrics follow TRL's names;
    rewards come from the summed log-probs for every loss type.
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; expected one of {DPO_LOSS_TYPES}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing applies to loss_type='sigmoid' only, not {loss_type!r}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5), got {label_smoothing}")
    if nll_weight and chosen_nll is None:
        raise ValueError("nll_weight > 0 needs chosen_nll")

    chosen_logratios = policy_chosen - ref_chosen
    rejected_logratios = policy_rejected - ref_rejected
    z = beta * (chosen_logratios - rejected_logratios)
    if loss_type == "sigmoid":
        per_pair = -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    elif loss_type == "hinge":
        per_pair = torch.relu(1.0 - z)
    else:
        if chosen_n_tokens is None or rejected_n_tokens is None:
            raise ValueError("loss_type='ipo' needs chosen_n_tokens and rejected_n_tokens")
        avg_margin = (chosen_logratios / chosen_n_tokens.clamp(min=1)
                      - rejected_logratios / rejected_n_tokens.clamp(min=1))
        per_pair = (avg_margin - 1.0 / (2.0 * beta)) ** 2
    loss = per_pair.mean()
    if nll_weight:
        loss = loss + nll_weight * chosen_nll

    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    metrics = {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracies": (z.detach() > 0).float().mean(),
        "logps/chosen": policy_chosen.detach().mean(),
        "logps/rejected": policy_rejected.detach().mean(),
        "loss": loss.detach(),
    }
    if chosen_nll is not None:
        metrics["nll"] = chosen_nll.detach()
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
