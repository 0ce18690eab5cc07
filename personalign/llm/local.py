"""Local transformers backend: batched, left-padded generation on one in-process model.

Requests are rendered (chat conversations through the tokenizer's chat template with a
generation prompt; raw strings as they are), sorted by token length into batches so that little
padding is wasted, generated, and returned in input order. Left padding plus the attention mask
lets `generate` derive per-row position ids, so batched greedy decoding gives the same tokens as
one request at a time.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from personalign.llm.base import BackendConfig, GenerationConfig, Request
from personalign.models.loading import load_model, model_fingerprint


@dataclass(frozen=True, slots=True)
class Completion:
    """One generated text with its token counts; `finish_reason` is "stop" (EOS or a stop string) or "length"."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class StopOnStrings(StoppingCriteria):
    """Marks a row finished once its generated text (after `prompt_length` tokens) contains a stop string.

    Only the last few tokens are decoded at each step, so the check costs little whatever the
    vocabulary size (transformers' own `stop_strings` preprocesses the whole vocabulary per call).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: Sequence[str], prompt_length: int):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_length = prompt_length
        self.window = max(len(s) for s in self.stops) + 2  # a token decodes to at least one character

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        start = max(self.prompt_length, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        done = [any(s in tail for s in self.stops) for tail in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


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

    @classmethod
    def from_config(cls, cfg: BackendConfig, *, dtype: str = "float32", device: str = "cpu") -> LocalBackend:
        """Load `cfg.model` (None = the embedded default) with `cfg.batch_size`."""
        if cfg.kind != "local":
            raise ValueError(f"LocalBackend needs kind='local', got {cfg.kind!r}")
        model, tokenizer = load_model(cfg.model, dtype=dtype, device=device)
        return cls(model, tokenizer, cfg.batch_size, name=cfg.model)

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = f"local:{model_fingerprint(self.model)}"
        return self._identity

    def render(self, request: Request) -> str:
        """The prompt text of a request: a chat through the chat template, a raw string as is."""
        if isinstance(request, str):
            return request
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("chat requests need a tokenizer with a chat template; send raw strings instead")
        return self.tokenizer.apply_chat_template(list(request), tokenize=False, add_generation_prompt=True)

    def generate(self, requests: Sequence[Request], config: GenerationConfig, *, progress: bool = True) -> list[str]:
        return [c.text for c in self.complete(requests, config, progress=progress)]

    def complete(
        self, requests: Sequence[Request], config: GenerationConfig, *, progress: bool = False
    ) -> list[Completion]:
        """Generate for every request; results in input order, with token counts and finish reasons."""
        prompts = [self.render(r) for r in requests]
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))
        results: list[Completion | None] = [None] * len(prompts)
        device = self.model.device
        with (
            _progress(progress, len(prompts)) as bar,
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        ):
            torch.manual_seed(config.seed)
            task = bar.add_task("generating", total=len(prompts))
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                for i, completion in zip(batch, self._generate_batch([ids[i] for i in batch], config)):
                    results[i] = completion
                bar.advance(task, len(batch))
        return results  # type: ignore[return-value]

    def _generate_batch(self, batch_ids: list[list[int]], config: GenerationConfig) -> list[Completion]:
        tok = self.tokenizer
        enc = tok.pad({"input_ids": batch_ids}, padding=True, return_tensors="pt", padding_side="left")
        width = enc["input_ids"].shape[1]
        eos = self._eos_ids()
        kwargs: dict = {"max_new_tokens": config.max_new_tokens, "pad_token_id": tok.pad_token_id, "eos_token_id": eos}
        if config.temperature > 0:
            kwargs.update(do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if any(config.stop):
            kwargs["stopping_criteria"] = StoppingCriteriaList([StopOnStrings(tok, config.stop, width)])
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=enc["input_ids"].to(self.model.device),
                attention_mask=enc["attention_mask"].to(self.model.device),
                **kwargs,
            )
        completions = []
        for row, prompt_ids in zip(out[:, width:].tolist(), batch_ids):
            n, hit_eos = _generated_length(row, eos, tok.pad_token_id)
            text, hit_stop = cut_at_stop(tok.decode(row[:n], skip_special_tokens=True), config.stop)
            finish = "stop" if hit_eos or hit_stop else "length"
            completions.append(Completion(text, len(prompt_ids), n, finish))
        return completions

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id if self.model.generation_config is not None else None
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids


def _generated_length(row: list[int], eos: list[int], pad: int) -> tuple[int, bool]:
    """Tokens generated for one row (through its first EOS, else without trailing padding), and whether EOS ended it."""
    for i, token in enumerate(row):
        if token in eos:
            return i + 1, True
    n = len(row)
    while n and row[n - 1] == pad:
        n -= 1
    return n, False


def _progress(enabled: bool, total: int) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not enabled or total == 0,
    )
