"""Text-generation backends behind one interface (`personalign.llm.base.Backend`).

`make_backend(BackendConfig(kind="local", model=...))` runs a transformers model in this
process; `kind="openai"` talks to an OpenAI-compatible server (OpenAI, `vllm serve`,
`personalign serve`). The backend modules are imported on demand, so using the HTTP backend
does not import torch.
"""
from __future__ import annotations

from personalign.llm.base import Backend, BackendConfig, GenerationConfig, Message, Request

__all__ = ["Backend", "BackendConfig", "GenerationConfig", "Message", "Request", "check_backend", "make_backend"]


def make_backend(cfg: BackendConfig) -> Backend:
    """Build the backend `cfg` describes (kind='local' loads the model on this process's device: the
    CPU, or under `accelerate launch` on a GPU machine the process's own GPU)."""
    if cfg.kind == "local":
        from personalign.llm.local import LocalBackend
        from personalign.models.loading import process_state

        return LocalBackend.from_config(cfg, device=process_state().device)
    from personalign.llm.openai_http import OpenAIBackend

    return OpenAIBackend.from_config(cfg)


def check_backend(cfg: BackendConfig) -> None:
    """Fail before any work: a local model directory that does not exist, or a server that does not answer."""
    if cfg.kind == "local":
        from personalign.models.loading import check_model_dir

        check_model_dir(cfg.model, option="--model")
    if cfg.kind == "openai":
        from personalign.llm.openai_http import OpenAIBackend

        OpenAIBackend.from_config(cfg).check_reachable()
