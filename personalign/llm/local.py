"""Local transformers backend: batched, left-padded generation on one in-process model.

Requests are rendered (chat conversations through the tokenizer's chat template with a
generation prompt; raw strings as they are), sorted by token length into batches so that little
padding is wasted, and returned in input order. Decoding is a short KV-cached loop:

* position ids come from the attention mask, so left padding changes nothing: batched greedy
  gives the tokens of one request at a time;
* a token prefix shared by the whole batch (chat template, instructions, few-shot examples) is
  encoded once and its cache copied to every row; each row's own part follows after padding;
* a row leaves the batch and its cache as soon as it has produced EOS or a stop string, so a
  batch costs the tokens it generates, not batch size x its longest answer (`model.generate`
  keeps finished rows computing until the last one ends);
* a batch is a `Decoding` that advances one step per call, so a server can interleave batches
  (iteration-level scheduling): a short chat need not wait for a long answer to end.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from personalign.llm.base import BackendConfig, GenerationConfig, Request
from personalign.llm.progress import progress_bar
from personalign.models.compat import with_cache
from personalign.models.loading import load_model, model_fingerprint
from personalign.records.tokens import prompts_ids

MIN_SHARED_PREFIX = 8  # shorter shared prefixes are encoded with the rest of each prompt


@dataclass(frozen=True, slots=True)
class Completion:
    """One generated text with its token counts; `finish_reason` is "stop" (EOS or a stop string) or "length"."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest occurrence of any stop string, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


class LocalBackend:
    """Generates with a transformers causal LM in this process, `batch_size` requests at a time."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 8,
        *,
        name: str | None = None,
    ):
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs a pad token (load it with personalign.models.load_tokenizer)")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.name = name
        self._identity: str | None = None
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    @classmethod
    def from_config(cls, cfg: BackendConfig, *, device: str = "cpu") -> LocalBackend:
        """Load `cfg.model` (None = the embedded default) as `cfg`'s model settings say, with `cfg.batch_size`."""
        if cfg.kind != "local":
            raise ValueError(f"LocalBackend needs kind='local', got {cfg.kind!r}")
        model, tokenizer = load_model(cfg.model, device=device, **cfg.load_kwargs())
        return cls(model, tokenizer, cfg.batch_size, name=cfg.model)

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = f"local:{model_fingerprint(self.model)}"
        return self._identity

    def render(self, request: Request) -> str:
        """The prompt text of a request: a chat through the chat template, a raw string as is. A chat
        ending with an assistant message is that reply to be continued (vLLM's `continue_final_message`)."""
        if isinstance(request, str):
            return request
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("chat requests need a tokenizer with a chat template; send raw strings instead")
        if request and request[-1]["role"] == "assistant":
            return self.tokenizer.apply_chat_template(list(request), tokenize=False, continue_final_message=True)
        return self.tokenizer.apply_chat_template(list(request), tokenize=False, add_generation_prompt=True)

    def generate(self, requests: Sequence[Request], config: GenerationConfig, *, progress: bool = True) -> list[str]:
        return [c.text for c in self.complete(requests, config, progress=progress)]

    def complete(
        self, requests: Sequence[Request], config: GenerationConfig, *, progress: bool = False,
        on_tokens: Callable[[int, list[int]], bool] | None = None,
    ) -> list[Completion]:
        """Generate for every request; results in input order, with token counts and finish reasons.

        `on_tokens(i, tokens)` is called with request `i`'s tokens so far after each decoding step (a
        server streams them); when it returns False that request stops there (its client went away)."""
        if not requests:
            return []
        results: list[Completion | None] = [None] * len(requests)
        generator = torch.Generator(self.model.device).manual_seed(config.seed)  # one stream, batch after batch
        with progress_bar(progress, len(requests)) as bar:
            task = bar.add_task("generating", total=len(requests))
            for indices, decoding in self.decodings(requests, config, on_tokens, generator=generator):
                while decoding.step():
                    pass
                for i, completion in zip(indices, decoding.completions()):
                    results[i] = completion
                bar.advance(task, len(indices))
        return results  # type: ignore[return-value]

    def decodings(
        self, requests: Sequence[Request], config: GenerationConfig,
        on_tokens: Callable[[int, list[int]], bool] | None = None, *, generator: torch.Generator | None = None,
    ) -> list[tuple[list[int], Decoding]]:
        """The requests as batches of at most `batch_size`, longest prompts first, each with the request
        indices it holds; nothing is computed before a batch's first `step()`. Every batch samples from its
        own generator seeded with `config.seed`, unless one `generator` is shared (then run them in order)."""
        prompts = [self.render(r) for r in requests]
        ids = prompts_ids(self.tokenizer, prompts)
        if empty := [i for i, row in enumerate(ids) if not row]:
            raise ValueError(f"requests {empty[:5]} have empty prompts; there is nothing to continue from")
        order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))
        batches = []
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            watch = None if on_tokens is None else lambda j, tokens, batch=batch: on_tokens(batch[j], tokens)
            rng = generator or torch.Generator(self.model.device).manual_seed(config.seed)
            batches.append((batch, Decoding(self, [ids[i] for i in batch], config, rng, watch)))
        return batches

    @torch.inference_mode()
    def choice_probs(self, requests: Sequence[Request], choices: Sequence[str]) -> list[list[float] | None]:
        """Per request, the next-token probabilities of each choice's first token, summed over its
        variants with and without a leading space ("1" and " 1"), renormalised over the choices: what
        the model would answer, read without generating (as the OpenAI backend reads top log-probs)."""
        variants = [sorted({self._choice_token(c), self._choice_token(" " + c)}) for c in choices]
        prompts = prompts_ids(self.tokenizer, [self.render(r) for r in requests])
        out: list[list[float] | None] = []
        device = self.model.device
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            enc = self.tokenizer.pad({"input_ids": batch}, padding=True, return_tensors="pt", padding_side="left")
            mask = enc["attention_mask"].to(device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.model(input_ids=enc["input_ids"].to(device), attention_mask=mask, position_ids=positions,
                                use_cache=False).logits[:, -1, :].float()
            p = logits.softmax(-1)
            probs = torch.stack([p[:, ids].sum(-1) for ids in variants], dim=-1)
            out += (probs / probs.sum(-1, keepdim=True)).tolist()
        return out

    def _choice_token(self, choice: str) -> int:
        ids = self.tokenizer(choice, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"choice {choice!r} encodes to no token")
        return ids[0]

    def _forward(self, input_ids, mask, positions, cache, last_only: bool = False) -> torch.Tensor:
        """Logits of the last position of every row, extending `cache`."""
        extra = {"logits_to_keep": 1} if last_only and self._keeps_logits else {}
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            **with_cache(cache),
            use_cache=True,
            **extra,
        )
        return out.logits[:, -1, :]

    def _hits_stop(self, tokens: list[int], stops: list[str]) -> bool:
        """Whether the generated text ends in a stop string; only the last few tokens are decoded."""
        window = max(len(s) for s in stops) + 2  # a token decodes to at least one character
        tail = self.tokenizer.decode(tokens[-window:], skip_special_tokens=True)
        return any(s in tail for s in stops)

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id if self.model.generation_config is not None else None
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids


class Decoding:
    """One left-padded batch decoded a step at a time: the first `step()` encodes the prompts, each
    later one generates a token per row, so a server can interleave the steps of several batches. A
    row leaves the batch (and its cache) as soon as it is done, or as soon as `on_tokens(row, tokens)`
    returns False."""

    def __init__(self, backend: LocalBackend, batch_ids: list[list[int]], config: GenerationConfig,
                 generator: torch.Generator, on_tokens: Callable[[int, list[int]], bool] | None = None):
        self.backend, self.batch_ids, self.config = backend, batch_ids, config
        self.generator, self.on_tokens = generator, on_tokens
        self.tokens: list[list[int]] = [[] for _ in batch_ids]
        self.ended = [False] * len(batch_ids)
        self.rows = list(range(len(batch_ids)))  # batch position -> index in batch_ids
        self.steps = 0
        self.done = False
        self._eos, self._stops = set(backend._eos_ids()), [s for s in config.stop if s]
        self._cache: DynamicCache | None = None
        self._mask = self._positions = self._next = None

    @torch.inference_mode()
    def step(self) -> bool:
        """Encode (first call) or extend by one token, then pick each row's next token; True while rows remain."""
        if self.done:
            return False
        logits = self._prefill() if self._cache is None else self._extend()
        next_ids = _next_tokens(logits, self.config, self.generator)
        keep = []
        for j, (row, token) in enumerate(zip(self.rows, next_ids.tolist())):
            tokens = self.tokens[row]
            tokens.append(token)
            self.ended[row] = token in self._eos or (bool(self._stops) and self.backend._hits_stop(tokens, self._stops))
            watched = self.on_tokens is None or self.on_tokens(row, tokens)
            if not self.ended[row] and watched:
                keep.append(j)
        self.steps += 1
        if not keep or self.steps == self.config.max_new_tokens:
            self.done, self._cache = True, None  # the cache goes now, not when the caller drops this batch
            return False
        if len(keep) < len(self.rows):
            index = torch.tensor(keep, device=next_ids.device)
            self._cache.batch_select_indices(index)
            self._mask, self._positions, next_ids = self._mask[index], self._positions[index], next_ids[index]
            self.rows = [self.rows[j] for j in keep]
        self._next = next_ids
        return True

    def completions(self) -> list[Completion]:
        """Each row's text (cut at a stop string), token counts and finish reason; call once `step()` is False."""
        out = []
        for tokens, prompt_ids, done in zip(self.tokens, self.batch_ids, self.ended):
            text, hit_stop = cut_at_stop(self.backend.tokenizer.decode(tokens, skip_special_tokens=True), self._stops)
            out.append(Completion(text, len(prompt_ids), len(tokens), "stop" if done or hit_stop else "length"))
        return out

    def _prefill(self) -> torch.Tensor:
        """Encode the prompts: a token prefix shared by the whole batch once, its cache copied to every row."""
        backend, batch_ids = self.backend, self.batch_ids
        device = backend.model.device
        self._cache = cache = DynamicCache(config=backend.model.config)
        shared = _common_prefix(batch_ids) if len(batch_ids) > 1 else 0
        if shared >= MIN_SHARED_PREFIX:
            prefix = torch.tensor([batch_ids[0][:shared]], device=device)
            prefix_positions = torch.arange(shared, device=device)[None]
            backend._forward(prefix, torch.ones_like(prefix), prefix_positions, cache, last_only=True)
            cache.batch_repeat_interleave(len(batch_ids))
        else:
            shared = 0
        suffixes = [ids[shared:] for ids in batch_ids]
        enc = backend.tokenizer.pad({"input_ids": suffixes}, padding=True, return_tensors="pt", padding_side="left")
        suffix_mask = enc["attention_mask"].to(device)
        self._positions = (shared + suffix_mask.cumsum(-1) - 1).masked_fill(suffix_mask == 0, 1)
        self._mask = torch.cat([suffix_mask.new_ones(len(batch_ids), shared), suffix_mask], dim=1)
        return backend._forward(enc["input_ids"].to(device), self._mask, self._positions, cache, last_only=True)

    def _extend(self) -> torch.Tensor:
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(self.rows), 1)], dim=1)
        self._positions = self._positions[:, -1:] + 1
        return self.backend._forward(self._next[:, None], self._mask, self._positions, self._cache)


def _common_prefix(seqs: list[list[int]]) -> int:
    """Length of the token prefix all sequences share, leaving every sequence at least one token of its own."""
    first, limit, n = seqs[0], min(len(s) for s in seqs) - 1, 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n


def _next_tokens(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Greedy (temperature 0) or sampling from last-position logits: temperature, then top_k, then
    nucleus (top_p), in transformers' order."""
    if config.temperature == 0:
        return logits.argmax(-1)
    scaled = logits.float() / config.temperature
    if 0 < config.top_k < scaled.shape[-1]:
        kth = scaled.topk(config.top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if config.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        sorted_probs[sorted_probs.cumsum(-1) - sorted_probs > config.top_p] = 0.0  # keeps at least the top token
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
