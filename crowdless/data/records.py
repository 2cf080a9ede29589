"""Typed hand-offs between stages: Rollout -> RankedGroup (with PreferencePair) -> learner."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from algos.pairs import PreferencePair

__all__ = ["PreferencePair", "RankedGroup", "Rollout"]


@dataclass(frozen=True)
class Rollout:
    """One sampled answer: the prompt as text and as the token ids the engine saw."""

    prompt: str
    prompt_ids: list[int]  # after the chat template
    response_ids: list[int]
    response_text: str
    logprobs: list[float]  # engine's log-prob of each response token
    finished: bool  # ended with EOS / stop rather than the length cap


@dataclass(frozen=True)
class RankedGroup:
    prompt: str
    answers: list[str]  # all sampled answers, in sampling order
    scores: list[float]  # TextRank score of each answer
    clusters: list[int]  # ISODATA cluster of each answer
    ranked: list[int]  # indices of the kept (distinct) answers, best first
    pairs: list[PreferencePair]
    echoes: list[bool] = field(default_factory=list)  # each answer only repeats the prompt (ranking.echo_share)

    def to_json(self) -> dict:
        record = asdict(self)
        record["ranked_answers"] = [self.answers[i] for i in self.ranked]
        return record
