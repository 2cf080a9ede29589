"""A learner rank's share of each step, so that N ranks take the step one rank would take.

Every rank gets the whole batch and trains on a contiguous share of each minibatch; its loss is
scaled by its share of the minibatch's units (tokens, pairs or lists), so that DeepSpeed's mean
of the ranks' gradients is the gradient of the whole minibatch's mean loss.
"""

from __future__ import annotations

import torch


class RankShare:
    def __init__(self, rank: int = 0, world_size: int = 1):
        self.rank, self.world_size = rank, world_size

    def share(self, items: torch.Tensor | list) -> tuple[torch.Tensor | list, bool]:
        """This rank's contiguous share of a minibatch (rows or items), and whether it is real.
        A rank whose share would be empty still runs a step (DeepSpeed reduces gradients across
        ranks in every step) on the minibatch's first entry, with weight 0."""
        if self.world_size == 1:
            return items, True
        size, extra = divmod(len(items), self.world_size)
        start = self.rank * size + min(self.rank, extra)
        share = items[start:start + size + (self.rank < extra)]
        return (share, True) if len(share) else (items[:1], False)

    def sum(self, values: list[float]) -> list[float]:
        """values summed over every rank (each rank calls this with its own)."""
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        total = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(total)
        return total.tolist()

    def loss_weight(self, mine: float, whole: float, real: bool) -> float:
        """Scale of this rank's mean loss so that DeepSpeed's average over ranks gives the mean
        over the whole minibatch: world_size x this rank's share of its units. 1 for one rank."""
        return self.world_size * mine / whole if real and self.world_size > 1 else float(real)

    def merged_means(self, weighted_sums: dict[str, float], steps: int) -> dict[str, float]:
        """Per-step metrics, each step's value weighted by the rank's share of that step: summed
        over ranks and averaged over steps, the same figures one rank reports on the whole batch."""
        keys = sorted(weighted_sums)
        totals = self.sum([weighted_sums[key] for key in keys])
        return {key: total / max(1, steps) for key, total in zip(keys, totals)}
