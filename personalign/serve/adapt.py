"""A user model in the server (`personalign serve --user-model DIR`, docs/user-models.md): each
user's state lives in the memory database and is refitted from the user's latest pairs on every new
pair, before the feedback reply; comments refit it too (the shared part is frozen, so a refit is one encoder call for the
new texts and a few hundred small optimizer steps at most). `/v1/rewards` scores responses under a
user's state (the population state for users with no pairs); `--rerank N` answers a chat with the
best of N samples under it; `--directions DIR` gives each new pair its inferred direction vector.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from personalign.errors import ModelError
from personalign.users.features import Featurizer
from personalign.users.model_dir import CONFIG_FILE, WEIGHTS_FILE, load_user_model
from personalign.users.representations import UserTexts

MAX_REFIT_PAIRS = 64  # a state is fitted on the user's latest pairs, at most this many
FEATURE_CACHE = 4096  # texts whose features are kept in memory


def model_key(directory: str | Path) -> str:
    """A short digest of the user model's files: states are stored under it."""
    h = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        path = Path(directory) / name
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


class OnlineUsers:
    """The loaded user model, its encoder, an optional direction head, and the memory store."""

    def __init__(self, model_dir: str | Path, store: Any, *, directions: str | Path | None = None,
                 max_pairs: int = MAX_REFIT_PAIRS):
        self.model, self.spec, self.config = load_user_model(model_dir, option="--user-model")
        self.key = model_key(model_dir)
        self.store, self.max_pairs = store, max_pairs
        self.featurizer = Featurizer(self.spec)
        if self.featurizer.dim != self.model.dim:
            raise ModelError(f"its encoder gives features of dimension {self.featurizer.dim}, the model expects "
                             f"{self.model.dim}", file=model_dir, option="--user-model")
        self.head = None
        if directions is not None:
            from personalign.users.directions import load_directions

            self.head, spec = load_directions(directions)
            if spec != self.spec:
                raise ModelError("the direction model was trained on other features than the user model",
                                 file=directions, option="--directions")
        self._lock = threading.Lock()  # one encoder call at a time
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        with torch.enable_grad():
            self.population = self.model.adapt(*(torch.zeros(1, 0, self.model.dim),) * 2,
                                               torch.zeros(1, 0, dtype=torch.bool))[0].detach()

    @property
    def representation(self) -> str:
        return self.config["representation"]

    def features(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """φ of each (prompt, response), [n, d], from the in-memory cache or one encoder call."""
        if not responses:
            return torch.zeros(0, self.model.dim)
        keys = [(p if self.spec.encoder == "causal-lm" else "", r) for p, r in zip(prompts, responses)]
        with self._lock:
            todo = [k for k in dict.fromkeys(keys) if k not in self._cache]
            if todo:
                for k, v in zip(todo, self.featurizer.encode([k[0] for k in todo], [k[1] for k in todo])):
                    self._cache[k] = v
                while len(self._cache) > FEATURE_CACHE:
                    self._cache.popitem(last=False)
            rows = [self._cache[k] for k in keys]
            for k in keys:
                self._cache.move_to_end(k)
        return torch.from_numpy(np.stack(rows).astype(np.float32))

    def direction(self, prompt: str, chosen: str, rejected: str) -> list[float] | None:
        """The inferred direction vector of a pair (None without a direction model)."""
        if self.head is None:
            return None
        f = self.features([prompt, prompt], [chosen, rejected])
        return self.head.predict(f[:1], f[1:])[0].tolist()

    def refit(self, user_id: str) -> dict[str, Any]:
        """Fit the user's state on its latest pairs (and its comments and demographic text) and store it;
        {"pairs", "ms", "stored"}."""
        t0 = time.perf_counter()
        born = self.store.user_created(user_id)  # the state is stored only for this same user
        user = self.store.user_context(user_id)
        pairs = user.pairs[-self.max_pairs:] if user is not None else []
        texts = ([(c.prompt, c.comment, 0) for c in user.ugc[-self.max_pairs:]]
                 + ([("", user.demographic, 1)] if user.demographic else [])) if user is not None else []
        f = self.features([p.prompt for p in pairs] * 2 + [t[0] for t in texts],
                          [p.chosen for p in pairs] + [p.rejected for p in pairs] + [t[1] for t in texts])
        n = len(pairs)
        own = UserTexts(f[2 * n:].unsqueeze(0), torch.tensor([[t[2] for t in texts]], dtype=torch.long).reshape(1, -1),
                        torch.ones(1, len(texts), dtype=torch.bool))
        with torch.enable_grad():
            state = self.model.adapt(f[:n].unsqueeze(0), f[n:2 * n].unsqueeze(0), torch.ones(1, n, dtype=torch.bool),
                                     own)[0].detach()
        stored = born is not None and self.store.set_state(user_id, self.key, state.tolist(), n, while_created=born)
        return {"pairs": n, "ms": round(1000 * (time.perf_counter() - t0), 2), "stored": stored}

    def state(self, user_id: str | None) -> tuple[torch.Tensor, int]:
        """(the user's stored state, pairs it was fitted on), or the population state and 0."""
        found = self.store.get_state(user_id, self.key) if user_id is not None else None
        if found is None:
            return self.population, 0
        return torch.tensor(found[0], dtype=torch.float32), found[1]

    def rewards(self, user_id: str | None, prompt: str, responses: list[str]) -> tuple[list[float], int]:
        """r_u of each response to `prompt` under the user's state; (rewards, pairs the state was fitted on)."""
        state, pairs = self.state(user_id)
        f = self.features([prompt] * len(responses), responses)
        with torch.no_grad():
            return self.model.reward(state.unsqueeze(0), f.unsqueeze(0))[0].tolist(), pairs
