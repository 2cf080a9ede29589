"""Reward-model inputs and scores, shared by the learner and the Serve app.

The reward model is an AutoModelForSequenceClassification with one label; its
scalar `score` head is read at the last real token of prompt + answer.
"""

from __future__ import annotations

import torch

from crowdless.models.prompts import encode_answer, encode_prompt
from crowdless.models.shared_prefix import forward_sharing_prefix, shared_prefix_length


def pad_right(rows: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows -> (ids [B, L], attention mask [B, L])."""
    width = max(map(len, rows))
    ids = torch.tensor([r + [value] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def encode_for_reward(tokenizer, prompts: list[str], answers: list[str], max_length: int,
                      use_chat_template: bool, max_prompt_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt (chat-templated) + answer + EOS, keeping the last max_length tokens of each."""
    rows = []
    for prompt, answer in zip(prompts, answers):
        prompt_ids = encode_prompt(tokenizer, prompt, use_chat_template, max_prompt_tokens)
        rows.append((prompt_ids + encode_answer(tokenizer, answer, max_length // 2))[-max_length:])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return pad_right(rows, pad)


def token_values(module, ids: torch.Tensor, attention: torch.Tensor, prefix: int = 0) -> torch.Tensor:
    """The scalar head on positions prefix..L-1: [B, L - prefix] float32. prefix: the rows'
    shared prefix (shared_prefix_length), computed once."""
    device = next(module.parameters()).device
    hidden = forward_sharing_prefix(module.base_model, ids.to(device), attention.to(device), prefix).last_hidden_state
    return module.score(hidden).squeeze(-1).float()


def sequence_scores(module, ids: torch.Tensor, attention: torch.Tensor, share_prefix: bool = True) -> torch.Tensor:
    """The scalar head at each sequence's last real token: [B]. share_prefix=False for a model
    training with gradient checkpointing, which drops the shared prefix's cache."""
    last = attention.sum(dim=1) - 1
    prefix = shared_prefix_length(ids, int(last.min())) if share_prefix else 0
    values = token_values(module, ids, attention, prefix)
    return values[torch.arange(len(ids), device=values.device), (last - prefix).to(values.device)]


class RewardScorer:
    """A saved reward model (HF folder) scoring answers outside the learner: serving, evaluation."""

    def __init__(self, folder: str, max_length: int, use_chat_template: bool, max_prompt_tokens: int):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.encoding = (max_length, use_chat_template, max_prompt_tokens)

    @torch.no_grad()
    def score(self, prompts: list[str], answers: list[str], batch_size: int = 32) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(prompts), batch_size):
            ids, attention = encode_for_reward(self.tokenizer, prompts[start:start + batch_size],
                                               answers[start:start + batch_size], *self.encoding)
            scores += sequence_scores(self.model, ids, attention).tolist()
        return scores
