"""The training loop (docs/architecture.md): one loop for every objective (DPO family, KTO, SimPO, ORPO, SFT,
PRO, reward models), on `accelerate`.

`train(cfg)`:

1. render and tokenize the training (and eval) records once, into an on-disk token store
   (`personalign.tokenstore.store`) that every step reads a micro-batch at a time;
2. reference log-probs from the on-disk cache (`cached_scores`), computed on a miss with the
   *starting* weights by the prepared model before the first step (and before a checkpoint is
   loaded), its LoRA adapters disabled: the reference model is never held next to the policy, and
   under FSDP or ZeRO-3 no process holds a whole copy for it. Only objectives that compare with a
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

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from rich.console import Console

from personalign.config import config_with
from personalign.models.loading import resolve_model
from personalign.models.logprobs import PAD_SEGMENT
from personalign.models.scorer import batch_kwargs
from personalign.progress import work_progress
from personalign.records.io import with_record_files
from personalign.train.build import load_device, load_policy, prepare, trainable_module, trainable_only, with_kernel
from personalign.train.checkpoints import best_checkpoint, checkpoints, provenance, prune_checkpoints, save_checkpoint
from personalign.train.collate import collate
from personalign.train.config import TrainConfig
from personalign.train.data import TrainData, load_data, with_reference
from personalign.train.objective import evaluate, objective
from personalign.train.run import MetricWindow, check_run, checkpoint_metric, close_run, log_metrics, open_run, resume_run
from personalign.train.schedule import StepPlan, due, epoch_order, step_micro_batches
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
    model, tokenizer = load_policy(cfg, model_path, device=load_device(accelerator, cfg))
    data = load_data(cfg, tokenizer, accelerator, console)
    n_records = len(data.store)

    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model = trainable_module(model, cfg)
    model.train()
    plan = StepPlan.of(cfg, n_records, accelerator.num_processes)
    if cfg.lora is not None:
        accelerator.register_save_state_pre_hook(trainable_only(model))
    model, optimizer, scheduler = prepare(accelerator, model, cfg, plan)
    data = with_reference(data, model, model_path, cfg, accelerator, console)
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
                log_metrics(accelerator, out, done, train_metrics, progress)
            save, evaluate_now = due(cfg, done, plan)
            if data.eval is not None and (evaluate_now or save or done == plan.total):
                eval_metrics = evaluate(model, data.eval, cfg, accelerator)
                log_metrics(accelerator, out, done, eval_metrics, progress)
            if save:
                metric = checkpoint_metric(eval_metrics, since_save)  # eval ran at this step, if any
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


def train_with(cfg: TrainConfig | dict | None = None, /, **settings) -> TrainResult:
    """`train` from Python: a config (or dict) and/or its fields as keywords; `data` and `eval_data` may
    also be a `datasets.Dataset` or any iterable of dicts (see `records_file`)."""
    return train(config_with(TrainConfig, cfg, with_record_files(settings)))


