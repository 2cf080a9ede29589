"""Request and response bodies of the HTTP API (OpenAI-compatible where OpenAI has the route)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Bounds on what one request may carry, beyond the body size: each is refused with a 400 naming
# the field. OpenAI allows 4 stop sequences; 64 answers is 8 times the default rollout group.
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 256
MAX_ANSWERS = 64
MAX_TEXT_CHARS = 16_000

StopText = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


class Request(BaseModel):
    # OpenAI clients send fields this server does not use (user, stream_options, ...): ignore those,
    # but type-check every field it does use.
    model_config = ConfigDict(extra="ignore")


class SamplingFields(Request):
    model: str
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: StopText | list[StopText] | None = Field(None, description=f"at most {MAX_STOP_SEQUENCES} strings")
    stream: bool = False
    seed: int | None = None

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop):
        if isinstance(stop, list) and len(stop) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(stop)}")
        return stop

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(SamplingFields):
    prompt: str

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, prompt: str) -> str:
        if not prompt.strip():
            raise ValueError("prompt is empty")
        return prompt


class ChatMessage(Request):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)

    @field_validator("messages")
    @classmethod
    def _has_content(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.content.strip() for m in messages):
            raise ValueError("every message is empty")
        return messages


class AnswersRequest(Request):
    prompt: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    answers: list[Text] = Field(min_length=1, max_length=MAX_ANSWERS)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
