"""The policy, its frozen reference and how both are read: what the policy-gradient and preference
phases (policy_gradient.py, preference.py) train and score with."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from algos.objectives import ObjectiveParams, sequence_logprobs
from configs.schema import CrowdlessConfig
from crowdless.learner.ranks import RankShare
from crowdless.learner.tokens import ResponseForward, chunks, token_batch
from crowdless.models.prompts import encode_answer, encode_prompt
from crowdless.data.records import Rollout


@dataclass
class PolicyModels:
    """policy: the DeepSpeed engine being trained; reference: the frozen starting policy (a plain
    module); value: PPO's critic engine, built on first use; policy_is_reference: the policy has
    not stepped yet, so the reference's log-probs are the policy's and need no forward pass."""

    config: CrowdlessConfig
    policy: object
    reference: torch.nn.Module
    tokenizer: object
    pad_id: int
    forward: ResponseForward
    ranks: RankShare
    device: torch.device
    policy_is_reference: bool
    value: object | None = None

    def text_rows(self, rows: list[tuple[str, str]], sampled: dict | None = None) -> list[Rollout]:
        """(prompt, answer) texts as token rows: the sampled Rollout where `sampled` (keyed by
        (prompt, answer text)) holds one, else the text tokenised (policy.answer_tokens says
        whether a cut one ends with EOS). Noised negatives were never sampled."""
        mc = self.config.model
        answer_tokens = self.config.rollout.max_new_tokens + 1
        sampled = sampled or {}
        eos_when_cut = self.config.policy.answer_tokens == "retokenized"
        return [sampled.get((prompt, answer)) or Rollout(
                    prompt, encode_prompt(self.tokenizer, prompt, mc.use_chat_template, mc.max_prompt_tokens),
                    encode_answer(self.tokenizer, answer, answer_tokens, eos_when_cut), answer, [], True)
                for prompt, answer in rows]

    def sequence_logprobs(self, model, rows: list[tuple[str, str]],
                          sampled: dict | None = None) -> dict[tuple[str, str], float]:
        """log pi(answer | prompt) of each distinct row (see answer_logprobs)."""
        return self.answer_logprobs(model, rows, sampled)[0]

    @torch.no_grad()
    def answer_logprobs(self, model, rows: list[tuple[str, str]], sampled: dict | None = None
                        ) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], torch.Tensor]]:
        """log pi(answer | prompt) of each distinct row, and its answer tokens' log-probs, each
        row computed once: an answer sits in several pairs (a default iteration's 416 pair rows
        hold about 176 distinct ones). Rows go through in minibatches of similar length, so that
        little of each is padding."""
        distinct = list(dict.fromkeys(rows))
        rollouts = self.text_rows(distinct, sampled)
        batch = token_batch(rollouts, self.pad_id)
        lengths = batch["mask"].sum(dim=1).long()
        by_length = torch.tensor(sorted(range(len(distinct)),
                                        key=lambda i: len(rollouts[i].prompt_ids) + len(rollouts[i].response_ids)))
        values, tokens = torch.empty(len(distinct)), [None] * len(distinct)
        for part in chunks(len(distinct), self.config.policy.minibatch_size, by_length):
            logprobs = self.forward.logprobs(model, batch, part)
            values[part] = sequence_logprobs(logprobs, batch["mask"][part])
            for row, i in enumerate(part.tolist()):
                tokens[i] = logprobs[row, :lengths[i]].clone()
        return dict(zip(distinct, values.tolist())), dict(zip(distinct, tokens))

    @torch.no_grad()
    def weights_moved(self) -> dict[str, float]:
        """The share of the policy's weights, as its forwards and vLLM see them, that differ from
        the reference's (the starting policy). In bf16 a weight stays put until its float32 master
        has moved half a bf16 step: a short run at a small learning rate can leave most weights
        where they were (docs/experiments.md E19). Not measured under ZeRO-3 (sharded weights)
        or LoRA (the base weights are frozen)."""
        if self.config.learner.zero_stage == 3 or self.config.learner.lora_rank:
            return {}
        reference = dict(self.reference.named_parameters())
        moved = total = 0
        for name, weight in self.policy.module.named_parameters():
            moved += int((weight != reference[name].to(weight.device)).sum())
            total += weight.numel()
        return {"policy_weights_moved": moved / total}


def objective_params(config: CrowdlessConfig) -> ObjectiveParams:
    policy, ppo = config.policy, config.ppo
    return ObjectiveParams(kl_coef=policy.kl_coef, kl_mode=ppo.kl_mode, gamma=policy.gamma,
                           lam=ppo.lam, clip_ratio=policy.clip_ratio, value_clip=ppo.value_clip,
                           whiten=policy.whiten_advantages, beta=policy.beta, nll_coef=policy.nll_coef,
                           forward_kl_coef=policy.forward_kl_coef, length_coef=policy.length_coef,
                           scale=policy.scale_rewards)


def stopped_at_drift(config: CrowdlessConfig, drift: float) -> dict | None:
    """run.stop_at_drift: the phase's metrics when the policy that sampled this iteration has drifted
    that far from its start, so the phase trains nothing and the run ends on that policy; else None."""
    budget = config.run.stop_at_drift
    if budget is None or drift < budget:
        return None
    return {"policy_drift": drift, "stopped_at_drift": True}
