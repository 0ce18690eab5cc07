"""What differs between the transformers releases personalign runs on (pyproject: transformers>=5.0).

The KV cache's name: a model's forward takes it and its output returns it as `cache` in recent
releases and as `past_key_values` before (5.17, the GPU machine's image, still says
`past_key_values`)."""
from __future__ import annotations

from typing import Any

from transformers.modeling_outputs import CausalLMOutputWithPast

CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def with_cache(cache: Any) -> dict[str, Any]:
    """The forward keyword argument that passes `cache`, under this release's name."""
    return {CACHE: cache}


def output_cache(out: Any) -> Any:
    """The cache a forward returned."""
    return getattr(out, CACHE)
