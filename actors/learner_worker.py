"""LearnerWorker: trains the policy with policy.objective on DeepSpeed (and, for the objectives
that use one, the reward model on the ranked pairs first).

One worker is one rank of a learner group (cluster/learner_group.py): every rank gets the same
calls with the same whole batch, in the same order, computes the batch statistics, and trains on
its share of each minibatch; DeepSpeed averages the gradients across ranks. Each rank's loss is
weighted by its share of the minibatch's tokens (or pairs, or lists), so the group takes the
step one rank would take on the whole minibatch (crowdless/learner/ranks.py).

The parts live in crowdless/learner/: engines.py builds the DeepSpeed engines, tokens.py the
token batches and response log-probs, checkpoint.py and replay.py what a checkpoint holds. This
worker holds the models and runs the three training phases (reward model, policy gradient,
preference).

Models (all Hugging Face, so checkpoints load with transformers and vLLM):
    policy      AutoModelForCausalLM, DeepSpeed engine
    reference   frozen copy of the starting policy (no engine, no gradients)
    reward      AutoModelForSequenceClassification (scalar `score` head), DeepSpeed engine
    value       same class as the reward model, read per token; starts from the reward
                model (default) or the policy; DeepSpeed engine

Shapes: B sequences, L tokens of prompt + response, T response tokens.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import numpy as np
import torch

from algos.objectives import (ObjectiveParams, PolicyLossInputs, PreferenceBatch, RolloutBatch,
                              get_objective, sequence_logprobs)
from algos.ppo import pairwise_reward_loss
from actors import node_id, start_worker_process
from cluster.rendezvous import init_process_group
from cluster.weight_sync import PortableState, portable_state
from configs.schema import CrowdlessConfig
from crowdless.learner import checkpoint
from crowdless.learner.engines import build_engine, full_state_dict, scalar_model
from crowdless.learner.ranks import RankShare
from crowdless.learner.replay import remember
from crowdless.learner.tokens import ResponseForward, chunks, pad_floats, token_batch
from crowdless.models import attention_implementation, resolve_dtype
from crowdless.prompts import encode_answer, encode_prompt
from crowdless.records import PreferencePair, RankedGroup, Rollout
from crowdless.reward import encode_for_reward, sequence_scores


class LearnerWorker:
    def __init__(
        self,
        config: CrowdlessConfig,
        policy_path: str,
        reference_path: str,
        reward_path: str,
        value_path: str | None = None,
        replay: list[PreferencePair] | None = None,
        progress=None,
        rank: int = 0,
        world_size: int = 1,
        address: tuple[str, int] | None = None,
    ):
        """value_path None: the value model is built from the reward model (or the policy)
        when PPO first runs, as ppo.value_init says. progress: a ProgressBoard actor handle
        (cluster/console.py) that gets (phase, iteration, done, total) after every optimiser step.
        rank / world_size / address: this worker's place in a learner group and rank 0's
        rendezvous (host, port); one worker alone needs none of them."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.rank, self.world_size = rank, world_size
        self.ranks = RankShare(rank, world_size)
        start_worker_process("learner", threads=max(1, int(config.resources.learner_cpus)) if world_size > 1 else None)
        self.policy_path, self.reward_path = policy_path, reward_path
        self.use_cuda = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.use_cuda else "cpu")
        self.dtype = getattr(torch, resolve_dtype(config.model.dtype))
        torch.manual_seed(config.run.seed)
        init_process_group(self.use_cuda, rank, world_size, address)

        self.tokenizer = AutoTokenizer.from_pretrained(policy_path)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.reward_tokenizer = AutoTokenizer.from_pretrained(reward_path)

        self.attention = attention_implementation(self.dtype, self.use_cuda)
        policy = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch.float32,
                                                      attn_implementation=self.attention)
        # Most Hugging Face causal LMs can apply their LM head to the last positions only.
        self.head_on_responses_only = "logits_to_keep" in inspect.signature(type(policy).forward).parameters
        # Gradient checkpointing drops a key/value cache in training, so the prompts' shared
        # prefix can only be computed once without it.
        self.share_prefix = not config.learner.gradient_checkpointing
        if config.learner.gradient_checkpointing:
            policy.gradient_checkpointing_enable()
        self.forward = ResponseForward(self.device, self.share_prefix, self.head_on_responses_only)
        self.policy = self._engine(policy, config.policy.lr, config.policy.minibatch_size)
        self.reference = AutoModelForCausalLM.from_pretrained(reference_path, dtype=self.dtype,
                                                              attn_implementation=self.attention)
        # Until the policy's first step it is the reference (a run's first iteration): the
        # reference's log-probs are then the sampling policy's, and need no forward pass.
        self.policy_is_reference = Path(policy_path).resolve() == Path(reference_path).resolve()
        self.reference.to(self.device).eval().requires_grad_(False)
        self.objective = get_objective(config.policy.objective)
        # Only policy-gradient objectives scored by a reward model need one: none is built otherwise.
        self.reward = None
        if self.objective.kind == "policy_gradient" and config.reward.source == "reward_model":
            self.reward = self._engine(self._scalar_model(reward_path), config.reward.lr,
                                       config.reward.batch_size)
        self.value = None
        if value_path is not None and self.objective.uses_value_model:
            self.value = self._engine(self._scalar_model(value_path), config.ppo.value_lr,
                                      config.policy.minibatch_size)
        self.replay: list[PreferencePair] = list(replay or [])
        self.progress = progress

    def ready(self) -> str:
        return node_id()

    def _report(self, phase: str, iteration: int, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress.update.remote(phase, iteration, done, total)

    def _rng(self, iteration: int, phase: int) -> np.random.Generator:
        """Seeded by (run seed, iteration, phase): a resumed run draws the same numbers."""
        return np.random.default_rng([self.config.run.seed, iteration, phase])

    # ---- model construction ---------------------------------------------------------------
    def _scalar_model(self, path: str):
        return scalar_model(path, self.pad_id, self.attention, self.config.learner.gradient_checkpointing)

    def _engine(self, model, lr: float, micro_batch: int):
        return build_engine(model, self.config.learner, self.dtype == torch.bfloat16, lr, micro_batch)

    # ---- forward helpers ------------------------------------------------------------------
    def _encode_for_reward(self, prompts: list[str], answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_for_reward(self.reward_tokenizer, prompts, answers, self.config.reward.max_length,
                                 self.config.model.use_chat_template, self.config.model.max_prompt_tokens)

    def has_reward_model(self) -> bool:
        return self.reward is not None

    def reward_scorer(self) -> tuple[str, str] | None:
        """(name, method) of what scores answers as this run's reward, for the held-out order
        check: a trained reward model's `score`, a preference objective's `implicit_rewards`
        (beta * log pi / pi_ref), or None where rewards came from the ranker alone."""
        if self.reward is not None:
            return "reward_model", "score"
        return ("implicit_reward", "implicit_rewards") if self.objective.kind == "preference" else None

    @torch.no_grad()
    def score(self, prompts: list[str], answers: list[str]) -> list[float]:
        """Reward model scores of answers to prompts (used by PPO and by serving)."""
        module = self.reward.module
        module.eval()
        scores = []
        for index in chunks(len(prompts), self.config.reward.batch_size * 4):
            ids, attention = self._encode_for_reward([prompts[i] for i in index], [answers[i] for i in index])
            scores += sequence_scores(module, ids, attention, self.share_prefix).tolist()
        return scores

    # ---- reward model ---------------------------------------------------------------------
    def _pair_losses(self, engine, pairs: list[PreferencePair]):
        ids, attention = self._encode_for_reward(
            [p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs]
        )
        scores = sequence_scores(engine.module, ids, attention, self.share_prefix)
        return pairwise_reward_loss(scores[: len(pairs)], scores[len(pairs) :])

    @torch.no_grad()
    def evaluate_pairs(self, pairs: list[PreferencePair]) -> dict[str, float]:
        """The reward model's mean loss and accuracy on pairs, without training on them."""
        if not pairs:
            return {"rm_loss": float("nan"), "rm_accuracy": float("nan")}
        self.reward.module.eval()
        totals = {"rm_loss": 0.0, "rm_accuracy": 0.0}
        for index in chunks(len(pairs), self.config.reward.batch_size * 2):
            _, metrics = self._pair_losses(self.reward, [pairs[i] for i in index])
            for key in totals:
                totals[key] += metrics[key] * len(index)
        return {key: value / len(pairs) for key, value in totals.items()}

    def train_reward(self, pairs: list[PreferencePair], iteration: int) -> dict[str, float]:
        """Hold out reward.eval_fraction of the pairs, train on the rest plus a replay of
        earlier pairs, and report the training loss and accuracy (each batch's, before its step,
        as TRL logs them: no extra pass over the pairs) and the held-out pairs' accuracy.
        Nothing to do (and no metrics) when the objective needs no reward model."""
        if self.reward is None:
            return {}
        cfg = self.config.reward
        rng = self._rng(iteration, phase=1)
        order = rng.permutation(len(pairs))
        n_eval = int(round(cfg.eval_fraction * len(pairs))) if len(pairs) > 1 else 0
        held_out = [pairs[i] for i in order[:n_eval]]
        fresh = [pairs[i] for i in order[n_eval:]]
        replayed = [self.replay[i] for i in rng.permutation(len(self.replay))[: cfg.replay_pairs]]
        train = fresh + replayed
        batches, weighted = [], {"rm_loss": 0.0, "rm_train_accuracy": 0.0}
        start = time.perf_counter()
        if train:
            self.reward.module.train()
            generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
            batches = [index for _ in range(cfg.epochs) for index in
                       chunks(len(train), cfg.batch_size, torch.randperm(len(train), generator=generator))]
            for step, index in enumerate(batches):
                share, real = self.ranks.share(index)
                loss, metrics = self._pair_losses(self.reward, [train[i] for i in share])
                self.reward.backward(loss * self.ranks.loss_weight(len(share), len(index), real))
                self.reward.step()
                weight = len(share) / len(index) if real else 0.0
                weighted["rm_loss"] += metrics["rm_loss"] * weight
                weighted["rm_train_accuracy"] += metrics["rm_accuracy"] * weight
                self._report("reward_model", iteration, step + 1, len(batches))
        train_seconds = time.perf_counter() - start
        held = self.evaluate_pairs(held_out)
        self.replay = remember(self.replay, fresh)
        trained = self.ranks.merged_means(weighted, len(batches)) if batches else {key: float("nan") for key in weighted}
        return {
            **trained,
            "rm_accuracy": held["rm_accuracy"],
            "rm_eval_loss": held["rm_loss"],
            "rm_pairs_trained": len(train) * cfg.epochs,
            "rm_pairs_per_second": len(train) * cfg.epochs / train_seconds if train else 0.0,
        }

    # ---- the policy: value model (ppo), token batches, policy-gradient and preference phases ---
    def _ensure_value_model(self) -> None:
        if self.value is not None:
            return
        cfg = self.config.ppo
        if cfg.value_init == "reward_model" and self.reward is not None:  # its weights as they are now
            model = self._scalar_model(self.reward_path)
            model.load_state_dict(full_state_dict(self.reward, self.config.learner))  # copies into fp32 params
        else:
            model = self._scalar_model(self.policy_path)
        self.value = self._engine(model, cfg.value_lr, self.config.policy.minibatch_size)

    @torch.no_grad()
    def _rollout_statistics(self, batch: dict, engine_logprobs: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Log-probs of the sampling policy and the reference, and values when there is a critic.
        The sampling policy's log-probs are the engine's own where given: it held the learner's
        weights when it sampled, so a forward pass here would only repeat them. Likewise the
        reference's, while the policy has not moved from it."""
        self.policy.module.eval()
        parts = {"old_logprobs": [], "ref_logprobs": [], "old_values": []}
        for rows in chunks(len(batch["ids"]), self.config.policy.minibatch_size):
            if engine_logprobs is None:
                parts["old_logprobs"].append(self.forward.logprobs(self.policy.module, batch, rows))
            if not self.policy_is_reference:
                parts["ref_logprobs"].append(self.forward.logprobs(self.reference, batch, rows))
            if self.value is not None:
                self.value.module.eval()
                parts["old_values"].append(self.forward.values(self.value.module, batch, rows))
        stats = {key: torch.cat(value) if value else None for key, value in parts.items()}
        if engine_logprobs is not None:
            stats["old_logprobs"] = engine_logprobs * batch["mask"]
        if self.policy_is_reference:
            stats["ref_logprobs"] = stats["old_logprobs"].clone()
        return stats

    def _objective_params(self) -> ObjectiveParams:
        policy, ppo = self.config.policy, self.config.ppo
        return ObjectiveParams(kl_coef=policy.kl_coef, kl_mode=ppo.kl_mode, gamma=policy.gamma,
                               lam=ppo.lam, clip_ratio=policy.clip_ratio, value_clip=ppo.value_clip,
                               whiten=policy.whiten_advantages, beta=policy.beta,
                               scale=policy.scale_rewards)

    def _sequence_scores(self, rollouts: list[Rollout], groups: list[RankedGroup]) -> torch.Tensor:
        """Rewards [B]: the reward model's scores, or (reward.source=ranker) each answer's TextRank
        score scaled by its group's size and centred, n * s - 1: 0 for an average answer; minus
        reward.missing_eos_penalty for an answer cut at the token cap."""
        cfg = self.config.reward
        if cfg.source == "reward_model":
            scores = torch.tensor(self.score([r.prompt for r in rollouts], [r.response_text for r in rollouts]))
        else:
            scores = torch.tensor([len(g.scores) * s - 1.0 for g in groups for s in g.scores])
        return scores - cfg.missing_eos_penalty * torch.tensor([not r.finished for r in rollouts], dtype=scores.dtype)

    def train_policy(self, rollouts: list[Rollout], iteration: int,
                     groups: list[RankedGroup]) -> dict[str, float]:
        """One policy phase with the configured objective. rollouts: every sampled answer, in the
        order of `groups` (the ranker's output for the same prompts, answers in sampling order)."""
        if self.objective.kind == "preference":
            metrics = self._train_preference(groups, iteration, rollouts)
        else:
            metrics = self._train_policy_gradient(rollouts, groups, iteration)
        return {**metrics, **self._policy_weights_moved()}

    @torch.no_grad()
    def _policy_weights_moved(self) -> dict[str, float]:
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

    def _train_policy_gradient(self, rollouts: list[Rollout], groups: list[RankedGroup],
                               iteration: int) -> dict[str, float]:
        """Scores, advantages from the objective, clipped updates; a critic where it has one."""
        cfg, objective, params = self.config.policy, self.objective, self._objective_params()
        start = time.perf_counter()
        if objective.uses_value_model:
            self._ensure_value_model()
        batch = token_batch(rollouts, self.pad_id)
        mask = batch["mask"]
        engine_logprobs = pad_floats([r.logprobs for r in rollouts], mask.shape[1])
        has_engine_logprobs = all(len(r.logprobs) == len(r.response_ids) for r in rollouts)
        reuse = cfg.old_logprobs == "engine" and has_engine_logprobs
        stats = self._rollout_statistics(batch, engine_logprobs if reuse else None)
        scores = self._sequence_scores(rollouts, groups)
        group = torch.repeat_interleave(torch.arange(len(groups)), torch.tensor([len(g.answers) for g in groups]))
        values = stats["old_values"] * mask if stats["old_values"] is not None else None
        advantages, returns, metrics = objective.advantages(
            RolloutBatch(scores, group, stats["old_logprobs"], stats["ref_logprobs"], mask, values), params)

        self.policy.module.train()
        generator = torch.Generator().manual_seed(int(self._rng(iteration, phase=2).integers(2**31)))
        step_metrics: dict[str, float] = {}  # per-step metrics weighted by this rank's token share
        minibatches = [rows for _ in range(cfg.epochs) for rows in
                       chunks(len(rollouts), cfg.minibatch_size, torch.randperm(len(rollouts), generator=generator))]
        for step, minibatch in enumerate(minibatches):
            rows, real = self.ranks.share(minibatch)
            tokens, whole = mask[rows].sum().item() * real, max(1.0, mask[minibatch].sum().item())
            weight = self.ranks.loss_weight(tokens, whole, real)
            logprobs = self.forward.logprobs(self.policy, batch, rows)
            if step == 0 and has_engine_logprobs:  # before any update: are the engine's log-probs ours?
                gap = ((engine_logprobs[rows] - logprobs.detach()).abs() * mask[rows]).sum().item() * real
                gap, gap_tokens = self.ranks.sum([gap, tokens])
                metrics["engine_logprob_gap"] = gap / gap_tokens
            loss, step_loss_metrics = objective.loss(
                PolicyLossInputs(logprobs, stats["old_logprobs"][rows], advantages[rows], mask[rows],
                                 stats["ref_logprobs"][rows]), params)
            self.policy.backward((loss * weight).to(self.device))
            self.policy.step()
            self.policy_is_reference = False
            if objective.uses_value_model:
                self.value.module.train()
                new_values = self.forward.values(self.value.module, batch, rows)
                v_loss, value_metrics = objective.value_loss(new_values, stats["old_values"][rows],
                                                             returns[rows], mask[rows], params)
                self.value.backward((self.config.ppo.vf_coef * v_loss * weight).to(self.device))
                self.value.step()
                step_loss_metrics = {**step_loss_metrics, **value_metrics}
            share = tokens / whole
            for key, value in step_loss_metrics.items():
                step_metrics[key] = step_metrics.get(key, 0.0) + value * share
            self._report("policy", iteration, step + 1, len(minibatches))
        seconds = time.perf_counter() - start
        response_tokens = int(mask.sum().item())
        metrics.update(self.ranks.merged_means(step_metrics, len(minibatches)))
        metrics.update({
            "reward_mean": scores.mean().item(),
            "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
            "policy_tokens_per_second": response_tokens * cfg.epochs / seconds,
        })
        return metrics

    def _preference_items(self, groups: list[RankedGroup]) -> list[list[tuple[str, str]]]:
        """Each item is one pair (chosen, rejected) or one ranked list, as (prompt, answer) rows, best first."""
        if self.objective.preference_input == "pairs":
            return [[(p.prompt, p.chosen), (p.prompt, p.rejected)] for g in groups for p in g.pairs]
        return [[(g.prompt, g.answers[i]) for i in g.ranked] for g in groups if len(g.ranked) >= 2]

    def _as_rollouts(self, rows: list[tuple[str, str]], sampled: dict | None = None) -> list[Rollout]:
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

    def _sampled_rows(self, rollouts: list[Rollout]) -> dict[tuple[str, str], Rollout]:
        """The rollouts by (prompt, answer text), where the learner trains on sampled tokens."""
        if self.config.policy.answer_tokens != "sampled":
            return {}
        return {(r.prompt, r.response_text): r for r in rollouts}

    @torch.no_grad()
    def _sequence_logprobs(self, model, rows: list[tuple[str, str]],
                           sampled: dict | None = None) -> dict[tuple[str, str], float]:
        """log pi(answer | prompt) of each distinct row, each computed once: an answer sits in
        several pairs (a default iteration's 416 pair rows hold about 176 distinct ones). Rows go
        through in minibatches of similar length, so that little of each is padding."""
        distinct = list(dict.fromkeys(rows))
        rollouts = self._as_rollouts(distinct, sampled)
        batch = token_batch(rollouts, self.pad_id)
        by_length = torch.tensor(sorted(range(len(distinct)),
                                        key=lambda i: len(rollouts[i].prompt_ids) + len(rollouts[i].response_ids)))
        values = torch.empty(len(distinct))
        for part in chunks(len(distinct), self.config.policy.minibatch_size, by_length):
            values[part] = sequence_logprobs(self.forward.logprobs(model, batch, part), batch["mask"][part])
        return dict(zip(distinct, values.tolist()))

    def implicit_rewards(self, prompts: list[str], answers: list[str]) -> list[float]:
        """beta * log(pi(answer | prompt) / pi_ref(answer | prompt)): the reward by which dpo and
        listwise, which train no reward model, teach the policy to order answers."""
        rows = list(zip(prompts, answers))
        self.policy.module.eval()
        policy = self._sequence_logprobs(self.policy, rows)
        reference = self._sequence_logprobs(self.reference, rows)
        return [self.config.policy.beta * (policy[row] - reference[row]) for row in rows]

    def answer_logprobs(self, prompts: list[str], answers: list[str]) -> list[float]:
        """Mean per-token log pi(answer | prompt) under the policy as it is now (teacher forcing, the
        run's dtype): the evaluation's ref_logprob, for human reference answers (cut at
        eval.max_new_tokens tokens)."""
        from crowdless.likelihood import answer_logprobs

        mc = self.config.model
        self.policy.module.eval()
        return answer_logprobs(self.policy.module, self.tokenizer, prompts, answers,
                                   use_chat_template=mc.use_chat_template, max_prompt_tokens=mc.max_prompt_tokens,
                                   max_answer_tokens=self.config.eval.max_new_tokens,
                                   batch_size=self.config.policy.minibatch_size)

    def _train_preference(self, groups: list[RankedGroup], iteration: int,
                          rollouts: list[Rollout]) -> dict[str, float]:
        """dpo / listwise: sequence log-probs of ranked answers under the policy and the reference."""
        cfg, objective, params = self.config.policy, self.objective, self._objective_params()
        start = time.perf_counter()
        items = self._preference_items(groups)
        sampled = self._sampled_rows(rollouts)
        if not items:
            return {"policy_loss": float("nan"), "preference_items": 0}
        rng = self._rng(iteration, phase=2)
        per_step = max(1, cfg.minibatch_size // max(len(item) for item in items))
        order = [int(i) for _ in range(cfg.epochs) for i in rng.permutation(len(items))]
        step_metrics: dict[str, float] = {}  # per-step metrics weighted by this rank's share of items
        steps = [order[i:i + per_step] for i in range(0, len(order), per_step)]
        shares = [self.ranks.share(whole_step) for whole_step in steps]
        # the frozen reference's log-probs once per phase, each distinct row once
        reference = self._sequence_logprobs(self.reference, [row for chosen, _ in shares for i in chosen
                                                             for row in items[i]], sampled)
        self.policy.module.train()
        tokens = 0
        for step, (whole_step, (chosen, real)) in enumerate(zip(steps, shares)):
            chunk = [items[i] for i in chosen]
            width = max(map(len, chunk))
            rows = [row for item in chunk for row in item]
            batch = token_batch(self._as_rollouts(rows, sampled), self.pad_id)
            ref = torch.tensor([reference[row] for row in rows])
            logps = sequence_logprobs(self.forward.logprobs(self.policy, batch, torch.arange(len(rows))),
                                      batch["mask"])
            tokens += int(batch["mask"].sum()) * real
            index, valid = [], []
            offset = 0
            for item in chunk:  # [G, K] positions into the flat rows, padded lists masked
                index.append([offset + min(k, len(item) - 1) for k in range(width)])
                valid.append([k < len(item) for k in range(width)])
                offset += len(item)
            index_t = torch.tensor(index)
            loss, metrics = objective.loss(PreferenceBatch(logps[index_t], ref[index_t], torch.tensor(valid)), params)
            self.policy.backward((loss * self.ranks.loss_weight(len(chosen), len(whole_step), real)).to(self.device))
            self.policy.step()
            self.policy_is_reference = False
            share = len(chosen) / len(whole_step) if real else 0.0
            for key, value in metrics.items():
                step_metrics[key] = step_metrics.get(key, 0.0) + value * share
            self._report("policy", iteration, step + 1, len(steps))
        seconds = time.perf_counter() - start
        tokens = self.ranks.sum([tokens])[0]
        summary = self.ranks.merged_means(step_metrics, len(steps))
        summary.update({"policy_loss": summary.get(f"{objective.name}_loss", float("nan")),
                        "preference_items": len(items), "policy_tokens_per_second": tokens / seconds})
        if sampled:  # the share of trained answers that are sampled token rows (the rest: noised)
            rows = {row for item in items for row in item}
            summary["preference_rows_sampled"] = sum(row in sampled for row in rows) / len(rows)
        return summary

    # ---- weights out ----------------------------------------------------------------------
    def policy_state(self) -> dict[str, torch.Tensor] | None:
        """The policy's full state dict on rank 0, None on the others (under ZeRO-3 every rank
        takes part in gathering it; under ZeRO-2 rank 0 holds every weight)."""
        if self.rank != 0 and self.config.learner.zero_stage != 3:
            return None
        state = full_state_dict(self.policy, self.config.learner)
        return state if self.rank == 0 else None

    def portable_policy_state(self) -> PortableState | None:
        """policy_state() as the rollout workers read it from Ray's object store (cluster/weight_sync.py)."""
        state = self.policy_state()
        return None if state is None else portable_state(state)

    def _engines(self) -> list[tuple[str, object, object]]:
        """(folder name, DeepSpeed engine, tokenizer) of every model this objective trains."""
        return [(name, engine, tokenizer) for name, engine, tokenizer in (
            ("policy", self.policy, self.tokenizer), ("reward_model", self.reward, self.reward_tokenizer),
            ("value_model", self.value, self.tokenizer)) if engine is not None]

    def save_checkpoint(self, directory: str) -> None:
        """HF folders policy/, reward_model/, value_model/ (+ tokenizers), the replay buffer and
        training_state/ (crowdless/learner/checkpoint.py): a resumed run continues this one."""
        checkpoint.save_checkpoint(Path(directory), self._engines(), self.config.learner, self.rank,
                                   self.world_size, self.replay)

    def load_training_state(self, directory: str) -> list[str]:
        """Optimizer states and RNG from a checkpoint's training_state/; the engines restored
        (none where the checkpoint came from another group size or ZeRO stage: moments restart)."""
        restored = checkpoint.load_training_state(Path(directory), self._engines(), self.config.learner,
                                                  self.rank, self.world_size)
        self.policy_is_reference = self.policy_is_reference and "policy" not in restored
        return restored
