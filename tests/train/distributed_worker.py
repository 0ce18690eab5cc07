"""One DPO step, a sharded scoring pass and a sharded-checkpoint resume of `ResponseLogprobs`, run by
`tests/train/test_fsdp.py` under torch's FSDP2 (`fully_shard`, gloo, 2 CPU processes) and again in
one process without sharding. Run as `python -m torch.distributed.run --nproc_per_node 2 THIS OUT`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from personalign.models.logprobs import pack_batch
from personalign.models.scorer import InMemoryRows, ResponseLogprobs, batch_kwargs, score_store
from personalign.records.tokens import Tokenized, tokenize_pair
from personalign.testing import tiny_causal_lm
from personalign.train.losses import dpo_loss

N_TRAIN, LR = 8, 1.0  # AdamW with eps=1: updates ≈ lr·g, so weights compare the gradients themselves


def examples(tok) -> list[Tokenized]:
    prompts = [f"User {i} asks: " + "how should I plan my week? " * (1 + i % 4) for i in range(N_TRAIN + 3)]
    return [tokenize_pair(tok, p, [f"A calm plan, friend {i}.", "Whatever." * (1 + i % 3)])
            for i, p in enumerate(prompts)]


def reference(n: int) -> torch.Tensor:
    return -torch.linspace(5.0, 9.0, 2 * n).view(n, 2)


def scorer_model() -> tuple[ResponseLogprobs, object]:
    model, tok = tiny_causal_lm(seed=3)
    model.train()
    return ResponseLogprobs(model), tok


def dpo(scorer: torch.nn.Module, batch: list[Tokenized], ref: torch.Tensor) -> torch.Tensor:
    logps, _ = scorer(**batch_kwargs(pack_batch(batch)))
    return dpo_loss(logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], beta=0.5).loss


def full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def named(scorer: torch.nn.Module, grads: bool = False) -> dict[str, torch.Tensor]:
    return {n: full(p.grad if grads else p).detach().clone() for n, p in scorer.named_parameters()}


def single_process() -> dict:
    """Loss, gradients, two AdamW steps and the scores of the held-out rows, unsharded."""
    scorer, tok = scorer_model()
    data = examples(tok)
    optimizer = torch.optim.AdamW(scorer.parameters(), lr=LR, eps=1.0)
    loss = dpo(scorer, data[:N_TRAIN], reference(N_TRAIN))
    loss.backward()
    out = {"loss": loss.detach(), "grads": named(scorer, grads=True)}
    for step in range(2):
        if step:
            optimizer.zero_grad()
            dpo(scorer, data[:N_TRAIN], reference(N_TRAIN)).backward()
        optimizer.step()
        if step == 0:
            out["params_step1"] = named(scorer)
    out["params"] = named(scorer)
    out["scores"] = score_store(scorer, InMemoryRows(data), max_tokens_per_batch=200, progress=False)
    return out


def _sharded(mesh) -> tuple[torch.nn.Module, torch.optim.Optimizer, object]:
    from torch.distributed.fsdp import fully_shard

    scorer, tok = scorer_model()
    for layer in scorer.model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(scorer, mesh=mesh)
    return scorer, torch.optim.AdamW(scorer.parameters(), lr=LR, eps=1.0), tok


def main(out: Path) -> None:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from accelerate import PartialState
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.device_mesh import init_device_mesh

    torch.set_num_threads(1)
    state = PartialState(cpu=True)
    rank, world = state.process_index, state.num_processes
    mesh = init_device_mesh("cpu", (world,))
    scorer, optimizer, tok = _sharded(mesh)
    data = examples(tok)
    per_rank = N_TRAIN // world
    mine = slice(rank * per_rank, (rank + 1) * per_rank)

    def step() -> torch.Tensor:
        optimizer.zero_grad()
        loss = dpo(scorer, data[mine], reference(N_TRAIN)[mine])
        loss.backward()
        return loss

    loss = step().detach()
    dist.all_reduce(loss)
    result = {"loss": loss / world, "grads": named(scorer, grads=True)}
    optimizer.step()
    model_state, optim_state = get_state_dict(scorer, optimizer)  # accelerate's SHARDED_STATE_DICT layout:
    dcp.save({"model": model_state}, checkpoint_id=str(out / "checkpoint" / "pytorch_model_fsdp_0"))
    dcp.save({"optimizer": optim_state}, checkpoint_id=str(out / "checkpoint" / "optimizer_0"))
    step()
    optimizer.step()
    result["params"] = named(scorer)
    result["scores"] = score_store(scorer, InMemoryRows(data), state=state, max_tokens_per_batch=200, progress=False)

    resumed, resumed_optimizer, _ = _sharded(mesh)  # a fresh process's view: new weights, new optimizer
    model_state, optim_state = get_state_dict(resumed, resumed_optimizer)
    model_state, optim_state = {"model": model_state}, {"optimizer": optim_state}
    dcp.load(model_state, checkpoint_id=str(out / "checkpoint" / "pytorch_model_fsdp_0"))
    dcp.load(optim_state, checkpoint_id=str(out / "checkpoint" / "optimizer_0"))
    set_state_dict(resumed, resumed_optimizer, model_state_dict=model_state["model"],
                   optim_state_dict=optim_state["optimizer"])
    resumed_optimizer.zero_grad()
    dpo(resumed, data[mine], reference(N_TRAIN)[mine]).backward()
    resumed_optimizer.step()
    result["resumed_params"] = named(resumed)
    if rank == 0:
        torch.save(result, out / "result.pt")
    state.wait_for_everyone()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
