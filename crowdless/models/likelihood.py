"""How likely a model finds given answers: the judge that needs no generation and no ranker.

`answer_logprobs` teacher-forces each (prompt, answer) through any Hugging Face causal LM and
returns log pi(answer | prompt), or its mean per token. The evaluation reads human reference
answers this way (`ref_logprob`): the learner with its own policy module (the run's dtype),
jobs/evaluate.py with a checkpoint loaded from disk. `ImplicitReward` serves the reward a dpo or
listwise run trains by, beta * log(pi / pi_ref), from two models loaded from disk.
"""

from __future__ import annotations

import torch

from crowdless.models.prompts import encode_answer, encode_prompt
from crowdless.models.reward import pad_right


@torch.no_grad()
def answer_token_logprobs(model, tokenizer, prompts: list[str], answers: list[str], *, use_chat_template: bool,
                          max_prompt_tokens: int, max_answer_tokens: int,
                          batch_size: int = 16) -> list[tuple[list[int], list[float]]]:
    """Each answer's token ids and their log-probabilities given the prompt. An answer is
    tokenised as written, EOS appended where the whole answer fits in max_answer_tokens (a finished
    answer ends there), cut at max_answer_tokens without EOS otherwise. Rows go through in
    batches of similar length, right-padded."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = [(encode_prompt(tokenizer, p, use_chat_template, max_prompt_tokens),
             encode_answer(tokenizer, a, max_answer_tokens, eos_when_cut=False)) for p, a in zip(prompts, answers)]
    device = next(model.parameters()).device
    values: list = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    for start in range(0, len(order), batch_size):
        part = order[start:start + batch_size]
        ids, attention = pad_right([rows[i][0] + rows[i][1] for i in part], pad)
        logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
        # position t predicts token t + 1: the answer's tokens are predicted from its prompt's last position on
        logprobs = -torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten().to(device),
                                                      reduction="none").view(len(part), -1).cpu()
        for row, i in enumerate(part):
            prompt_length, answer_length = len(rows[i][0]), len(rows[i][1])
            values[i] = (rows[i][1], logprobs[row, prompt_length - 1:prompt_length - 1 + answer_length].tolist())
    return values


def answer_logprobs(model, tokenizer, prompts: list[str], answers: list[str], *, per_token: bool = True,
                    **options) -> list[float]:
    """[N] log-probabilities of the answers given their prompts (see answer_token_logprobs),
    summed over the answer's tokens or (per_token) their mean."""
    rows = answer_token_logprobs(model, tokenizer, prompts, answers, **options)
    return [float(torch.tensor(tokens).mean() if per_token else torch.tensor(tokens).sum()) for _, tokens in rows]


class ImplicitReward:
    """beta * log(pi(answer | prompt) / pi_ref(answer | prompt)) of a policy against its starting
    model: the reward by which dpo and listwise, which train no reward model, order answers."""

    def __init__(self, policy_path: str, reference_path: str, beta: float, dtype: torch.dtype, *,
                 use_chat_template: bool, max_prompt_tokens: int, max_answer_tokens: int):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.beta, self.dtype = beta, dtype
        self.options = dict(use_chat_template=use_chat_template, max_prompt_tokens=max_prompt_tokens,
                            max_answer_tokens=max_answer_tokens, per_token=False)
        self.tokenizer = AutoTokenizer.from_pretrained(reference_path)
        self.reference = AutoModelForCausalLM.from_pretrained(reference_path, dtype=dtype).eval()
        self.load_policy(policy_path)

    def load_policy(self, path: str) -> None:
        from transformers import AutoModelForCausalLM

        self.policy = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype).eval()

    def score(self, prompts: list[str], answers: list[str]) -> list[float]:
        policy = answer_logprobs(self.policy, self.tokenizer, prompts, answers, **self.options)
        reference = answer_logprobs(self.reference, self.tokenizer, prompts, answers, **self.options)
        return [self.beta * (p - r) for p, r in zip(policy, reference)]


def logprob_shift_by_position(before: list[tuple[list[int], list[float]]], after: list[tuple[list[int], list[float]]],
                              eos_id: int, last_position: int = 6) -> dict[str, float]:
    """Where the answers' log-probabilities moved between two models (answer_token_logprobs of the
    same answers under each): the mean change at the closing EOS, at the first token, at every
    other token, and by position, EOS left out (positions from last_position on pooled). A policy that learns
    not to stop shows it at the EOS; one that narrows its openings, at the first token."""
    groups: dict[str, list[float]] = {"eos": [], "first": [], "rest": []}
    positions: dict[int, list[float]] = {}
    for (ids, old), (same_ids, new) in zip(before, after):
        if ids != same_ids:
            raise ValueError("before and after must hold the same answers' tokens, in the same order")
        for t, (token, a, b) in enumerate(zip(ids, old, new)):
            groups["eos" if token == eos_id else "first" if t == 0 else "rest"].append(b - a)
            if token != eos_id:
                positions.setdefault(min(t, last_position), []).append(b - a)
    shift = {name: sum(values) / len(values) for name, values in groups.items() if values}
    shift.update({f"position_{t}{'+' if t == last_position else ''}": sum(v) / len(v)
                  for t, v in sorted(positions.items())})
    return shift
