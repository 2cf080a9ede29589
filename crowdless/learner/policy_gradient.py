"""The policy-gradient phase (ppo, grpo, rloo, reinforce_pp): each sampled answer's reward,
advantages from the objective, clipped updates on the sampled tokens, and PPO's critic."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from algos.objectives import Objective, PolicyLossInputs, RolloutBatch, sequence_logprobs
from configs.schema import RewardConfig
from crowdless.learner.policy import PolicyModels, objective_params, stopped_at_drift
from crowdless.learner.steps import StepLosses, train_steps
from crowdless.learner.tokens import chunks, pad_floats, token_batch
from crowdless.data.records import RankedGroup, Rollout


def sequence_rewards(config: RewardConfig, rollouts: list[Rollout], groups: list[RankedGroup],
                     reward_model_scores: list[float] | None = None) -> torch.Tensor:
    """Rewards [B]: the reward model's scores where given, or (reward.source=ranker) each answer's
    TextRank score scaled by its group's size and centred, n * s - 1: 0 for an average answer;
    minus reward.missing_eos_penalty for an answer cut at the token cap."""
    if reward_model_scores is not None:
        scores = torch.tensor(reward_model_scores)
    else:
        scores = torch.tensor([len(g.scores) * s - 1.0 for g in groups for s in g.scores])
    return scores - config.missing_eos_penalty * torch.tensor([not r.finished for r in rollouts], dtype=scores.dtype)


@torch.no_grad()
def rollout_statistics(models: PolicyModels, batch: dict, engine_logprobs: torch.Tensor | None) -> dict:
    """Log-probs [B, T] of the sampling policy and the reference, and values where there is a
    critic. The sampling policy's log-probs are the engine's own where given: it held the learner's
    weights when it sampled, so a forward pass here would only repeat them. Likewise the
    reference's, while the policy has not moved from it."""
    models.policy.module.eval()
    parts = {"old_logprobs": [], "ref_logprobs": [], "old_values": []}
    for rows in chunks(len(batch["ids"]), models.config.policy.minibatch_size):
        if engine_logprobs is None:
            parts["old_logprobs"].append(models.forward.logprobs(models.policy.module, batch, rows))
        if not models.policy_is_reference:
            parts["ref_logprobs"].append(models.forward.logprobs(models.reference, batch, rows))
        if models.value is not None:
            models.value.module.eval()
            parts["old_values"].append(models.forward.values(models.value.module, batch, rows))
    stats = {key: torch.cat(value) if value else None for key, value in parts.items()}
    if engine_logprobs is not None:
        stats["old_logprobs"] = engine_logprobs * batch["mask"]
    if models.policy_is_reference:
        stats["ref_logprobs"] = stats["old_logprobs"].clone()
    return stats


def train_policy_gradient(models: PolicyModels, objective: Objective, rollouts: list[Rollout],
                          groups: list[RankedGroup], rewards: torch.Tensor, rng: np.random.Generator,
                          report: Callable[[int, int], None]) -> dict[str, float]:
    """Advantages of the rollouts from their rewards, then policy.epochs of clipped updates (and
    the critic's, where the objective has one), each rank's loss weighted by its response tokens."""
    cfg, params = models.config.policy, objective_params(models.config)
    start = time.perf_counter()
    batch = token_batch(rollouts, models.pad_id)
    mask = batch["mask"]
    engine_logprobs = pad_floats([r.logprobs for r in rollouts], mask.shape[1])
    has_engine_logprobs = all(len(r.logprobs) == len(r.response_ids) for r in rollouts)
    reuse = cfg.old_logprobs == "engine" and has_engine_logprobs
    stats = rollout_statistics(models, batch, engine_logprobs if reuse else None)
    # KL(policy || reference) on the answers it sampled, nats per answer (as preference.policy_drift)
    drift = (sequence_logprobs(stats["old_logprobs"], mask)
             - sequence_logprobs(stats["ref_logprobs"], mask)).mean().item()
    if stopped := stopped_at_drift(models.config, drift):
        return stopped
    group = torch.repeat_interleave(torch.arange(len(groups)), torch.tensor([len(g.answers) for g in groups]))
    values = stats["old_values"] * mask if stats["old_values"] is not None else None
    advantages, returns, metrics = objective.advantages(
        RolloutBatch(rewards, group, stats["old_logprobs"], stats["ref_logprobs"], mask, values), params)

    models.policy.module.train()
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    minibatches = [rows for _ in range(cfg.epochs) for rows in
                   chunks(len(rollouts), cfg.minibatch_size, torch.randperm(len(rollouts), generator=generator))]

    def step(rows, minibatch, real: bool) -> StepLosses:
        tokens, whole = mask[rows].sum().item() * real, max(1.0, mask[minibatch].sum().item())
        logprobs = models.forward.logprobs(models.policy, batch, rows)
        if minibatch is minibatches[0] and has_engine_logprobs:  # before any update: are they ours?
            gap = ((engine_logprobs[rows] - logprobs.detach()).abs() * mask[rows]).sum().item() * real
            gap, gap_tokens = models.ranks.sum([gap, tokens])
            metrics["engine_logprob_gap"] = gap / gap_tokens
        loss, step_metrics = objective.loss(
            PolicyLossInputs(logprobs, stats["old_logprobs"][rows], advantages[rows], mask[rows],
                             stats["ref_logprobs"][rows]), params)
        losses = [(models.policy, loss)]
        if objective.uses_value_model:  # the critic is a model of its own: its forward needs no policy step
            models.value.module.train()
            new_values = models.forward.values(models.value.module, batch, rows)
            value_loss, value_metrics = objective.value_loss(new_values, stats["old_values"][rows],
                                                             returns[rows], mask[rows], params)
            losses.append((models.value, models.config.ppo.vf_coef * value_loss))
            step_metrics = {**step_metrics, **value_metrics}
        return StepLosses(losses, step_metrics, tokens, whole)

    metrics.update(train_steps(minibatches, models.ranks, step, models.device, report))
    models.policy_is_reference = models.policy_is_reference and not minibatches
    seconds = time.perf_counter() - start
    metrics.update({
        "reward_mean": rewards.mean().item(),
        "reward_std": rewards.std().item() if len(rewards) > 1 else 0.0,
        "policy_tokens_per_second": int(mask.sum().item()) * cfg.epochs / seconds,
        "policy_drift": drift,
    })
    return metrics
