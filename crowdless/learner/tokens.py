"""Rollouts as padded token batches, and the per-token log-probs and values of their responses.

Shapes: B rows of prompt + response, L tokens padded, T response tokens (the longest response).
"""

from __future__ import annotations

import torch

from crowdless.data.records import Rollout
from crowdless.models.reward import pad_right, token_values
from crowdless.models.shared_prefix import forward_sharing_prefix, shared_prefix_length


def chunks(n: int, size: int, order: torch.Tensor | None = None):
    """Index tensors of consecutive `size`-long slices of range(n) (or of `order`)."""
    order = torch.arange(n) if order is None else order
    for start in range(0, n, size):
        yield order[start : start + size]


def pad_floats(rows: list[list[float]], width: int) -> torch.Tensor:
    return torch.tensor([r[:width] + [0.0] * (width - len(r[:width])) for r in rows])


def token_batch(rollouts: list[Rollout], pad_id: int) -> dict[str, torch.Tensor]:
    """Prompt + response rows, and where each response token sits: index [B, T] into the
    [B, L-1] grid of next-token log-probs, with mask [B, T] (1 = real response token)."""
    ids, attention = pad_right([r.prompt_ids + r.response_ids for r in rollouts], pad_id)
    lengths = torch.tensor([len(r.response_ids) for r in rollouts])
    width = int(lengths.max())
    steps = torch.arange(width)
    mask = (steps[None, :] < lengths[:, None]).float()
    starts = torch.tensor([len(r.prompt_ids) - 1 for r in rollouts])
    index = (starts[:, None] + steps[None, :]).clamp(max=ids.shape[1] - 2)
    return {"ids": ids, "attention": attention, "index": index, "mask": mask}


def batch_rows(batch: dict, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids, attention [b, W] and index [b, T] of some rows, cut to their longest real row:
    the batch is padded to its longest row, and a minibatch need not compute that padding."""
    attention = batch["attention"][rows]
    width = max(2, int(attention.sum(dim=1).max()))
    index = batch["index"][rows].clamp(max=width - 2)  # clamped positions are masked out
    return batch["ids"][rows, :width], attention[:, :width], index


class ResponseForward:
    """Forward passes over a token batch's rows that keep only the response positions.

    share_prefix: compute the rows' common prompt prefix once (not under gradient
    checkpointing, which drops the key/value cache in training); head_on_responses_only: the
    model's forward takes `logits_to_keep`, as most Hugging Face causal LMs do."""

    def __init__(self, device: torch.device, share_prefix: bool, head_on_responses_only: bool):
        self.device, self.share_prefix, self.head_on_responses_only = device, share_prefix, head_on_responses_only

    def logprobs(self, model, batch: dict, rows: torch.Tensor, distributions: bool = False):
        """[b, T] log-prob of each response token under `model`; with distributions, also the
        [b, T, V] next-token log-distribution at each response position (policy.forward_kl_coef)."""
        ids, attention, index = (t.to(self.device) for t in batch_rows(batch, rows))
        first = int(index.min())  # the earliest position whose next-token log-prob is needed
        prefix = shared_prefix_length(ids, first) if self.share_prefix else 0
        # The LM head from the first response position on: prompt positions are about 40% of a
        # default row, the head about a fifth of a small model's forward, and [b, L, V] its
        # largest activation. The positions go as indices (into the outputs from `prefix` on), not
        # as a count: the model then picks a contiguous copy of them, where a slice would hand its
        # head a strided input, which torch multiplies as a batch of copies of the [V, d] head
        # weight (5 to 7 times the time on CPU).
        kept = ({"logits_to_keep": torch.arange(first - prefix, ids.shape[1] - prefix, device=self.device)}
                if self.head_on_responses_only else {})
        logits = forward_sharing_prefix(model, ids, attention, prefix, **kept).logits  # [b, P, V]
        offset = first if self.head_on_responses_only else prefix  # logits[:, j] is position offset + j
        # Each position's log-prob of its own next token, then the response positions' [b, T]:
        # picking the response positions' [b, T, V] logits first would copy them, and its
        # backward scatters [b, T, V] gradients (about a tenth of a bf16 GRPO phase on CPU).
        # cross_entropy is one fused log-softmax: a third less time than logsumexp minus the
        # gathered logit, forward and backward, on CPU.
        following = torch.cat([ids[:, offset + 1:], ids[:, -1:]], dim=1)  # the last position has none: unused
        if distributions:
            logdists = torch.log_softmax(logits.float(), dim=-1)
            logprobs = logdists.gather(2, following[:, :, None]).squeeze(2)
            positions = (index - offset)[:, :, None].expand(-1, -1, logdists.shape[2])
            return logprobs.gather(1, index - offset).cpu(), logdists.gather(1, positions).cpu()
        logprobs = -torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), following.flatten(),
                                                      reduction="none").view(following.shape)
        return logprobs.gather(1, index - offset).cpu()

    def values(self, module, batch: dict, rows: torch.Tensor) -> torch.Tensor:
        """[b, T] value of each response position under a value model."""
        ids, attention, index = batch_rows(batch, rows)
        prefix = shared_prefix_length(ids, int(index.min())) if self.share_prefix else 0
        values = token_values(module, ids, attention, prefix)
        return values.gather(1, (index - prefix).to(values.device)).cpu()
