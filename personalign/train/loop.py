"""The training loop (docs/architecture.md): one loop for every objective (DPO family, KTO, SimPO, ORPO, SFT,
PRO, reward models), on `accelerate`.

`train(cfg)`:

1. render and tokenize the training (and eval) records once, into an on-disk token store
   (`personalign.tokenstore.store`) that every step reads a micro-batch at a time;
2. reference log-probs from the on-disk cache (`cached_scores`), computed on a miss with the
   *starting* weights — for LoRA that is the base model, i.e. the policy with no adapters. The
   reference model is never held next to the policy. Only objectives that compare with a
   reference (dpo, kto) score one, for training and evaluation; the reference-free ones (simpo,
   orpo, sft, pro, rm) never do;
3. LoRA adapters or full fine-tuning, inside `ResponseLogprobs` (the module accelerate prepares,
   whose forward runs the decoder and the LM head) or, for a reward model (loss rm), `ResponseRewards`
   (decoder and score head, the reward read at each response's last token); AdamW, warmup + linear/cosine decay, gradient clipping;
4. the data order: each epoch is a permutation seeded by (seed + epoch); optimizer step k of an
   epoch takes the k-th slice of global-batch size (the last slice wraps around to the epoch's
   start, so every step has a full batch), split into gradient-accumulation micro-batches and
   then across processes. The batches of a step depend only on (seed, step), so a resumed run
   continues exactly where the checkpoint left off;
5. logging (console, `metrics.jsonl`, TensorBoard), periodic evaluation, checkpoints
   (`checkpoint-<step>/`, the last and the best kept) and the final HF model in `final/`.
"""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedType
from accelerate.utils import set_seed
from rich.console import Console
from rich.progress import Progress
from transformers import get_scheduler

from personalign.config import config_with, dump_config
from personalign.errors import CorruptFileError, EmptyError, UserError
from personalign.files import check_output_dir, write_text
from personalign.metrics import pair_correct
from personalign.models.card import push_to_hub, write_provenance
from personalign.models.loading import check_model_dir, resolve_model
from personalign.models.logprobs import PAD_SEGMENT
from personalign.models.refcache import cached_table, scores_path, table_fits
from personalign.models.scorer import ScoreTable, batch_kwargs, score_store
from personalign.progress import work_progress
from personalign.records.io import check_source, is_path_source, records_file
from personalign.tokenstore.store import TokenStore, load_store
from personalign.train.checkpoints import (
    CONFIG_FILE,
    FINAL_DIR,
    METRICS_FILE,
    TRAIN_OUTPUTS,
    best_checkpoint,
    checkpoints,
    load_policy,
    provenance,
    prune_checkpoints,
    read_state,
    resolve_checkpoint,
    save_checkpoint,
    save_final,
    trainable_module,
    trainable_only,
)
from personalign.train.collate import KtoRows, collate, rewards_tensor, run_specs, sft_tensor
from personalign.train.config import TrainConfig
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
from personalign.train.sharding import cpu_fsdp_requested, is_sharded, load_sharded, shard
from personalign.train.trackers import check_trackers, make_trackers


@dataclass
class TrainResult:
    """What a run produced; `policy` is the trained model in memory (a PeftModel with LoRA)."""

    output_dir: Path
    final_dir: Path
    global_step: int
    epoch: float
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]
    best_checkpoint: Path | None
    resumed_from: Path | None
    counts: dict[str, int]
    seconds: float
    policy: torch.nn.Module | None = field(default=None, repr=False)


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


def scoring_module(model: torch.nn.Module, accelerator: Accelerator) -> torch.nn.Module:
    """The module to score with, without gradients: the prepared one where every forward runs collectives
    (FSDP, DeepSpeed: all ranks score in step), else the unwrapped one (no DDP hooks per forward)."""
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED) or is_sharded(model)
    return model if sharded else accelerator.unwrap_model(model)


def score(model, store: TokenStore | KtoRows, cfg: TrainConfig, accelerator: Accelerator, journal: Path | None = None
          ) -> ScoreTable:
    """`[N, R]` log-probs of every row of `store`, sharded over the processes (all get the table)."""
    return score_store(scoring_module(model, accelerator), store, state=accelerator,
                       max_tokens_per_batch=cfg.max_tokens_per_batch, batch_size=cfg.per_device_eval_batch_size,
                       journal=journal, progress=accelerator.is_main_process)


def reference_table(model, store: TokenStore | KtoRows, model_path: str, cfg: TrainConfig, accelerator: Accelerator
                    ) -> tuple[ScoreTable, bool]:
    """Reference log-probs of `store`, from the cache or scored now with `model`; (table, hit)."""
    table, hit = cached_table(scores_path(store, model_path, cfg, bf16_autocast=cfg.bf16),
                              lambda journal: score(model, store, cfg, accelerator, journal),
                              write=accelerator.is_main_process, fits=table_fits(store),
                              meta={"model": model_path, "store": store.path.name, "kernel": cfg.attn_implementation})
    accelerator.wait_for_everyone()
    return table, hit


@dataclass(frozen=True)
class EvalSet:
    """The eval rows with their reference log-probs (None for reference-free objectives) and rewards."""

    store: TokenStore | KtoRows
    ref: ScoreTable | None
    rewards: torch.Tensor | None


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
        rows = torch.arange(len(data.store))
        if cfg.loss == "rm":
            correct = (logps[:, 0] > logps[rows, last]).numpy()
        elif ref is None:
            avg = logps / n_tokens.clamp(min=1)
            correct = (avg[:, 0] > avg[rows, last]).numpy()
        else:
            correct = pair_correct(logps[:, 0].numpy(), logps[rows, last].numpy(),
                                   ref[:, 0].numpy(), ref[rows, last].numpy())
        metrics["eval/accuracy"] = float(correct.mean())
    return metrics


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))


def step_micro_batches(order: torch.Tensor, k: int, *, per_device: int, accumulation: int, rank: int,
                       world: int) -> list[list[int]]:
    """This process's micro-batches (record indices) for step `k` of an epoch with permutation `order`."""
    micro = per_device * world
    window = torch.arange(k * micro * accumulation, (k + 1) * micro * accumulation)
    idx = order[window % len(order)].tolist()
    return [idx[j * micro + rank * per_device : j * micro + (rank + 1) * per_device] for j in range(accumulation)]


RESUME_KEYS = ("step", "global_batch", "records")


def check_run(cfg: TrainConfig) -> Path | None:
    """Everything about a run that can be checked before a model loads: the data files, the model
    directory, the output directory (a directory of other files needs `overwrite_output_dir`) and the
    checkpoint to resume from (its trainer state must be readable). Returns that checkpoint."""
    check_source(cfg.data, option="data")
    if cfg.eval_data is not None:
        check_source(cfg.eval_data, option="eval_data")
    check_model_dir(cfg.model, option="model", kind="any" if cfg.loss == "rm" else "causal")  # rm: a causal LM or an RM
    check_output_dir(cfg.output_dir, inputs=[cfg.data, cfg.eval_data], own=TRAIN_OUTPUTS,
                     overwrite=cfg.overwrite_output_dir, option="output_dir")
    if cfg.resume_from_checkpoint is None:
        return None
    checkpoint = resolve_checkpoint(cfg.resume_from_checkpoint, cfg.output_dir)
    read_state(checkpoint, RESUME_KEYS)
    return checkpoint


@dataclass(frozen=True, slots=True)
class StepPlan:
    """How many optimizer steps a run takes, and how many records each takes."""

    per_device: int
    world: int
    accumulation: int
    steps_per_epoch: int
    total: int

    @property
    def global_batch(self) -> int:
        return self.per_device * self.world * self.accumulation

    @classmethod
    def of(cls, cfg: TrainConfig, n_records: int, world: int) -> StepPlan:
        per_device, ga = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
        steps_per_epoch = math.ceil(n_records / (per_device * world * ga))
        total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * steps_per_epoch)
        return cls(per_device, world, ga, steps_per_epoch, total)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, total_steps: int):
    """AdamW (no weight decay on biases and norms) and the warmup + decay schedule over `total_steps`."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate,
                                  betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon)
    min_lr = {"min_lr_rate": cfg.min_lr_rate} if cfg.lr_scheduler_type == "cosine_with_min_lr" else None
    warmup = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * total_steps)
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup,
                              num_training_steps=total_steps, scheduler_specific_kwargs=min_lr)
    return optimizer, scheduler


@dataclass(frozen=True)
class TrainData:
    """The training rows (the token store; for kto with its KL partners), their reference log-probs
    (objectives that need one), the store's counts, and the eval set."""

    store: TokenStore | KtoRows
    ref: ScoreTable | None
    counts: dict[str, int]
    eval: EvalSet | None


def load_data(cfg: TrainConfig, model, tokenizer, model_path: str, accelerator: Accelerator, console: Console
              ) -> TrainData:
    """Token stores of the training (and eval) records, built once by the main process, with reference
    log-probs from the cache (scored with the starting weights) where the loss or the evaluation needs them."""
    specs = run_specs(cfg)
    with accelerator.main_process_first():
        store, hit = load_store(*specs[0], tokenizer, num_proc=cfg.dataset_num_proc,
                                progress=accelerator.is_main_process)
    c = store.counts
    if cfg.max_length is not None and c["responses_cut"] == c["records"]:
        raise EmptyError(f"every one of the {c['records']} records is too long for max_length={cfg.max_length}: its "
                         "responses would be cut even after dropping history and cutting the prompt; raise max_length",
                         file=cfg.data)
    console.print(f"token store {store.path}: {c['records']} records, {c['tokens']:,} tokens, "
                  f"{c['truncated_for_length']} truncated, {c['rejected']} rejected ({'cache' if hit else 'built'})")
    counts = {"records": c["records"], "rejected": c["rejected"], "truncated_for_length": c["truncated_for_length"],
              **{k: v for k, v in c.items() if k.startswith("view_") and k != "view_records"}}
    rows = KtoRows(store) if cfg.loss == "kto" else store
    ref = None
    if cfg.needs_reference:
        ref, hit = reference_table(model, rows, model_path, cfg, accelerator)
        console.print(f"reference log-probs of {len(store)} training records: {'cache' if hit else 'computed'}")
    if cfg.eval_data is None:
        return TrainData(rows, ref, counts, None)
    with accelerator.main_process_first():
        eval_store, _ = load_store(*specs[1], tokenizer, num_proc=cfg.dataset_num_proc,
                                   progress=accelerator.is_main_process)
    eval_rows = KtoRows(eval_store) if cfg.loss == "kto" else eval_store
    eval_ref = reference_table(model, eval_rows, model_path, cfg, accelerator)[0] if cfg.needs_reference else None
    rewards = rewards_tensor(eval_rows.rewards(range(len(eval_store))), eval_rows.width)
    return TrainData(rows, ref, counts, EvalSet(eval_rows, eval_ref, rewards))


def resume_run(accelerator: Accelerator, checkpoint: Path, plan: StepPlan, n_records: int, prepared: tuple, *,
               strict: bool = True) -> int:
    """Load a checkpoint's model, optimizer, schedule and RNG state into `prepared` (model, optimizer,
    scheduler); returns its step. `strict=False` for adapter-only (LoRA) checkpoints: the frozen base
    weights are the ones already loaded."""
    state = read_state(checkpoint)
    if (state["global_batch"], state["records"]) != (plan.global_batch, n_records):
        raise ValueError(f"{checkpoint} was saved with global batch {state['global_batch']} on "
                         f"{state['records']} records; this run has {plan.global_batch} on {n_records}")
    try:
        if is_sharded(prepared[0]):
            load_sharded(accelerator, *prepared, checkpoint)
        else:
            accelerator.load_state(checkpoint, strict=strict)
    except Exception as e:  # noqa: BLE001 - torch/safetensors raise many types for a damaged file
        raise CorruptFileError(f"cannot load the checkpoint ({type(e).__name__}: {e}); resume from another "
                               "checkpoint or delete this one", file=checkpoint) from None
    return state["step"]


class MetricWindow:
    """Training metrics summed since the last log line, averaged over steps and processes on `flush`."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.steps, self.tokens, self.started = 0, 0, time.perf_counter()

    def add(self, metrics: dict[str, float], divisor: int = 1) -> None:
        for name, value in metrics.items():
            self.sums[name] += float(value) / divisor

    def flush(self, accelerator: Accelerator, *, lr: float, epoch: float, global_batch: int) -> dict[str, float]:
        """`train/<name>` means of the window plus learning rate, epoch and throughput (samples and
        non-padding tokens per second over all processes; peak accelerator memory on CUDA); starts a new window."""
        names = sorted(self.sums)
        means = accelerator.reduce(torch.tensor([self.sums[n] for n in names], device=accelerator.device),
                                   reduction="mean") / self.steps
        tokens = accelerator.reduce(torch.tensor(float(self.tokens), device=accelerator.device), reduction="sum")
        elapsed = time.perf_counter() - self.started
        metrics = {f"train/{n}": float(v) for n, v in zip(names, means)}
        metrics |= {"train/learning_rate": lr, "train/epoch": epoch,
                    "train/samples_per_second": self.steps * global_batch / elapsed,
                    "train/tokens_per_second": float(tokens) / elapsed}
        if torch.cuda.is_available():
            metrics["train/peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        self._reset()
        return metrics


def prepare(accelerator: Accelerator, model: torch.nn.Module, cfg: TrainConfig, plan: StepPlan) -> tuple:
    """(model, optimizer, scheduler) prepared by accelerate; for FSDP on CPU processes, which accelerate
    cannot shard, the model is sharded here (`sharding.shard`) and only the optimizer and scheduler are
    prepared."""
    if not cpu_fsdp_requested(accelerator):
        return accelerator.prepare(model, *build_optimizer(model, cfg, plan.total))
    if cfg.lora is not None:
        raise UserError("FSDP on CPU processes shards full fine-tuning only: launch a LoRA run without --use_fsdp",
                        option="lora")
    model = shard(model, accelerator.num_processes)
    return (model, *accelerator.prepare(*build_optimizer(model, cfg, plan.total)))


def with_kernel(cfg: TrainConfig, device_type: str, console: Console) -> TrainConfig:
    """`cfg` with the attention kernel the packed scorer runs on this device (flex_attention, which has no
    backward pass on CPU, refused there)."""
    kernel = cfg.scoring_kernel(cfg.max_length, device_type)
    if kernel != cfg.attn_implementation:
        console.print(f"attention kernel: {kernel} (max_length {cfg.max_length} on {device_type})")
        cfg = cfg.model_copy(update={"attn_implementation": kernel})
    if cfg.attn_implementation == "flex_attention" and device_type == "cpu":
        raise UserError("attn_implementation 'flex_attention' has no backward pass on CPU (torch): train with sdpa "
                        "here; flex_attention trains on a GPU and scores anywhere", option="attn_implementation")
    return cfg


def open_run(accelerator: Accelerator, cfg: TrainConfig, out: Path, start: int) -> None:
    """The run directory (its config, its metrics cut back to `start`) and the trackers."""
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out / CONFIG_FILE)
        _truncate_metrics(out / METRICS_FILE, start)
    if cfg.report_to:
        accelerator.init_trackers("personalign", config=_flat(cfg.model_dump(mode="json")))


def train_step(model, optimizer, data: TrainData, micro_batches: list[list[int]], cfg: TrainConfig,
               accelerator: Accelerator, window: MetricWindow) -> float:
    """One optimizer step over this process's micro-batches (accumulated); its loss."""
    step_loss = 0.0
    for idx in micro_batches:
        batch = collate(data.store, idx, None if data.ref is None else data.ref.logps).to(accelerator.device)
        with accelerator.accumulate(model):
            with accelerator.autocast():
                logps, n_tokens = model(**batch_kwargs(batch.packed))
                loss_out = objective(cfg, logps, n_tokens, batch.ref_logps, batch.rewards, batch.sft_index)
            accelerator.backward(loss_out.loss)
            if accelerator.sync_gradients and cfg.max_grad_norm:
                norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                if norm is not None:  # None under DeepSpeed, which clips by itself
                    window.add({"grad_norm": norm})
            optimizer.step()
            optimizer.zero_grad()
        window.add(loss_out.metrics, len(micro_batches))
        window.tokens += int((batch.packed.segment_ids != PAD_SEGMENT).sum())
        step_loss += float(loss_out.metrics["loss"]) / len(micro_batches)
    return step_loss


def close_run(accelerator: Accelerator, model, tokenizer, cfg: TrainConfig, out: Path, console: Console,
              card: dict) -> Path:
    """Save the final model with its provenance card (and push it when asked); returns its directory."""
    final_dir = save_final(accelerator, model, tokenizer, out / FINAL_DIR)
    if accelerator.is_main_process:
        write_provenance(final_dir, card)
    accelerator.end_training()
    console.print(f"final model saved to {final_dir}")
    if cfg.push_to_hub and accelerator.is_main_process:
        repo = cfg.hub_model_id or out.resolve().name
        console.print(f"pushed to {push_to_hub(final_dir, repo, private=cfg.hub_private_repo)}")
    return final_dir


def train(cfg: TrainConfig) -> TrainResult:
    """Train a policy as configured; see the module docstring for the steps."""
    started = time.perf_counter()
    check_trackers(cfg.report_to)
    resume = check_run(cfg)
    out = Path(cfg.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, mixed_precision="bf16" if cfg.bf16 else "no",
        log_with=make_trackers(cfg.report_to, out, cfg.run_name) or None, project_dir=out,
        step_scheduler_with_optimizer=False,
    )
    main = accelerator.is_main_process
    console = Console(stderr=True, quiet=not main)
    set_seed(cfg.seed)
    with accelerator.main_process_first():
        model_path = resolve_model(cfg.model)
    cfg = with_kernel(cfg, accelerator.device.type, console)
    model, tokenizer = load_policy(cfg, model_path, device=accelerator.device)
    data = load_data(cfg, model, tokenizer, model_path, accelerator, console)
    n_records = len(data.store)

    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model = trainable_module(model, cfg)
    model.train()
    plan = StepPlan.of(cfg, n_records, accelerator.num_processes)
    if cfg.lora is not None:
        accelerator.register_save_state_pre_hook(trainable_only(model))
    model, optimizer, scheduler = prepare(accelerator, model, cfg, plan)
    start = 0 if resume is None else resume_run(accelerator, resume, plan, n_records, (model, optimizer, scheduler),
                                                strict=cfg.lora is None)
    if resume is not None:
        console.print(f"resumed from {resume} at step {start}")
    open_run(accelerator, cfg, out, start)
    console.print(f"training {cfg.loss} on {n_records} records: {plan.total} steps × global batch {plan.global_batch} "
                  f"({plan.per_device} per device × {plan.world} processes × {plan.accumulation} accumulation), "
                  f"{plan.steps_per_epoch} steps/epoch")

    window, since_save = MetricWindow(), []
    train_metrics: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}
    order, order_epoch = None, -1
    progress = work_progress("[bold]train", console=console, enabled=main, transient=False)
    with progress:
        task = progress.add_task("train", total=plan.total, completed=start)
        for step in range(start, plan.total):
            epoch, k = divmod(step, plan.steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = epoch_order(n_records, cfg.seed, epoch), epoch
            micro_batches = step_micro_batches(order, k, per_device=plan.per_device, accumulation=plan.accumulation,
                                               rank=accelerator.process_index, world=plan.world)
            lr = scheduler.get_last_lr()[0]
            step_loss = train_step(model, optimizer, data, micro_batches, cfg, accelerator, window)
            scheduler.step()
            window.steps += 1
            since_save.append(step_loss)
            done = step + 1
            progress.update(task, completed=done)

            if done % cfg.logging_steps == 0 or done == plan.total:
                train_metrics = window.flush(accelerator, lr=lr, epoch=done / plan.steps_per_epoch,
                                             global_batch=plan.global_batch)
                _log(accelerator, out, done, train_metrics, progress)
            save, evaluate_now = due(cfg, done, plan)
            if data.eval is not None and (evaluate_now or save or done == plan.total):
                eval_metrics = evaluate(model, data.eval, cfg, accelerator)
                _log(accelerator, out, done, eval_metrics, progress)
            if save:
                metric = _checkpoint_metric(eval_metrics, since_save)  # eval ran at this step, if any
                state = {"step": done, "epoch": done / plan.steps_per_epoch, "global_batch": plan.global_batch,
                         "records": n_records, "metric": metric}
                path = save_checkpoint(accelerator, out, done, state, cfg, (model, optimizer, scheduler))
                since_save = []
                if main:
                    pruned = prune_checkpoints(out, cfg.save_total_limit)
                    progress.console.print(f"saved {path}" + (f"; pruned {len(pruned)}" if pruned else ""))

    final_dir = close_run(accelerator, model, tokenizer, cfg, out, console,
                          provenance(cfg, records=n_records, steps=plan.total, metrics={**train_metrics, **eval_metrics}))
    return TrainResult(
        output_dir=out, final_dir=final_dir, global_step=plan.total, epoch=plan.total / plan.steps_per_epoch,
        train_metrics=train_metrics, eval_metrics=eval_metrics, best_checkpoint=best_checkpoint(out),
        resumed_from=resume, counts=data.counts | {"global_batch": plan.global_batch, "checkpoints": len(checkpoints(out))},
        seconds=time.perf_counter() - started, policy=accelerator.unwrap_model(model).model,
    )


def due(cfg: TrainConfig, done: int, plan: StepPlan) -> tuple[bool, bool]:
    """(save a checkpoint, evaluate) after optimizer step `done`, by save_strategy and eval_strategy."""
    epoch_end = done % plan.steps_per_epoch == 0

    def at(strategy: str, every: int) -> bool:
        return strategy == "steps" and done % every == 0 or strategy == "epoch" and epoch_end

    return at(cfg.save_strategy, cfg.save_steps), at(cfg.eval_strategy, cfg.eval_steps)


def train_with(cfg: TrainConfig | dict | None = None, /, **settings) -> TrainResult:
    """`train` from Python: a config (or dict) and/or its fields as keywords; `data` and `eval_data` may
    also be a `datasets.Dataset` or any iterable of dicts (see `records_file`)."""
    for key in ("data", "eval_data"):
        if settings.get(key) is not None and not is_path_source(settings[key]):
            settings[key] = records_file(settings[key])
    return train(config_with(TrainConfig, cfg, settings))


def _checkpoint_metric(eval_metrics: dict[str, float], train_losses: list[float]) -> dict | None:
    """What ranks checkpoints: eval accuracy, else eval loss, else the mean train loss since the last save."""
    if eval_metrics and "eval/accuracy" in eval_metrics:
        return {"name": "eval/accuracy", "value": eval_metrics["eval/accuracy"], "greater_is_better": True}
    if eval_metrics:
        return {"name": "eval/loss", "value": eval_metrics["eval/loss"], "greater_is_better": False}
    if train_losses:
        return {"name": "train/loss", "value": sum(train_losses) / len(train_losses), "greater_is_better": False}
    return None


def _log(accelerator: Accelerator, out: Path, step: int, metrics: dict[str, float], progress: Progress) -> None:
    """One console line, one `metrics.jsonl` row and the tracker scalars (main process)."""
    accelerator.log(metrics, step=step)
    if not accelerator.is_main_process:
        return
    with open(out / METRICS_FILE, "a") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")
    short = {"loss": "loss", "rewards/margins": "margin", "rewards/accuracies": "acc", "accuracy": "align-acc",
             "pro/accuracy": "acc", "grad_norm": "|g|", "learning_rate": "lr", "samples_per_second": "ex/s",
             "tokens_per_second": "tok/s"}
    parts = []
    for name, value in metrics.items():
        base = name.partition("/")[2]
        if base in short:
            parts.append(f"{short[base]} {value:.3g}" if base != "learning_rate" else f"lr {value:.2e}")
    split = next(iter(metrics)).partition("/")[0]
    progress.console.print(f"[dim]step {step}[/] {split}: " + " · ".join(parts), highlight=False)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after `step` (a resumed run logs them again); start fresh at step 0."""
    if step == 0 or not path.is_file():
        path.unlink(missing_ok=True)
        return
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                rows.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    write_text(path, "".join(r + "\n" for r in rows))


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested config -> flat {a.b: scalar} for TensorBoard hparams (None and lists as text)."""
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat |= _flat(v, f"{prefix}{k}.")
        else:
            flat[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return flat
