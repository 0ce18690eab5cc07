"""Features: the cache is keyed and reused, texts are deduplicated, and 2 processes share the work
and get the same table as one process."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from procs import retry_on_port_conflict, run

from personalign.curate.synth import synth_records
from personalign.models.embeddings import embed, load_encoder
from personalign.records.io import write_jsonl
from personalign.users import features as features_module
from personalign.users.features import FeatureSpec
from personalign.users.population import load_population

WORKER = Path(__file__).with_name("features_worker.py")


def test_features_are_a_plain_encode_of_each_unique_text_and_cached(tmp_path, monkeypatch):
    rows = [{"prompt": "q", "chosen": "Short.", "rejected": "A much longer answer, with detail.", "user_id": "a"},
            {"prompt": "q2", "chosen": "Short.", "rejected": "Another one.", "user_id": "b"}]
    write_jsonl(rows, tmp_path / "d.jsonl")
    pop = load_population(tmp_path / "d.jsonl", FeatureSpec(), progress=False)
    assert pop.features.shape == (3, 384)  # "Short." once
    plain = embed(load_encoder(), ["Short.", "A much longer answer, with detail.", "Another one."])
    np.testing.assert_allclose(np.asarray(pop.features), plain, atol=1e-5)
    monkeypatch.setattr(features_module, "Featurizer", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = load_population(tmp_path / "d.jsonl", FeatureSpec(), progress=False)  # read from the cache
    np.testing.assert_array_equal(np.asarray(again.features), np.asarray(pop.features))


@pytest.mark.duration(15)
def test_two_processes_share_the_texts_and_match_one(tmp_path):
    write_jsonl(synth_records(6, seed=3), tmp_path / "d.jsonl")
    one = np.asarray(load_population(tmp_path / "d.jsonl", FeatureSpec(batch_size=8), progress=False).features)
    (tmp_path / "two").mkdir()
    write_jsonl(synth_records(6, seed=3), tmp_path / "two" / "d.jsonl")  # same content, a fresh cache beside it
    proc = retry_on_port_conflict(lambda port: run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         str(WORKER), str(tmp_path / "two" / "d.jsonl"), str(tmp_path / "two")],
        env={**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}, timeout=300))
    err = proc.stderr
    assert proc.returncode == 0, err[-3000:]
    for rank in (0, 1):
        np.testing.assert_allclose(np.load(tmp_path / "two" / f"rank-{rank}.npy"), one, atol=1e-5)
    assert not list((tmp_path / "two").rglob("part-*.npy"))  # the parts were merged and removed
