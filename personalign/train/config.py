"""`TrainConfig`: one typed config for every objective; field names follow TRL's DPOConfig/SFTConfig
and transformers' TrainingArguments, and the names of TRL's ScriptArguments/ModelConfig are read
as aliases (`ALIASES`).

Global batch = per_device_train_batch_size × number of processes × gradient_accumulation_steps.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, field_validator, model_validator

from personalign.models.lora import LoraSettings
from personalign.models.settings import ScoringModelSettings
from personalign.records.io import OnInvalid
from personalign.train.loss_names import REFERENCE_FREE, DpoLossType, dpo_loss_check
from personalign.views.build import ViewConfig

Tracker = Literal["tensorboard", "wandb", "mlflow", "trackio"]
TRACKERS: tuple[str, ...] = ("tensorboard", "wandb", "mlflow", "trackio")
Strategy = Literal["no", "steps", "epoch"]
Loss = Literal["dpo", "kto", "simpo", "orpo", "sft", "pro", "rm"]

# TRL / transformers names read as personalign's: alias -> (field, description).
ALIASES: dict[str, tuple[str, str]] = {
    "model_name_or_path": ("model", "TRL ModelConfig name of `model`"),
    "dataset_name": ("data", "TRL ScriptArguments name of `data` (a hub name or a local path)"),
    "dataset_config": ("data", "hub config name: data becomes name:config:dataset_train_split"),
    "dataset_train_split": ("data", "hub split of the training data (default train)"),
    "dataset_test_split": ("eval_data", "hub split read as eval_data (same name and config)"),
    "use_peft": ("lora", "true: LoRA with lora_r, lora_alpha, lora_dropout, lora_target_modules"),
    "lora_r": ("lora.r", "TRL ModelConfig name of lora.r"),
    "lora_alpha": ("lora.lora_alpha", "TRL ModelConfig name of lora.lora_alpha"),
    "lora_dropout": ("lora.lora_dropout", "TRL ModelConfig name of lora.lora_dropout"),
    "lora_target_modules": ("lora.target_modules", "TRL ModelConfig name of lora.target_modules"),
}


class TrainConfig(ScoringModelSettings):
    """`personalign train` settings (docs/formats.md, "Training run directory"); `dtype`, `attn_implementation` and
    `trust_remote_code` (from `ModelSettings`) say how the model is loaded."""

    model: str | None = None
    """Model directory or hub id (alias model_name_or_path); None = the embedded SmolLM2-135M."""
    data: str
    """Training records: .jsonl/.json/.parquet, a save_to_disk directory, or hub name[:config]:split."""
    eval_data: str | None = None
    """Held-out records, evaluated every eval_steps (eval accuracy, eval loss)."""
    columns: dict[str, str] | None = None
    """Field renames applied when reading, {name in the data: record key}, e.g. {question: prompt}."""
    view: ViewConfig = Field(default_factory=lambda: ViewConfig(sample_history=True))
    """How records become prompts (view.view, view.template, ...); evaluation uses all history."""
    limit: PositiveInt | None = None
    """Train on the first N records only."""
    on_invalid: OnInvalid = "fail"
    """fail: stop at the first bad record; skip: bad records go to <data>.rejects.jsonl and are counted."""
    dataset_num_proc: PositiveInt = 1
    """Processes that render and tokenize into the token store."""

    loss: Loss = "dpo"
    """Objective: dpo and kto (pairs, need a reference); simpo, orpo (pairs), sft (best response), pro
    (rankings), rm (a reward model: pairs or rankings): reference-free, no reference pass."""
    beta: PositiveFloat = 0.1
    """Temperature of dpo, kto, simpo (the SimPO paper uses 2.0-2.5) and ORPO's λ."""
    loss_type: DpoLossType | list[DpoLossType] = "sigmoid"
    """DPO variant (TRL's loss_type, every one of TRL 1.16); a list sums them, weighted by loss_weights."""
    loss_weights: list[float] | None = None
    """Weights of a loss_type list (TRL's loss_weights); default 1 each."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    """ε of conservative DPO (sigmoid), robust, exo_pair, aot, aot_unpaired and simpo."""
    discopop_tau: PositiveFloat = 0.05
    """Temperature of loss_type discopop (TRL's default)."""
    rpo_alpha: NonNegativeFloat | None = None
    """Weight of the chosen-response NLL added to DPO (RPO)."""
    simpo_gamma: float = 0.5
    """SimPO's target reward margin γ (TRL CPOConfig's name and default)."""
    cpo_alpha: NonNegativeFloat = 0.0
    """simpo: weight of the chosen NLL (TRL CPOConfig defaults to 1.0, i.e. CPO-SimPO; 0 is SimPO itself)."""
    center_rewards_coefficient: NonNegativeFloat | None = None
    """rm: weight of TRL's reward-centering term c·mean((r_chosen + r_rejected)²)."""
    margin_from_rewards: bool = False
    """rm on pairs: subtract r_best − r_worst of the records' own reward scores from the reward
    difference, −log σ(Δ − m) (TRL's margin column)."""
    desirable_weight: PositiveFloat = 1.0
    """KTO's weight of desirable (chosen) responses."""
    undesirable_weight: PositiveFloat = 1.0
    """KTO's weight of undesirable (rejected) responses."""
    sft_weight: NonNegativeFloat = 0.05
    """PRO's NLL weight w."""

    learning_rate: PositiveFloat = 1e-6
    """Peak AdamW learning rate."""
    per_device_train_batch_size: PositiveInt = 8
    """Records per process per micro-batch."""
    per_device_eval_batch_size: PositiveInt | None = None
    """Records per scoring batch in evaluation; None: as many as max_tokens_per_batch allows."""
    gradient_accumulation_steps: PositiveInt = 1
    """Micro-batches per optimizer step."""
    num_train_epochs: PositiveFloat = 1.0
    """Passes over the data (fractions allowed)."""
    max_steps: int = -1
    """> 0: this many optimizer steps, overriding num_train_epochs."""
    max_length: PositiveInt | None = 1024
    """Token budget of prompt + longest response; history is dropped first, then the prompt is cut."""
    warmup_ratio: float = Field(0.0, ge=0.0, le=1.0)
    """Fraction of the steps spent warming up the learning rate."""
    warmup_steps: NonNegativeInt = 0
    """> 0: this many warm-up steps, overriding warmup_ratio."""
    lr_scheduler_type: Literal["linear", "cosine", "cosine_with_min_lr", "constant", "constant_with_warmup"] = "linear"
    """Decay after warm-up."""
    min_lr_rate: float = Field(0.1, ge=0.0, le=1.0)
    """cosine_with_min_lr decays to min_lr_rate × learning_rate."""
    max_grad_norm: NonNegativeFloat | None = 1.0
    """Gradient clipping norm; None or 0: no clipping."""
    weight_decay: NonNegativeFloat = 0.0
    """AdamW weight decay (never on biases and norms)."""
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0)
    """AdamW beta1."""
    adam_beta2: float = Field(0.999, ge=0.0, lt=1.0)
    """AdamW beta2."""
    adam_epsilon: PositiveFloat = 1e-8
    """AdamW epsilon."""
    bf16: bool = False
    """bf16 autocast over `dtype` weights (fp32 masters by default), for the reference scores too."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% more compute)."""
    lora: LoraSettings | None = None
    """LoRA adapters (lora.r, lora.lora_alpha, ...; or use_peft + lora_r); None = full fine-tuning."""

    output_dir: str = "runs/train"
    """Run directory: checkpoint-<step>/, final/, metrics.jsonl, config.yaml, tracker logs."""
    overwrite_output_dir: bool = False
    """Train into a directory holding files that are not this run's."""
    run_name: str | None = None
    """Name of the run in the trackers (default: the output directory's name)."""
    logging_steps: PositiveInt = 10
    """Log train metrics every N steps."""
    eval_strategy: Strategy = "steps"
    """When to evaluate eval_data: every eval_steps, every epoch, or no (only at the end)."""
    eval_steps: PositiveInt = 500
    """Evaluate every N steps (eval_strategy steps)."""
    save_strategy: Strategy = "steps"
    """When to save checkpoints: every save_steps, every epoch, or no (final model only)."""
    save_steps: PositiveInt = 500
    """Save a checkpoint every N steps (save_strategy steps)."""
    save_total_limit: PositiveInt | None = None
    """Checkpoints kept; the last and the best are always kept."""
    seed: int = 42
    """Seed of the data order, history sampling and initialisation."""
    resume_from_checkpoint: str | None = None
    """A checkpoint directory, or latest (true) for the newest in output_dir."""
    report_to: list[Tracker] = Field(default_factory=lambda: ["tensorboard"])
    """Trackers, through accelerate: tensorboard, wandb, mlflow, trackio; all; or none."""
    max_tokens_per_batch: PositiveInt = 8192
    """Padded-token budget of a scoring batch (reference and evaluation; no gradients)."""
    logits_chunk_size: PositiveInt | None = 1024
    """Positions the LM head computes at a time (recomputed in backward), so the whole logits never exist at
    once; null runs the head in one piece (faster where memory allows)."""
    push_to_hub: bool = False
    """Upload final/ (weights, tokenizer, model card) to the Hub when training ends."""
    hub_model_id: str | None = None
    """Hub repository to push to, user/name (default: the output directory's name)."""
    hub_private_repo: bool | None = None
    """Create the Hub repository private."""

    @classmethod
    def config_aliases(cls) -> list[str]:
        """The TRL names read as aliases (for suggestions and --help)."""
        return list(ALIASES)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        return resolve_aliases(data) if isinstance(data, dict) else data

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to(cls, value: Any) -> Any:
        if value is None or value == "none" or value == ["none"]:
            return []
        if value == "all" or value == ["all"]:
            return list(TRACKERS)
        return [value] if isinstance(value, str) else value

    @field_validator("eval_strategy", "save_strategy", mode="before")
    @classmethod
    def _strategy(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML reads a bare `no` as false

    @field_validator("resume_from_checkpoint", mode="before")
    @classmethod
    def _resume(cls, value: Any) -> Any:
        return "latest" if value is True else None if value is False else value

    @property
    def needs_reference(self) -> bool:
        """Whether the objective compares with a reference model (dpo, kto); the others never score one."""
        return self.loss not in REFERENCE_FREE

    @model_validator(mode="after")
    def _quantized_needs_lora(self) -> TrainConfig:
        if self.quantized and self.lora is None:
            raise ValueError("load_in_4bit / load_in_8bit train LoRA adapters on the quantized weights (QLoRA): "
                             "set use_peft true")
        return self

    @model_validator(mode="after")
    def _loss_options(self) -> TrainConfig:
        if self.loss == "dpo":
            dpo_loss_check(self.loss_type, self.loss_weights, self.label_smoothing)
        elif self.label_smoothing and self.loss != "simpo":
            raise ValueError(f"label_smoothing applies to loss 'dpo' and 'simpo', not {self.loss!r}")
        if self.rpo_alpha and self.loss != "dpo":
            raise ValueError("rpo_alpha applies to loss='dpo' only")
        if (self.center_rewards_coefficient or self.margin_from_rewards) and self.loss != "rm":
            raise ValueError("center_rewards_coefficient and margin_from_rewards apply to loss='rm' only")
        return self


def resolve_aliases(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with the `ALIASES` keys turned into personalign's fields; an alias and its field both given is an error."""
    if not any(k in data for k in ALIASES):
        return data
    data = dict(data)

    def take(alias: str, field: str) -> None:
        if alias in data:
            value = data.pop(alias)
            if data.get(field) is not None and data[field] != value:
                raise ValueError(f"'{alias}' and '{field}' name the same setting; give one of them")
            data[field] = value

    take("model_name_or_path", "model")
    take("dataset_name", "data")
    config, train_split, test_split = (data.pop(k, None) for k in ("dataset_config", "dataset_train_split",
                                                                   "dataset_test_split"))
    if config is not None or train_split is not None or test_split is not None:
        name = data.get("data")
        if not isinstance(name, str) or ":" in name:
            raise ValueError("dataset_config, dataset_train_split and dataset_test_split need dataset_name (data) "
                             "as a bare hub name")
        base = f"{name}:{config}" if config else name
        data["data"] = f"{base}:{train_split or 'train'}"
        if test_split is not None:
            if data.get("eval_data") is not None:
                raise ValueError("'dataset_test_split' and 'eval_data' name the same setting; give one of them")
            data["eval_data"] = f"{base}:{test_split}"
    use_peft = data.pop("use_peft", None)
    given = [alias for alias, (field, _) in ALIASES.items() if field.startswith("lora.") and alias in data]
    lora = {ALIASES[alias][0].partition(".")[2]: data.pop(alias) for alias in given}
    if given and not use_peft and not isinstance(data.get("lora"), dict):
        raise ValueError(f"{', '.join(given)}: LoRA settings need use_peft true (or a lora: section)")
    if use_peft or lora:
        data["lora"] = {**(data.get("lora") or {}), **lora}
    elif use_peft is False:
        data["lora"] = None
    return data
