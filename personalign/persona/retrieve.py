"""Retrieved personas (docs/fidelity.md, "Persona Inference"): each test record borrows the personas of the training record
whose prompt is most similar (all-MiniLM-L6-v2 sentence embeddings, cosine similarity).

A training record identical to the test record (same prompt, chosen and rejected) is never
used, so retrieving from a set that overlaps the test set does not leak the record's own persona.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from personalign.models.embeddings import embed, load_encoder
from personalign.records.io import Source, read_examples, write_examples
from personalign.records.schema import PERSONA_SOURCE_FIELDS, Example

RETRIEVED = {"chosen": PERSONA_SOURCE_FIELDS["retrieved"][0], "rejected": PERSONA_SOURCE_FIELDS["retrieved_rejected"][0]}


def nearest(queries: np.ndarray, keys: np.ndarray, excluded: Sequence[set[int]], chunk: int = 1024) -> np.ndarray:
    """Per query row, the index of the most similar key row (dot product; ties -> lowest index)
    outside `excluded[i]`; -1 when every key is excluded."""
    out = np.full(len(queries), -1, dtype=np.int64)
    for start in range(0, len(queries), chunk):
        sims = queries[start:start + chunk] @ keys.T
        for i, row in enumerate(sims, start):
            if excluded[i]:
                row[list(excluded[i])] = -np.inf
            best = int(np.argmax(row))
            if np.isfinite(row[best]):
                out[i] = best
    return out


@dataclass(slots=True)
class RetrieveStats:
    """Test records written and how many got a persona; training records usable as sources
    (those with a chosen or gold persona) and their distinct prompts; test records whose
    identical twin in the training set was skipped."""

    records: int = 0
    retrieved: int = 0
    train_records: int = 0
    train_prompts: int = 0
    excluded_self: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def retrieve_personas(
    train_source: Source,
    test_source: Source,
    out: str | os.PathLike,
    *,
    model_path: str | os.PathLike | None = None,
    batch_size: int = 64,
    encoder=None,
) -> RetrieveStats:
    """Write `test_source` to `out` with `retrieved_chosen_persona` / `retrieved_rejected_persona`
    taken from a training record of the most similar training prompt (its chosen persona, else
    its gold one, and its rejected persona when it has one). Among records sharing that prompt
    the first in file order that is not identical to the test record is used."""
    members: dict[str, list[tuple[tuple[str, str], str, str | None]]] = {}
    n_train = 0
    for ex in read_examples(train_source):
        chosen = ex.user.persona("chosen")
        if chosen:
            members.setdefault(ex.prompt, []).append(((ex.chosen, ex.rejected), chosen, ex.user.persona("rejected")))
            n_train += 1
    if not members:
        raise ValueError(f"{os.fspath(train_source)}: no training record has a chosen (or gold) persona to retrieve")
    test = list(read_examples(test_source))
    encoder = encoder if encoder is not None else load_encoder(model_path)
    train_prompts = list(members)
    keys = embed(encoder, train_prompts, batch_size)
    test_prompts = list(dict.fromkeys(ex.prompt for ex in test))
    query_row = {p: i for i, p in enumerate(test_prompts)}
    queries = embed(encoder, test_prompts, batch_size)[[query_row[ex.prompt] for ex in test]]
    row_of = {p: k for k, p in enumerate(train_prompts)}

    def candidates(ex: Example, prompt: str) -> list:
        return [m for m in members[prompt] if not (prompt == ex.prompt and m[0] == (ex.chosen, ex.rejected))]

    excluded = [{row_of[ex.prompt]} if ex.prompt in row_of and not candidates(ex, ex.prompt) else set() for ex in test]
    best = nearest(queries, keys, excluded)
    stats = RetrieveStats(records=len(test), train_records=n_train, train_prompts=len(train_prompts))
    for ex, k in zip(test, best):
        own = members.get(ex.prompt, ())
        stats.excluded_self += any(m[0] == (ex.chosen, ex.rejected) for m in own)
        if k < 0:
            continue
        _, chosen, rejected = candidates(ex, train_prompts[k])[0]
        ex.user.personas[RETRIEVED["chosen"]] = chosen
        if rejected:
            ex.user.personas[RETRIEVED["rejected"]] = rejected
        stats.retrieved += 1
    write_examples(test, out)
    return stats
