"""The log-prob engine: logp(y|x) for several responses that share one prompt, in one pass.

Each example becomes ONE packed sequence ``prompt ‖ r1 ‖ … ‖ rk``. Explicit position ids restart
every response right after the prompt, and a 4-D additive attention mask lets each response see
the prompt and itself (causally) but never its siblings, so every response's log-probs equal
those of a separate ``prompt ‖ r`` forward while the prompt is encoded once. Only the hidden
states that predict response tokens go through the LM head, in chunks, so a tokens × vocab
tensor is never materialised (with gradients, chunks are recomputed in the backward pass).

Without gradients (reference log-probs, evaluation) the same packed batch runs in two passes: the
prompts (plus whatever of each first response fits in the longest prompt's width) with no mask,
i.e. SDPA's causal kernel, which skips the masked half of the attention square where a custom
mask makes it compute the whole square, keeping their keys and values in a cache; then the
remaining response tokens, attending to that cache through a small
``responses × (prompt + responses)`` mask. The result is the same; long prompts get cheaper.
With gradients it stays one forward (DDP and activation checkpointing expect one call), as it
does for models with sliding-window layers (a sliding cache would drop prompt keys) and for
training-mode models with activation checkpointing (which turns the cache off).

Supported attention implementations: ``sdpa`` and ``eager`` take the custom 4-D mask, which holds
``L × L`` floats per sequence: fastest for short sequences (and on CPU). ``flex_attention`` gets
the same rule as a block mask (`packed_block_mask`): only the 128 × 128 blocks' kinds are stored
and the rule is evaluated inside partial blocks, so 8k-token packed sequences cost no ``L × L``
float mask; it runs one forward (no prompt cache). The kernel follows the model's
``attn_implementation`` (a config key of every scoring command).
Logit post-processing that lives in a model's forward is re-applied per chunk for the known
config fields ``logit_scale`` (Cohere), ``logits_scaling`` (Granite) and
``final_logit_softcapping`` (Gemma 2/3); other custom heads are not supported.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from personalign.models.compat import output_cache, with_cache
from personalign.models.settings import MASK_ATTN_IMPLEMENTATIONS
from personalign.records.tokens import Tokenized

PAD_SEGMENT = -1
PROMPT_SEGMENT = 0


@dataclass(frozen=True, slots=True)
class PackedBatch:
    """Right-padded packed sequences plus the flat index of every scored response token.

    `segment_ids` is -1 for padding, 0 for the prompt and j+1 for response j. Token n is
    predicted by the hidden state at (`pred_rows[n]`, `pred_cols[n]`), its id is `targets[n]`
    and it belongs to response `slots[n] % R` of row `slots[n] // R`.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor
    pred_rows: torch.Tensor
    pred_cols: torch.Tensor
    targets: torch.Tensor
    slots: torch.Tensor
    n_tokens: torch.Tensor

    @property
    def num_responses(self) -> int:
        return self.n_tokens.shape[1]

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def pack_batch(examples: Sequence[Tokenized]) -> PackedBatch:
    """Pack each example into one sequence and right-pad them into a batch."""
    rows = len(examples)
    width = max(ex.packed_length for ex in examples)
    n_resp = max(len(ex.response_ids) for ex in examples)
    input_ids = torch.zeros(rows, width, dtype=torch.long)
    position_ids = torch.zeros(rows, width, dtype=torch.long)
    segment_ids = torch.full((rows, width), PAD_SEGMENT, dtype=torch.long)
    n_tokens = torch.zeros(rows, n_resp, dtype=torch.long)
    pred_rows, pred_cols, targets, slots = [], [], [], []
    for b, ex in enumerate(examples):
        p = len(ex.prompt_ids)
        input_ids[b, :p] = torch.tensor(ex.prompt_ids)
        position_ids[b, :p] = torch.arange(p)
        segment_ids[b, :p] = PROMPT_SEGMENT
        start = p
        for j, ids in enumerate(ex.response_ids):
            n = len(ids)
            input_ids[b, start : start + n] = torch.tensor(ids, dtype=torch.long)
            position_ids[b, start : start + n] = torch.arange(p, p + n)
            segment_ids[b, start : start + n] = j + 1
            pred_rows += [b] * n
            pred_cols += [p - 1, *range(start, start + n - 1)]
            targets += ids
            slots += [b * n_resp + j] * n
            n_tokens[b, j] = n
            start += n
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return PackedBatch(
        input_ids, position_ids, segment_ids, as_long(pred_rows), as_long(pred_cols), as_long(targets),
        as_long(slots), n_tokens,
    )


def length_batches(
    lengths: Sequence[int], *, max_tokens_per_batch: int, batch_size: int | None = None
) -> list[list[int]]:
    """Group indices of `lengths` (packed lengths) by length, longest first, under a padded-token budget.

    A batch holds at most `batch_size` examples and rows × longest ≤ `max_tokens_per_batch`
    (an example longer than the budget gets a batch of its own).
    """
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable").tolist()
    batches: list[list[int]] = []
    longest = 0
    for i in order:
        cur = batches[-1] if batches else None
        fits = cur is not None and (len(cur) + 1) * longest <= max_tokens_per_batch
        if fits and (batch_size is None or len(cur) < batch_size):
            cur.append(i)
        else:
            batches.append([i])
            longest = int(lengths[i])
    return batches


def packed_attention_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, T, T] additive mask: causal, prompt visible to all, siblings and padding hidden.

    Padding rows attend to themselves only, so no softmax row is empty.
    """
    width = segment_ids.shape[1]
    q, k = segment_ids[:, :, None], segment_ids[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = causal & (k != PAD_SEGMENT) & (q != PAD_SEGMENT) & ((k == PROMPT_SEGMENT) | (k == q))
    allowed |= torch.eye(width, dtype=torch.bool, device=segment_ids.device)
    return _additive(allowed, dtype)


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, Q, K] booleans -> [B, 1, Q, K] additive mask (0 where allowed, dtype's minimum elsewhere)."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def packed_block_mask(segment_ids: torch.Tensor):
    """The packed mask as a flex-attention `BlockMask` (same rule as `packed_attention_mask`): it keeps
    which 128 x 128 blocks are empty, full or partial, and the kernel evaluates the rule per element
    inside partial blocks, so no L x L float mask is held while the model runs. On CUDA the block
    mask is built by a compiled kernel (nothing L x L at all); on CPU its construction passes
    through a transient L x L boolean per sequence (a quarter of an fp32 mask, freed before the forward)."""
    from torch.nn.attention.flex_attention import create_block_mask

    seg = segment_ids

    def allowed(b, h, q, kv):
        sq, sk = seg[b, q], seg[b, kv]
        visible = (q >= kv) & (sq != PAD_SEGMENT) & (sk != PAD_SEGMENT) & ((sk == PROMPT_SEGMENT) | (sk == sq))
        return visible | (q == kv)

    rows, width = seg.shape
    return create_block_mask(allowed, rows, None, width, width, device=seg.device, _compile=seg.is_cuda)


def _prompt_cache_usable(core: torch.nn.Module, config) -> bool:
    """True when the two-pass forward applies: no gradients, no sliding-window layers, and no
    activation checkpointing in training mode (it drops the cache)."""
    if torch.is_grad_enabled() or any(t != "full_attention" for t in getattr(config, "layer_types", None) or ()):
        return False
    if config._attn_implementation == "flex_attention":
        return False
    return not (core.training and getattr(core, "is_activation_checkpointing", False))


def _prompt_cached_hidden(model: torch.nn.Module, batch: PackedBatch, captured: list[torch.Tensor], dtype: torch.dtype
                          ) -> torch.Tensor:
    """Hidden states at (`pred_rows`, `pred_cols`) from a prompt pass, then a response pass on its cache.

    Pass 1 runs columns [0, longest prompt) with no mask, so every position sees all earlier ones:
    exact for prompt tokens and for first-response tokens (which may see the prompt and
    themselves), so a row keeps pass 1 up to the end of its prompt or first response, whichever
    that width reaches first (its `split`). Pass 2 runs each row's columns from `split` on,
    shifted to column 0; a token there sees the cached keys of its row before `split` that are
    prompt or its own response, and earlier pass-2 tokens of its own response. The padded work
    is then the packed batch's own unless a row's prompt and first response both end early.
    """
    seg = batch.segment_ids
    device = seg.device
    prompt_len = (seg == PROMPT_SEGMENT).sum(1)
    packed_len = (seg != PAD_SEGMENT).sum(1)
    p_max = int(prompt_len.max())
    split = (prompt_len + (seg == PROMPT_SEGMENT + 1).sum(1)).clamp(max=p_max)
    width = int((packed_len - split).max())
    out = model(input_ids=batch.input_ids[:, :p_max], position_ids=batch.position_ids[:, :p_max],
                use_cache=True, logits_to_keep=1)
    cols = split[:, None] + torch.arange(width, device=device)
    real = cols < packed_len[:, None]
    cols = cols.clamp(max=seg.shape[1] - 1)
    q = torch.where(real, seg.gather(1, cols), PAD_SEGMENT)
    cached = torch.where(torch.arange(p_max, device=device) < split[:, None], seg[:, :p_max], PAD_SEGMENT)
    k = torch.cat([cached, q], dim=1)[:, None, :]
    q = q[:, :, None]
    order = torch.ones(width, p_max + width, dtype=torch.bool, device=device).tril(diagonal=p_max)
    allowed = order & (q != PAD_SEGMENT) & (k != PAD_SEGMENT) & ((k == PROMPT_SEGMENT) | (k == q))
    allowed[:, :, p_max:] |= torch.eye(width, dtype=torch.bool, device=device)
    model(input_ids=batch.input_ids.gather(1, cols), position_ids=batch.position_ids.gather(1, cols),
          attention_mask=_additive(allowed, dtype), **with_cache(output_cache(out)), use_cache=True,
          logits_to_keep=1)
    hidden = torch.cat(captured[-2:], dim=1)
    rows, pred_cols = batch.pred_rows, batch.pred_cols
    row_split = split[rows]
    return hidden[rows, torch.where(pred_cols < row_split, pred_cols, pred_cols - row_split + p_max)]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """Strip DistributedDataParallel-style `.module` wrappers."""
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model


def _token_logprobs(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, config) -> torch.Tensor:
    logits = head(hidden).float()
    if getattr(config, "logit_scale", None) is not None:
        logits = logits * config.logit_scale
    if getattr(config, "logits_scaling", None) is not None:
        logits = logits / config.logits_scaling
    if getattr(config, "final_logit_softcapping", None) is not None:
        cap = config.final_logit_softcapping
        logits = torch.tanh(logits / cap) * cap
    return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def packed_logprobs(
    model: torch.nn.Module, batch: PackedBatch, *, chunk_size: int | None = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs `[B, R]` (fp32, differentiable) and token counts `[B, R]`.

    The forward goes through `model` itself (so DDP/PEFT wrappers see it) with `logits_to_keep=1`;
    the decoder's last hidden state is captured with a hook and fed to the LM head `chunk_size`
    rows at a time, each chunk recomputed in the backward pass, so the `[positions, vocab]` logits
    never exist whole; `chunk_size=None` runs the head in one piece, kept for backward. Without
    gradients the prompts are encoded in a pass of their own (see the module docstring). Padded
    response slots have sum 0 and count 0.
    """
    core = unwrap(model)
    config = core.config.get_text_config()
    if config._attn_implementation not in MASK_ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"packed scoring needs attn_implementation in {MASK_ATTN_IMPLEMENTATIONS}, "
            f"got {config._attn_implementation!r}"
        )
    decoder, head = core.get_decoder(), core.get_output_embeddings()
    dtype = core.get_input_embeddings().weight.dtype
    captured: list[torch.Tensor] = []
    hook = decoder.register_forward_hook(lambda _m, _args, out: captured.append(out[0]))
    try:
        if _prompt_cache_usable(core, config):
            hidden = _prompt_cached_hidden(model, batch, captured, dtype)
        else:
            flex = config._attn_implementation == "flex_attention"
            model(
                input_ids=batch.input_ids,
                attention_mask=packed_block_mask(batch.segment_ids) if flex else
                packed_attention_mask(batch.segment_ids, dtype),
                position_ids=batch.position_ids,
                use_cache=False,
                logits_to_keep=1,
            )
            hidden = captured[-1][batch.pred_rows, batch.pred_cols]
    finally:
        hook.remove()
    recompute = torch.is_grad_enabled() and hidden.requires_grad and chunk_size is not None
    chunk_size = chunk_size or max(1, hidden.shape[0])
    parts = []
    for start in range(0, hidden.shape[0], chunk_size):
        h, t = hidden[start : start + chunk_size], batch.targets[start : start + chunk_size]
        if recompute:
            parts.append(checkpoint(_token_logprobs, head, h, t, config, use_reentrant=False))
        else:
            parts.append(_token_logprobs(head, h, t, config))
    token_logp = torch.cat(parts)
    rows, n_resp = batch.n_tokens.shape
    sums = token_logp.new_zeros(rows * n_resp).index_add(0, batch.slots, token_logp)
    return sums.view(rows, n_resp), batch.n_tokens
