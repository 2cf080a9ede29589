"""The optimiser-step loop every training phase shares: take this rank's share of the step, let the
phase compute its losses on it, weight them by the share, step the engines, add up the metrics and
report progress. The phases (reward model, policy gradient, preference) differ only in what a step
computes and in the units it counts (pairs, response tokens, ranked lists)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from crowdless.learner.ranks import RankShare


@dataclass
class StepLosses:
    """What a phase computed on this rank's share of one step.

    losses: (DeepSpeed engine, mean loss over the share), stepped in this order;
    units: this rank's units in the step (0 for a rank whose share is a placeholder);
    whole_units: the step's units over every rank."""

    losses: list[tuple[object, torch.Tensor]]
    metrics: dict[str, float]
    units: float
    whole_units: float


def train_steps(steps: list, ranks: RankShare, compute: Callable[[list, list, bool], StepLosses],
                device: torch.device, report: Callable[[int, int], None]) -> dict[str, float]:
    """Run `compute(share, whole_step, real)` on every step (a list or tensor of indices into the
    phase's batch), backward and step its engines with each loss scaled so that the ranks together
    take the step one rank takes on the whole, and return the per-step metrics, each weighted by
    the rank's share of its step and averaged over steps and ranks."""
    weighted: dict[str, float] = {}
    for number, whole in enumerate(steps):
        share, real = ranks.share(whole)
        step = compute(share, whole, real)
        weight = ranks.loss_weight(step.units, step.whole_units, real)
        for engine, loss in step.losses:
            engine.backward((loss * weight).to(device))
            engine.step()
        fraction = step.units / step.whole_units if real else 0.0
        for key, value in step.metrics.items():
            weighted[key] = weighted.get(key, 0.0) + value * fraction
        report(number + 1, len(steps))
    return ranks.merged_means(weighted, len(steps))
