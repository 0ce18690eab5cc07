"""Users and their preference pairs, read from records, with their features (docs/user-models.md).

Records group by `user_id` when they carry one: the user's pairs are its records' target pairs in
file order, the first k the shots and the rest the test. A record without `user_id` is one user:
its history pairs (`Pair-wise Comparative Feedback`) are the shot pool (the first k are the shots)
and its target pair the test. Ranking records give their best and worst response as the pair.
A user's own texts (its comments and demographic text; for a `user_id` group, those of its first
record) are kept beside its pairs for the representations that read them (`latent`).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from personalign.errors import EmptyError, UserError
from personalign.files import data_digest
from personalign.records.io import ReadCounts, read_examples
from personalign.records.schema import Example
from personalign.users.features import FeatureSpec, Featurizer, TextTable, cached_features

USER_ID = "user_id"


@dataclass(slots=True)
class UserPairs:
    """One user's pairs as rows of the feature table, oldest first. `n_history` is set for a
    record-as-user (pairs[:n_history] are its history, the last its target) and None for a
    `user_id` group."""

    user: str
    chosen: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    slice: str = "none"
    n_history: int | None = None
    texts: list[int] = field(default_factory=list)  # the user's own texts (comments, demographic) as rows
    text_kinds: list[int] = field(default_factory=list)  # their kind ids (`TEXT_KINDS`)

    def split(self, shots: int) -> tuple[list[int], list[int]] | None:
        """(shot pair indices, test pair indices), or None when the user has fewer than `shots` shots or no test."""
        n = len(self.chosen)
        if self.n_history is not None:
            return (list(range(shots)), [n - 1]) if shots <= self.n_history else None
        return (list(range(shots)), list(range(shots, n))) if shots < n else None


@dataclass
class Population:
    """Users, their pairs and the feature table their rows index."""

    users: list[UserPairs]
    features: np.ndarray
    source: str
    digest: str
    counts: ReadCounts

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def pair_features(self, user: UserPairs, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """φ(y_w), φ(y_l) of the user's pairs `idx`: two [len(idx), d] arrays."""
        return (np.asarray(self.features[[user.chosen[i] for i in idx]], np.float32),
                np.asarray(self.features[[user.rejected[i] for i in idx]], np.float32))

    def text_features(self, user: UserPairs) -> np.ndarray:
        """φ of the user's own texts: [len(user.texts), d]."""
        return np.asarray(self.features[user.texts], np.float32)


def _pair(ex: Example) -> tuple[str, str]:
    if len(ex.responses) < 2:
        raise UserError("a record without a pair: a user model needs a chosen and a rejected response",
                        file=ex.source.rpartition(":")[0] or ex.source,
                        line=int(ex.source.rpartition(":")[2]) if ex.source.rpartition(":")[2].isdigit() else None,
                        field="chosen/rejected")
    return ex.chosen, ex.rejected


def add_texts(user: UserPairs, ex: Example, table: TextTable) -> None:
    """The record's comments and demographic text as the user's own texts."""
    for c in ex.user.ugc:
        user.texts.append(table.add(c.prompt, c.comment))
        user.text_kinds.append(0)
    if ex.user.demographic:
        user.texts.append(table.add("", ex.user.demographic))
        user.text_kinds.append(1)


def group_users(examples: Iterator[Example], table: TextTable) -> list[UserPairs]:
    """Users from validated records (see the module docstring), their texts added to `table`."""
    grouped: dict[str, UserPairs] = {}
    users: list[UserPairs] = []
    for n, ex in enumerate(examples):
        chosen, rejected = _pair(ex)
        uid = ex.extra.get(USER_ID)
        if uid is None:
            user = UserPairs(user=f"record-{n}", slice=ex.user.slice, n_history=len(ex.user.pairs))
            add_texts(user, ex, table)
            for p in ex.user.pairs:
                user.chosen.append(table.add(p.prompt, p.chosen))
                user.rejected.append(table.add(p.prompt, p.rejected))
            users.append(user)
        else:
            user = grouped.get(str(uid))
            if user is None:
                user = grouped[str(uid)] = UserPairs(user=str(uid), slice=ex.user.slice)
                add_texts(user, ex, table)
                users.append(user)
        user.chosen.append(table.add(ex.prompt, chosen))
        user.rejected.append(table.add(ex.prompt, rejected))
    return users


def load_population(data: str | os.PathLike, spec: FeatureSpec, *, limit: int | None = None,
                    on_invalid: str = "fail", progress: bool = True,
                    featurizer: Featurizer | None = None) -> Population:
    """Read `data`, group its users and compute (or read cached) features of every response."""
    counts = ReadCounts()
    table = TextTable(with_prompt=spec.encoder == "causal-lm")
    examples = read_examples(data, on_invalid=on_invalid, counts=counts)
    if limit is not None:
        examples = (ex for i, ex in zip(range(limit), examples))
    users = group_users(examples, table)
    if not users:
        raise EmptyError("no valid records to build users from", file=data)
    digest = data_digest(data) + (f":limit={limit}" if limit is not None else "")
    features = cached_features(data, digest, spec, table, progress=progress, featurizer=featurizer)
    return Population(users, features, str(data), digest, counts)
