"""`TrainConfig`: one typed config for every objective; field names follow TRL's DPOConfig/SFTConfig.

Global batch = per_device_train_batch_size × number of processes × gradient_accumulation_steps.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from personalign.data.io import OnInvalid
from personalign.data.views import ViewConfig
from personalign.models.lora import LoraSettings
from personalign.models.settings import ScoringModelSettings


class TrainConfig(ScoringModelSettings):
    """`personalign train` settings (DESIGN §5); `dtype`, `attn_implementation` and
    `trust_remote_code` (from `ModelSettings`) say how the model is loaded."""

    model: str | None = None  # HF directory or hub id; None = the embedded default
    data: str
    eval_data: str | None = None
    view: ViewConfig = Field(default_factory=lambda: ViewConfig(sample_history=True))  # eval: all history
    limit: PositiveInt | None = None  # train on the first N records only
    on_invalid: OnInvalid = "fail"  # skip: bad records go to <data>.rejects.jsonl and are counted
    dataset_num_proc: PositiveInt = 1  # processes that render and tokenize into the token store

    loss: Literal["dpo", "sft", "pro"] = "dpo"
    beta: PositiveFloat = 0.1
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    rpo_alpha: NonNegativeFloat | None = None  # weight of the chosen-response NLL added to DPO
    sft_weight: NonNegativeFloat = 0.05  # PRO's NLL weight w

    learning_rate: PositiveFloat = 1e-6
    per_device_train_batch_size: PositiveInt = 8
    gradient_accumulation_steps: PositiveInt = 1
    num_train_epochs: PositiveFloat = 1.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    max_length: PositiveInt | None = 1024
    warmup_ratio: float = Field(0.0, ge=0.0, le=1.0)
    lr_scheduler_type: Literal["linear", "cosine", "cosine_with_min_lr"] = "linear"
    min_lr_rate: float = Field(0.1, ge=0.0, le=1.0)  # cosine_with_min_lr decays to min_lr_rate × lr
    max_grad_norm: NonNegativeFloat | None = 1.0  # None or 0: no clipping
    weight_decay: NonNegativeFloat = 0.0
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0)
    adam_beta2: float = Field(0.999, ge=0.0, lt=1.0)
    adam_epsilon: PositiveFloat = 1e-8
    bf16: bool = False  # bf16 autocast over `dtype` weights (fp32 masters by default), for the reference scores too
    gradient_checkpointing: bool = False
    lora: LoraSettings | None = None  # None = full fine-tuning

    output_dir: str = "runs/train"
    overwrite_output_dir: bool = False  # train into a directory holding files that are not this run's
    logging_steps: PositiveInt = 10
    eval_steps: PositiveInt = 500
    save_steps: PositiveInt = 500
    save_total_limit: PositiveInt | None = None  # the last and the best checkpoint are always kept
    seed: int = 42
    resume_from_checkpoint: str | None = None  # a checkpoint directory, or "latest" in output_dir
    report_to: Literal["tensorboard", "none"] = "tensorboard"
    max_tokens_per_batch: PositiveInt = 8192  # padded-token budget of a scoring batch (no gradients)

    @model_validator(mode="after")
    def _loss_options(self) -> TrainConfig:
        if self.label_smoothing and (self.loss != "dpo" or self.loss_type != "sigmoid"):
            raise ValueError("label_smoothing applies to loss='dpo' with loss_type='sigmoid' only")
        if self.rpo_alpha and self.loss != "dpo":
            raise ValueError("rpo_alpha applies to loss='dpo' only")
        return self
