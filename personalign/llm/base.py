"""The one small interface every text-generation backend implements."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, Union

from pydantic import Field

from personalign.config import StrictModel
from personalign.models.settings import ModelSettings

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}
Request = Union[str, list[Message]]  # a raw prompt (completions) or a chat conversation


class GenerationConfig(StrictModel):
    """Sampling settings; temperature 0 means greedy decoding. With sampling, logits are divided by
    the temperature, then cut to the `top_k` most likely tokens (0 = no cut), then to the nucleus
    `top_p`, in that order (as transformers' `generate` does). AlignX's generation scripts sample
    with temperature 0.9, top_k 10, top_p 0.95 (`SAMPLING_PRESETS["alignx"]`)."""

    max_new_tokens: int = Field(128, gt=0)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    stop: list[str] = Field(default_factory=list)
    seed: int = 0


# Named sampling settings of the source papers' generation scripts.
SAMPLING_PRESETS: dict[str, dict[str, float | int]] = {
    "greedy": {"temperature": 0.0, "top_k": 0, "top_p": 1.0},
    "alignx": {"temperature": 0.9, "top_k": 10, "top_p": 0.95, "max_new_tokens": 512},  # AlignX eval/gen_*.py
}


BackendKind = Literal["local", "openai"]


class BackendConfig(ModelSettings):
    """Which backend to build: a local transformers model (loaded as `ModelSettings` say) or an
    OpenAI-compatible server."""

    kind: BackendKind = "local"
    model: str | None = None  # local: model dir/name (None = embedded default); openai: the served model name
    base_url: str | list[str] | None = None  # openai: e.g. http://127.0.0.1:8000/v1 (vLLM), or a list of servers; default https://api.openai.com/v1
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the environment variable holding the key, never the key
    endpoint: Literal["chat", "completions"] = "chat"
    concurrency: int = Field(8, gt=0)
    batch_size: int = Field(8, gt=0)
    max_retries: int = Field(6, ge=0)
    timeout: float = Field(120.0, gt=0)

    @property
    def requests_per_write(self) -> int:
        """Requests per generation-cache write: one batch locally; four rounds of concurrent calls to a server."""
        return self.batch_size if self.kind == "local" else 4 * self.concurrency


class Backend(Protocol):
    """Generates one text per request, in request order."""

    @property
    def identity(self) -> str:
        """A stable name of the model behind the backend (used in cache keys)."""
        ...

    def generate(self, requests: Sequence[Request], config: GenerationConfig, *, progress: bool = True) -> list[str]:
        ...
