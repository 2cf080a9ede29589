"""How likely a model finds given answers: the judge that needs no generation and no ranker.

`mean_token_logprobs` teacher-forces each (prompt, answer) through any Hugging Face causal LM and
returns the answer's mean per-token log-probability, log pi(answer | prompt) / len(answer). The
evaluation reads human reference answers this way (`ref_logprob`): the learner with its own
policy module (the run's dtype), jobs/evaluate.py with a checkpoint loaded from disk.
"""

from __future__ import annotations

import torch

from crowdless.prompts import encode_answer, encode_prompt
from crowdless.reward import pad_right


@torch.no_grad()
def mean_token_logprobs(model, tokenizer, prompts: list[str], answers: list[str], *, use_chat_template: bool,
                        max_prompt_tokens: int, max_answer_tokens: int, batch_size: int = 16) -> list[float]:
    """[N] mean per-token log-probabilities of the answers given their prompts. An answer is
    tokenised as written, EOS appended where the whole answer fits in max_answer_tokens (a finished
    answer ends there), cut at max_answer_tokens without EOS otherwise. Rows go through in
    batches of similar length, right-padded."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = [(encode_prompt(tokenizer, p, use_chat_template, max_prompt_tokens),
             encode_answer(tokenizer, a, max_answer_tokens, eos_when_cut=False)) for p, a in zip(prompts, answers)]
    device = next(model.parameters()).device
    values = [0.0] * len(rows)
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
            values[i] = float(logprobs[row, prompt_length - 1:prompt_length - 1 + answer_length].mean())
    return values
