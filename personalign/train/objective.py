"""The objective dispatch: the configured loss from a batch's scores, and the objective plus alignment
accuracy on the eval set (the "best ahead" rule itself is `personalign.metrics.best_ahead`)."""
from __future__ import annotations

import torch
from accelerate import Accelerator

from personalign.metrics import best_ahead
from personalign.train.collate import sft_tensor
from personalign.train.config import TrainConfig
from personalign.train.data import EvalSet, score
from personalign.train.losses import (
    LossOutput,
    dpo_loss,
    kto_loss,
    orpo_loss,
    pro_loss,
    reward_loss,
    sft_loss,
    simpo_loss,
)


def objective(cfg: TrainConfig, logps: torch.Tensor, n_tokens: torch.Tensor, ref: torch.Tensor | None,
              rewards: torch.Tensor | None, sft_index: torch.Tensor | None = None) -> LossOutput:
    """The configured loss from `[B, R]` summed response log-probs, or rewards for rm (responses best
    first; for kto the last column is the mismatched response of `KtoRows`); `sft_index` `[B]` picks
    the response PRO's SFT term imitates (default: the best)."""
    if cfg.loss == "sft":
        return sft_loss(logps[:, 0], n_tokens[:, 0])
    if cfg.loss == "rm":  # `logps` are the reward model's rewards
        if cfg.margin_from_rewards and rewards is None:
            raise ValueError("margin_from_rewards needs records that carry reward scores")
        margin = rewards[:, 0] - rewards[:, 1] if cfg.margin_from_rewards else None
        return reward_loss(logps, n_tokens > 0, margin=margin, center_rewards_coefficient=cfg.center_rewards_coefficient)
    if cfg.loss == "pro":
        avg = logps / n_tokens.clamp(min=1)
        imitated = logps[:, 0] if sft_index is None else logps.gather(1, sft_index[:, None]).squeeze(1)
        return pro_loss(avg, rewards, best_nll=-imitated, mask=n_tokens > 0, sft_weight=cfg.sft_weight)
    if cfg.loss == "simpo":
        return simpo_loss(logps[:, 0], logps[:, 1], n_tokens[:, 0], n_tokens[:, 1], beta=cfg.beta,
                          simpo_gamma=cfg.simpo_gamma, label_smoothing=cfg.label_smoothing, cpo_alpha=cfg.cpo_alpha)
    if cfg.loss == "orpo":
        return orpo_loss(logps[:, 0], logps[:, 1], n_tokens[:, 0], n_tokens[:, 1], beta=cfg.beta)
    if cfg.loss == "kto":  # each row's last response is its KL partner; the others carry KtoRows' labels as 1/0
        last = (n_tokens > 0).sum(dim=1) - 1
        rows = torch.arange(len(last), device=logps.device)
        labelled = (n_tokens > 0) & (torch.arange(logps.shape[1], device=logps.device) < last[:, None])
        return kto_loss(logps[labelled], ref[labelled], rewards[labelled] > 0.5, logps[rows, last], ref[rows, last],
                        beta=cfg.beta, desirable_weight=cfg.desirable_weight,
                        undesirable_weight=cfg.undesirable_weight)
    nll = sft_loss(logps[:, 0], n_tokens[:, 0]).loss if cfg.rpo_alpha else None
    return dpo_loss(
        logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], beta=cfg.beta, loss_type=cfg.loss_type,
        loss_weights=cfg.loss_weights, label_smoothing=cfg.label_smoothing, discopop_tau=cfg.discopop_tau,
        chosen_n_tokens=n_tokens[:, 0], rejected_n_tokens=n_tokens[:, 1], chosen_nll=nll,
        nll_weight=cfg.rpo_alpha or 0.0,
    )


def evaluate(model, data: EvalSet, cfg: TrainConfig, accelerator: Accelerator) -> dict[str, float]:
    """The objective on the eval set, and alignment accuracy `eval/accuracy`: best vs worst response by
    the margin over the reference, for reference-free objectives by mean token log-prob, for a reward
    model by reward (kto: pairs only). For DPO's pairs that is the objective's `rewards/accuracies`,
    which is therefore not reported twice."""
    table = score(model, data.store, cfg, accelerator)
    logps, n_tokens = table.logps, table.n_tokens
    ref = None if data.ref is None else data.ref.logps
    out = objective(cfg, logps, n_tokens, ref, data.rewards, sft_tensor(data.store, range(len(data.store))))
    metrics = {f"eval/{k}": float(v) for k, v in out.metrics.items() if k != "rewards/accuracies"}
    last = (n_tokens > 0).sum(dim=1) - 1
    if cfg.loss == "kto":  # the last response is the KL estimate's mismatched one
        last = last - 1
    if bool((last > 0).all()):
        per_token = n_tokens.numpy() if ref is None and cfg.loss != "rm" else None
        correct = best_ahead(logps.numpy(), last.numpy(), None if ref is None else ref.numpy(), n_tokens=per_token)
        metrics["eval/accuracy"] = float(correct.mean())
    return metrics
