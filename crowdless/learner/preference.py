"""The preference phase (dpo, listwise): the ranked answers' sequence log-probs under the policy
and the frozen reference, one item (a pair, or a ranked list) at a time, each rank's loss weighted
by its share of the step's items."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from algos.losses import forward_kl, kl_k3
from algos.objectives import Objective, PreferenceBatch, sequence_logprobs
from crowdless.learner.policy import PolicyModels, objective_params, stopped_at_drift
from crowdless.learner.steps import StepLosses, train_steps
from crowdless.learner.tokens import token_batch
from crowdless.data.records import RankedGroup, Rollout

Row = tuple[str, str]  # (prompt, answer text)


def preference_items(groups: list[RankedGroup], preference_input: str) -> list[list[Row]]:
    """Each item is one pair (chosen, rejected) or one ranked list, as (prompt, answer) rows, best first."""
    if preference_input == "pairs":
        return [[(p.prompt, p.chosen), (p.prompt, p.rejected)] for g in groups for p in g.pairs]
    return [[(g.prompt, g.answers[i]) for i in g.ranked] for g in groups if len(g.ranked) >= 2]


def padded_lists(items: list[list[Row]]) -> tuple[torch.Tensor, torch.Tensor]:
    """index [G, K] of each item's rows in the items' rows laid end to end, and valid [G, K]:
    lists shorter than the longest repeat their last row, masked out."""
    width = max(map(len, items))
    index, valid, offset = [], [], 0
    for item in items:
        index.append([offset + min(k, len(item) - 1) for k in range(width)])
        valid.append([k < len(item) for k in range(width)])
        offset += len(item)
    return torch.tensor(index), torch.tensor(valid)


def sampled_rows(models: PolicyModels, rollouts: list[Rollout]) -> dict[Row, Rollout]:
    """The rollouts by (prompt, answer text), where the learner trains on sampled tokens."""
    if models.config.policy.answer_tokens != "sampled":
        return {}
    return {(r.prompt, r.response_text): r for r in rollouts}


@torch.no_grad()
def policy_drift(models: PolicyModels, answers: list[Row], reference: dict[Row, float],
                 sampled: dict[Row, Rollout]) -> float:
    """KL(policy || reference) estimated on the answers the policy just sampled, before it trains
    on them: the mean over them of log pi(y|x) - log pi_ref(y|x), in nats per answer. A label-free
    measure of how far the policy has moved, not of harm on its own (docs/experiments.md E25,
    E27). Every rank computes it over every answer: under ZeRO-3 a forward of the policy needs
    all ranks."""
    if models.policy_is_reference or not answers:
        return 0.0
    models.policy.module.eval()
    policy, _ = models.answer_logprobs(models.policy.module, answers, sampled)
    return sum(policy[row] - reference[row] for row in answers) / len(answers)


def train_preference(models: PolicyModels, objective: Objective, groups: list[RankedGroup],
                     rollouts: list[Rollout], rng: np.random.Generator,
                     report: Callable[[int, int], None]) -> dict[str, float]:
    cfg, params = models.config.policy, objective_params(models.config)
    start = time.perf_counter()
    items = preference_items(groups, objective.preference_input)
    sampled = sampled_rows(models, rollouts)
    if not items:
        return {"policy_loss": float("nan"), "preference_items": 0}
    per_step = max(1, cfg.minibatch_size // max(len(item) for item in items))
    order = [int(i) for _ in range(cfg.epochs) for i in rng.permutation(len(items))]
    steps = [order[i:i + per_step] for i in range(0, len(order), per_step)]
    # the frozen reference's log-probs once per phase, each distinct row once: this rank's items,
    # and every sampled answer (most are in the items too) for the policy's drift
    mine = [i for whole in steps for i in models.ranks.share(whole)[0]]
    answers = [(r.prompt, r.response_text) for r in rollouts]
    reference, reference_tokens = models.answer_logprobs(
        models.reference, [row for i in mine for row in items[i]] + answers, sampled)
    drift = policy_drift(models, answers, reference, sampled)
    if stopped := stopped_at_drift(models.config, drift):
        return stopped
    models.policy.module.train()
    tokens = 0

    def step(chosen, whole, real: bool) -> StepLosses:
        nonlocal tokens
        chunk = [items[i] for i in chosen]
        rows = [row for item in chunk for row in item]
        batch = token_batch(models.text_rows(rows, sampled), models.pad_id)
        index, valid = padded_lists(chunk)
        every_row, answer_forward_kl = torch.arange(len(rows)), None
        if params.forward_kl_coef > 0:  # both models' whole next-token distributions
            token_logps, logdists = models.forward.logprobs(models.policy, batch, every_row, distributions=True)
            with torch.no_grad():
                _, ref_logdists = models.forward.logprobs(models.reference, batch, every_row, distributions=True)
            answer_forward_kl = forward_kl(ref_logdists, logdists, batch["mask"]).sum(dim=1)[index]
        else:
            token_logps = models.forward.logprobs(models.policy, batch, every_row)
        logps = sequence_logprobs(token_logps, batch["mask"])
        tokens += int(batch["mask"].sum()) * real
        ref = torch.tensor([reference[row] for row in rows])
        kl = None
        if params.kl_coef > 0:
            ref_tokens = pad_sequence([reference_tokens[row] for row in rows], batch_first=True)
            kl = kl_k3(token_logps, ref_tokens, batch["mask"]).sum(dim=1)[index]
        lengths = batch["mask"].sum(dim=1).to(logps.dtype)[index]
        loss, metrics = objective.loss(PreferenceBatch(logps[index], ref[index], valid, kl, lengths,
                                                       forward_kl=answer_forward_kl), params)
        return StepLosses([(models.policy, loss)], metrics, len(chosen), len(whole))

    summary = train_steps(steps, models.ranks, step, models.device, report)
    models.policy_is_reference = models.policy_is_reference and not steps
    seconds = time.perf_counter() - start
    tokens = models.ranks.sum([tokens])[0]
    summary.update({"policy_loss": summary.get(f"{objective.name}_loss", float("nan")),
                    "preference_items": len(items), "policy_tokens_per_second": tokens / seconds,
                    "policy_drift": drift})
    if sampled:  # the share of trained answers that are sampled token rows (the rest: noised)
        rows = {row for item in items for row in item}
        summary["preference_rows_sampled"] = sum(row in sampled for row in rows) / len(rows)
    return summary
