"""The request bodies the server accepts: OpenAI's chat and completion requests (unknown OpenAI fields
accepted and ignored; `persona`, `profile` and `user` besides), and personalign's feedback and rewards."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_N = 16  # choices per request
MAX_REQUEST_ID = 200  # characters of a `request_id` or an `Idempotency-Key` header


class GenerationBody(BaseModel):
    """Fields shared by both endpoints; unknown OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=0)  # vLLM's sampling extension
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    persona: str | None = None
    profile: str | None = None
    user: str | None = None  # OpenAI's end-user id: selects the user's memory


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _text_parts(cls, value: Any) -> Any:
        for part in value if isinstance(value, list) else ():
            if part.get("type") == "text" and not isinstance(part.get("text"), str):
                raise ValueError("a text content part needs `text` as a string")
        return value

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatBody(GenerationBody):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionBody(GenerationBody):
    prompt: str | list[str]


class FeedbackBody(BaseModel):
    """A preference (prompt, chosen, rejected) or a comment (prompt, comment) for a user; `request_id`
    (or an `Idempotency-Key` header) makes a retried request count once."""

    model_config = ConfigDict(extra="forbid")

    user: str | None = None
    prompt: str
    chosen: str | None = None
    rejected: str | None = None
    comment: str | None = None
    direction: list[float] | None = None  # the item's 90 AlignX values (0, 0.5, 1): pba profiles use them
    request_id: str | None = Field(None, max_length=MAX_REQUEST_ID)


class RewardsBody(BaseModel):
    """Responses to score under a user's model (`--user-model`)."""

    model_config = ConfigDict(extra="forbid")

    user: str | None = None
    prompt: str
    responses: list[str] = Field(min_length=1, max_length=MAX_N)
