"""Expected values computed without the engine: one ordinary forward per (prompt, response), over token
ids built by hand from the tokenizer (its own BOS convention for the prompt, the response without
special tokens, then EOS). Nothing here packs, caches, shares prompts or reads a token store."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from personalign.records.io import read_examples
from personalign.views.build import ViewConfig, build_view


def plain_logp(model, tok, prompt: str, response: str) -> tuple[float, int]:
    """(sum of log p(response tokens | prompt), number of response tokens incl. EOS) from one forward."""
    p = tok(prompt)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logits = model(torch.tensor([p + r])).logits[0].float().log_softmax(-1)
    return sum(logits[len(p) - 1 + i, t].item() for i, t in enumerate(r)), len(r)


@dataclass(frozen=True)
class PlainScores:
    logp: list[float]
    avg_logp: list[float]
    n_tokens: list[int]


def plain_scores(model, tok, data: Path, view: ViewConfig) -> list[PlainScores]:
    """Per record of `data` (JSONL), the scores of its responses under the prompt `view` renders for it
    (the record's position seeds any history sampling, as everywhere in the engine)."""
    out = []
    for i, ex in enumerate(read_examples(data)):
        prompt = build_view(ex, view, tok, i).prompt
        scored = [plain_logp(model, tok, prompt, r) for r in ex.responses]
        out.append(PlainScores([s for s, _ in scored], [s / n for s, n in scored], [n for _, n in scored]))
    return out


def agreement_slack(margins: list[float], eps: float = 1e-4) -> int:
    """How many decisions lie within `eps` of a tie: packed and plain forwards differ by float rounding
    (~1e-5 on these tiny models), so only those can come out differently; accuracies compared between
    the engine and this module may differ by that many records, no more."""
    return sum(abs(m) < eps for m in margins)
