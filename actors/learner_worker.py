"""LearnerWorker: trains the policy with policy.objective on DeepSpeed (and, for the objectives
that use one, the reward model on the ranked pairs first).

One worker is one rank of a learner group (cluster/learner_group.py): every rank gets the same
calls with the same whole batch, in the same order, computes the batch statistics, and trains on
its share of each minibatch; DeepSpeed averages the gradients across ranks. Each rank's loss is
weighted by its share of the minibatch's tokens (or pairs, or lists), so the group takes the
step one rank would take on the whole minibatch.

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
import json
import os
import time
from dataclasses import asdict
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
from crowdless.lora import add_lora, merged_state_dict
from crowdless.models import attention_implementation, resolve_dtype
from crowdless.reward import encode_for_reward, pad_right, sequence_scores, token_values
from crowdless.shared_prefix import forward_sharing_prefix, shared_prefix_length
from crowdless.prompts import encode_answer, encode_prompt
from crowdless.records import PreferencePair, RankedGroup, Rollout

REPLAY_KEEP = 2048  # most recent training pairs remembered for replay
ZERO_BUCKET_ELEMENTS = 2 * 10**7  # ZeRO reduce / all-gather bucket size
TRAINING_STATE = "training_state"  # checkpoint folder with optimizer and RNG states, for exact resume


def _chunks(n: int, size: int, order: torch.Tensor | None = None):
    order = torch.arange(n) if order is None else order
    for start in range(0, n, size):
        yield order[start : start + size]


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

    # ---- the group: each rank's share, and sums over ranks ------------------------------------
    def _my_share(self, items: torch.Tensor | list) -> tuple[torch.Tensor | list, bool]:
        """This rank's contiguous share of a minibatch (rows or items), and whether it is real.
        A rank whose share would be empty still runs a step (DeepSpeed reduces gradients across
        ranks in every step) on the minibatch's first entry, with weight 0."""
        if self.world_size == 1:
            return items, True
        size, extra = divmod(len(items), self.world_size)
        start = self.rank * size + min(self.rank, extra)
        share = items[start:start + size + (self.rank < extra)]
        return (share, True) if len(share) else (items[:1], False)

    def _sum_over_ranks(self, values: list[float]) -> list[float]:
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        total = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(total)
        return total.tolist()

    def _group_weight(self, mine: float, whole: float, real: bool) -> float:
        """Scale of this rank's mean loss so that DeepSpeed's average over ranks gives the mean
        over the whole minibatch: world_size x this rank's share of its units. 1 for one rank."""
        return self.world_size * mine / whole if real and self.world_size > 1 else float(real)

    def _merged_means(self, weighted_sums: dict[str, float], steps: int) -> dict[str, float]:
        """Per-step metrics, each step's value weighted by the rank's share of that step: summed
        over ranks and averaged over steps, the same figures one rank reports on the whole batch."""
        keys = sorted(weighted_sums)
        totals = self._sum_over_ranks([weighted_sums[key] for key in keys])
        return {key: total / max(1, steps) for key, total in zip(keys, totals)}

    def _rng(self, iteration: int, phase: int) -> np.random.Generator:
        """Seeded by (run seed, iteration, phase): a resumed run draws the same numbers."""
        return np.random.default_rng([self.config.run.seed, iteration, phase])

    # ---- model construction ---------------------------------------------------------------
    def _scalar_model(self, path: str):
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, dtype=torch.float32, pad_token_id=self.pad_id, attn_implementation=self.attention
        )
        if not hasattr(model, "score"):
            raise ValueError(f"{path}: reward/value backbones need a `score` head (Llama, Qwen, GPT-2 ...)")
        if self.config.learner.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        return model

    def _engine(self, model, lr: float, micro_batch: int):
        """A DeepSpeed engine training `model` (with LoRA adapters added first, learner.lora_rank)."""
        import deepspeed

        learner = self.config.learner
        if learner.lora_rank:
            model = add_lora(model, learner.lora_rank, learner.lora_alpha, learner.lora_targets,
                             trainable=("score",))
            if learner.gradient_checkpointing:  # frozen embeddings: checkpointed blocks need a grad input
                model.enable_input_require_grads()

        ds_config = {
            "train_micro_batch_size_per_gpu": micro_batch,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": self.config.learner.max_grad_norm,
            "bf16": {"enabled": self.dtype == torch.bfloat16},
            # DeepSpeed's default 5e8-element buckets cost GBs per engine, times three engines.
            "zero_optimization": {"stage": self.config.learner.zero_stage,
                                  "reduce_bucket_size": ZERO_BUCKET_ELEMENTS,
                                  "allgather_bucket_size": ZERO_BUCKET_ELEMENTS,
                                  "stage3_prefetch_bucket_size": ZERO_BUCKET_ELEMENTS,
                                  "stage3_param_persistence_threshold": 10**5},
            # A torch AdamW: DeepSpeed's CPU Adam would JIT-compile for ~85 s on first use.
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 10**9,
        }
        # fused: one pass over the weights per step (CPU and CUDA), where the per-op kernels make
        # about ten, and the multi-tensor ones hold a model-sized temporary per op.
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                      weight_decay=0.0, fused=True)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
        return engine

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
        for index in _chunks(len(prompts), self.config.reward.batch_size * 4):
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
        for index in _chunks(len(pairs), self.config.reward.batch_size * 2):
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
                       _chunks(len(train), cfg.batch_size, torch.randperm(len(train), generator=generator))]
            for step, index in enumerate(batches):
                share, real = self._my_share(index)
                loss, metrics = self._pair_losses(self.reward, [train[i] for i in share])
                self.reward.backward(loss * self._group_weight(len(share), len(index), real))
                self.reward.step()
                weight = len(share) / len(index) if real else 0.0
                weighted["rm_loss"] += metrics["rm_loss"] * weight
                weighted["rm_train_accuracy"] += metrics["rm_accuracy"] * weight
                self._report("reward_model", iteration, step + 1, len(batches))
        train_seconds = time.perf_counter() - start
        held = self.evaluate_pairs(held_out)
        self.replay = (self.replay + fresh)[-REPLAY_KEEP:]
        trained = self._merged_means(weighted, len(batches)) if batches else {key: float("nan") for key in weighted}
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
            model.load_state_dict(self._full_state_dict(self.reward))  # copies into fp32 params
        else:
            model = self._scalar_model(self.policy_path)
        self.value = self._engine(model, cfg.value_lr, self.config.policy.minibatch_size)

    def _token_batch(self, rollouts: list[Rollout]) -> dict[str, torch.Tensor]:
        """Prompt + response rows, and where each response token sits: index [B, T] into the
        [B, L-1] grid of next-token log-probs, with mask [B, T] (1 = real response token)."""
        ids, attention = pad_right([r.prompt_ids + r.response_ids for r in rollouts], self.pad_id)
        lengths = torch.tensor([len(r.response_ids) for r in rollouts])
        width = int(lengths.max())
        steps = torch.arange(width)
        mask = (steps[None, :] < lengths[:, None]).float()
        starts = torch.tensor([len(r.prompt_ids) - 1 for r in rollouts])
        index = (starts[:, None] + steps[None, :]).clamp(max=ids.shape[1] - 2)
        return {"ids": ids, "attention": attention, "index": index, "mask": mask}

    @staticmethod
    def _rows(batch: dict, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ids, attention [b, W] and index [b, T] of some rows, cut to their longest real row:
        the batch is padded to its longest row, and a minibatch need not compute that padding."""
        attention = batch["attention"][rows]
        width = max(2, int(attention.sum(dim=1).max()))
        index = batch["index"][rows].clamp(max=width - 2)  # clamped positions are masked out
        return batch["ids"][rows, :width], attention[:, :width], index

    def _response_logprobs(self, model, batch: dict, rows: torch.Tensor) -> torch.Tensor:
        ids, attention, index = (t.to(self.device) for t in self._rows(batch, rows))
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
        logprobs = -torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), following.flatten(),
                                                      reduction="none").view(following.shape)
        return logprobs.gather(1, index - offset).cpu()

    def _response_values(self, module, batch: dict, rows: torch.Tensor) -> torch.Tensor:
        ids, attention, index = self._rows(batch, rows)
        prefix = shared_prefix_length(ids, int(index.min())) if self.share_prefix else 0
        values = token_values(module, ids, attention, prefix)
        return values.gather(1, (index - prefix).to(values.device)).cpu()

    @torch.no_grad()
    def _rollout_statistics(self, batch: dict, engine_logprobs: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Log-probs of the sampling policy and the reference, and values when there is a critic.
        The sampling policy's log-probs are the engine's own where given: it held the learner's
        weights when it sampled, so a forward pass here would only repeat them. Likewise the
        reference's, while the policy has not moved from it."""
        self.policy.module.eval()
        parts = {"old_logprobs": [], "ref_logprobs": [], "old_values": []}
        for rows in _chunks(len(batch["ids"]), self.config.policy.minibatch_size):
            if engine_logprobs is None:
                parts["old_logprobs"].append(self._response_logprobs(self.policy.module, batch, rows))
            if not self.policy_is_reference:
                parts["ref_logprobs"].append(self._response_logprobs(self.reference, batch, rows))
            if self.value is not None:
                self.value.module.eval()
                parts["old_values"].append(self._response_values(self.value.module, batch, rows))
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
        batch = self._token_batch(rollouts)
        mask = batch["mask"]
        engine_logprobs = _pad_floats([r.logprobs for r in rollouts], mask.shape[1])
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
                       _chunks(len(rollouts), cfg.minibatch_size, torch.randperm(len(rollouts), generator=generator))]
        for step, minibatch in enumerate(minibatches):
            rows, real = self._my_share(minibatch)
            tokens, whole = mask[rows].sum().item() * real, max(1.0, mask[minibatch].sum().item())
            weight = self._group_weight(tokens, whole, real)
            logprobs = self._response_logprobs(self.policy, batch, rows)
            if step == 0 and has_engine_logprobs:  # before any update: are the engine's log-probs ours?
                gap = ((engine_logprobs[rows] - logprobs.detach()).abs() * mask[rows]).sum().item() * real
                gap, gap_tokens = self._sum_over_ranks([gap, tokens])
                metrics["engine_logprob_gap"] = gap / gap_tokens
            loss, step_loss_metrics = objective.loss(
                PolicyLossInputs(logprobs, stats["old_logprobs"][rows], advantages[rows], mask[rows],
                                 stats["ref_logprobs"][rows]), params)
            self.policy.backward((loss * weight).to(self.device))
            self.policy.step()
            self.policy_is_reference = False
            if objective.uses_value_model:
                self.value.module.train()
                new_values = self._response_values(self.value.module, batch, rows)
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
        metrics.update(self._merged_means(step_metrics, len(minibatches)))
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
        batch = self._token_batch(rollouts)
        by_length = torch.tensor(sorted(range(len(distinct)),
                                        key=lambda i: len(rollouts[i].prompt_ids) + len(rollouts[i].response_ids)))
        values = torch.empty(len(distinct))
        for part in _chunks(len(distinct), self.config.policy.minibatch_size, by_length):
            values[part] = sequence_logprobs(self._response_logprobs(model, batch, part), batch["mask"][part])
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
        shares = [self._my_share(whole_step) for whole_step in steps]
        # the frozen reference's log-probs once per phase, each distinct row once
        reference = self._sequence_logprobs(self.reference, [row for chosen, _ in shares for i in chosen
                                                             for row in items[i]], sampled)
        self.policy.module.train()
        tokens = 0
        for step, (whole_step, (chosen, real)) in enumerate(zip(steps, shares)):
            chunk = [items[i] for i in chosen]
            width = max(map(len, chunk))
            rows = [row for item in chunk for row in item]
            batch = self._token_batch(self._as_rollouts(rows, sampled))
            ref = torch.tensor([reference[row] for row in rows])
            logps = sequence_logprobs(self._response_logprobs(self.policy, batch, torch.arange(len(rows))),
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
            self.policy.backward((loss * self._group_weight(len(chosen), len(whole_step), real)).to(self.device))
            self.policy.step()
            self.policy_is_reference = False
            share = len(chosen) / len(whole_step) if real else 0.0
            for key, value in metrics.items():
                step_metrics[key] = step_metrics.get(key, 0.0) + value * share
            self._report("policy", iteration, step + 1, len(steps))
        seconds = time.perf_counter() - start
        tokens = self._sum_over_ranks([tokens])[0]
        summary = self._merged_means(step_metrics, len(steps))
        summary.update({"policy_loss": summary.get(f"{objective.name}_loss", float("nan")),
                        "preference_items": len(items), "policy_tokens_per_second": tokens / seconds})
        if sampled:  # the share of trained answers that are sampled token rows (the rest: noised)
            rows = {row for item in items for row in item}
            summary["preference_rows_sampled"] = sum(row in sampled for row in rows) / len(rows)
        return summary

    # ---- weights out ----------------------------------------------------------------------
    def _full_state_dict(self, engine) -> dict[str, torch.Tensor]:
        if self.config.learner.zero_stage == 3:
            return engine._zero3_consolidated_16bit_state_dict()
        if self.config.learner.lora_rank:
            return merged_state_dict(engine.module)
        # A copy per tensor: DeepSpeed's parameters are views into one flat buffer, which the
        # next step overwrites under a caller that holds the state, and a view pickled as a
        # torch tensor carries the whole buffer.
        return {name: tensor.detach().to("cpu", copy=True) for name, tensor in engine.module.state_dict().items()}

    def policy_state(self) -> dict[str, torch.Tensor] | None:
        """The policy's full state dict on rank 0, None on the others (under ZeRO-3 every rank
        takes part in gathering it; under ZeRO-2 rank 0 holds every weight)."""
        if self.rank != 0 and self.config.learner.zero_stage != 3:
            return None
        state = self._full_state_dict(self.policy)
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
        """HF folders policy/, reward_model/, value_model/ (+ tokenizers) that transformers and vLLM
        load, the replay buffer, and training_state/: each engine's DeepSpeed checkpoint (optimizer
        moments and fp32 master weights) and the torch RNG, so a resumed run continues this one."""
        root = Path(directory)
        for name, engine, tokenizer in self._engines():
            state = self._full_state_dict(engine) if self.rank == 0 or self.config.learner.zero_stage == 3 else None
            if self.rank == 0:
                engine.module.save_pretrained(root / name, state_dict=state)
                tokenizer.save_pretrained(root / name)
            # every rank writes its own partition of the optimizer state
            engine.save_checkpoint(str(root / TRAINING_STATE / name), tag=TRAINING_STATE, save_latest=False)
        torch.save({"torch_rng": torch.get_rng_state()}, root / TRAINING_STATE / _rng_file(self.rank))
        if self.rank == 0:
            (root / TRAINING_STATE / "group.json").write_text(
                json.dumps({"world_size": self.world_size, "zero_stage": self.config.learner.zero_stage}))
            with (root / "replay.jsonl").open("w") as out:
                for pair in self.replay:
                    out.write(json.dumps(asdict(pair)) + "\n")

    def load_training_state(self, directory: str) -> list[str]:
        """Optimizer states and RNG from a checkpoint's training_state/ (the models' weights came
        from its HF folders at construction). Returns the engines restored; a checkpoint without
        training_state/ (written before it existed, or pruned), or written by a learner group of
        another size or ZeRO stage (each rank saved its own optimizer partition, in its stage's
        layout), restores none: moments restart."""
        state = Path(directory) / TRAINING_STATE
        group = state / "group.json"
        # checkpoints from before the stage was recorded were written at the then default, ZeRO-2
        saved_by = {"world_size": 1, "zero_stage": 2, **(json.loads(group.read_text()) if group.exists() else {})}
        if (saved_by["world_size"], saved_by["zero_stage"]) != (self.world_size, self.config.learner.zero_stage):
            return []
        restored = []
        for name, engine, _ in self._engines():
            if (state / name / TRAINING_STATE).is_dir():
                engine.load_checkpoint(str(state / name), tag=TRAINING_STATE, load_module_strict=True,
                                       load_optimizer_states=True, load_lr_scheduler_states=True)
                restored.append(name)
        self.policy_is_reference = self.policy_is_reference and "policy" not in restored
        if (state / _rng_file(self.rank)).exists():
            torch.set_rng_state(torch.load(state / _rng_file(self.rank))["torch_rng"])
        return restored


def _rng_file(rank: int) -> str:
    return "rng.pt" if rank == 0 else f"rng-rank{rank}.pt"


def _pad_floats(rows: list[list[float]], width: int) -> torch.Tensor:
    return torch.tensor([r[:width] + [0.0] * (width - len(r[:width])) for r in rows])


def load_replay(path: Path) -> list[PreferencePair]:
    if not path.exists():
        return []
    return [PreferencePair(**json.loads(line)) for line in path.read_text().splitlines() if line]
