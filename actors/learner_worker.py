"""LearnerWorker: trains the policy with policy.objective on DeepSpeed (and, for the objectives
that use one, the reward model on the ranked pairs first).

One worker is one rank of a learner group (cluster/learner_group.py): every rank gets the same
calls with the same whole batch, in the same order, computes the batch statistics, and trains on
its share of each step; DeepSpeed averages the gradients across ranks. Each rank's loss is
weighted by its share of the step's tokens (or pairs, or lists), so the group takes the step one
rank would take on the whole batch (crowdless/learner/ranks.py, steps.py).

This worker builds the models and hands them to the phases in crowdless/learner/:
reward_model.py, policy_gradient.py and preference.py train; engines.py builds the DeepSpeed
engines, tokens.py the token batches and response log-probs, checkpoint.py and replay.py hold
what a checkpoint keeps.

Models (all Hugging Face, so checkpoints load with transformers and vLLM):
    policy      AutoModelForCausalLM, DeepSpeed engine
    reference   frozen copy of the starting policy (no engine, no gradients)
    reward      AutoModelForSequenceClassification (scalar `score` head), DeepSpeed engine
    value       same class as the reward model, read per token; starts from the reward
                model (default) or the policy; DeepSpeed engine
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch

from actors import node_id, start_worker_process
from algos.objectives import get_objective
from cluster.rendezvous import init_process_group
from cluster.weight_sync import PortableState, portable_state
from configs.schema import CrowdlessConfig
from crowdless.learner import checkpoint
from crowdless.learner.engines import build_engine, full_state_dict, scalar_model
from crowdless.learner.policy import PolicyModels
from crowdless.learner.policy_gradient import sequence_rewards, train_policy_gradient
from crowdless.learner.preference import train_preference
from crowdless.learner.ranks import RankShare
from crowdless.learner.reward_model import RewardModel
from crowdless.learner.tokens import ResponseForward
from crowdless.models.loading import attention_implementation, resolve_dtype
from crowdless.data.records import PreferencePair, RankedGroup, Rollout


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
        use_cuda = torch.cuda.is_available()
        device = torch.device("cuda" if use_cuda else "cpu")
        self.dtype = getattr(torch, resolve_dtype(config.model.dtype))
        torch.manual_seed(config.run.seed)
        init_process_group(use_cuda, rank, world_size, address)

        self.tokenizer = AutoTokenizer.from_pretrained(policy_path)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.attention = attention_implementation(self.dtype, use_cuda)
        policy = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch.float32,
                                                      attn_implementation=self.attention)
        # Most Hugging Face causal LMs can apply their LM head to the last positions only.
        head_on_responses_only = "logits_to_keep" in inspect.signature(type(policy).forward).parameters
        # Gradient checkpointing drops a key/value cache in training, so the prompts' shared
        # prefix can only be computed once without it.
        share_prefix = not config.learner.gradient_checkpointing
        if config.learner.gradient_checkpointing:
            policy.gradient_checkpointing_enable()
        reference = AutoModelForCausalLM.from_pretrained(reference_path, dtype=self.dtype,
                                                         attn_implementation=self.attention)
        reference.to(device).eval().requires_grad_(False)
        # Until the policy's first step it is the reference (a run's first iteration): the
        # reference's log-probs are then the sampling policy's, and need no forward pass.
        self.models = PolicyModels(
            config, self._engine(policy, config.policy.lr, config.policy.minibatch_size), reference,
            self.tokenizer, self.pad_id, ResponseForward(device, share_prefix, head_on_responses_only),
            RankShare(rank, world_size), device,
            policy_is_reference=Path(policy_path).resolve() == Path(reference_path).resolve())
        self.objective = get_objective(config.policy.objective)
        self.reward: RewardModel | None = None
        if config.trains_reward_model:
            engine = self._engine(self._scalar_model(reward_path), config.reward.lr, config.reward.batch_size)
            self.reward = RewardModel(engine, AutoTokenizer.from_pretrained(reward_path), config,
                                      self.models.ranks, share_prefix, list(replay or []))
        self.unused_replay = [] if self.reward else list(replay or [])  # kept, for a later run that uses it
        if value_path is not None and self.objective.uses_value_model:
            self.models.value = self._engine(self._scalar_model(value_path), config.ppo.value_lr,
                                             config.policy.minibatch_size)
        self.progress = progress

    def ready(self) -> str:
        return node_id()

    def _reporter(self, phase: str, iteration: int):
        """report(done, total) for one phase, sent to the progress board after each optimiser step."""
        def report(done: int, total: int) -> None:
            if self.progress is not None:
                self.progress.update.remote(phase, iteration, done, total)
        return report

    def _rng(self, iteration: int, phase: int) -> np.random.Generator:
        """Seeded by (run seed, iteration, phase): a resumed run draws the same numbers."""
        return np.random.default_rng([self.config.run.seed, iteration, phase])

    def _scalar_model(self, path: str):
        return scalar_model(path, self.pad_id, self.attention, self.config.learner.gradient_checkpointing)

    def _engine(self, model, lr: float, micro_batch: int):
        return build_engine(model, self.config.learner, self.dtype == torch.bfloat16, lr, micro_batch)

    @property
    def policy(self):
        return self.models.policy

    @property
    def value(self):
        return self.models.value

    @property
    def replay(self) -> list[PreferencePair]:
        return self.reward.replay if self.reward else self.unused_replay

    # ---- scoring ----------------------------------------------------------------------------
    def reward_scorer(self) -> tuple[str, str] | None:
        """(name, method) of what scores answers as this run's reward, for the held-out order
        check: a trained reward model's `score`, a preference objective's `implicit_rewards`
        (beta * log pi / pi_ref), or None where rewards came from the ranker alone."""
        name = self.config.reward_scorer
        return None if name is None else (name, {"reward_model": "score", "implicit_reward": "implicit_rewards"}[name])

    def score(self, prompts: list[str], answers: list[str]) -> list[float]:
        """Reward model scores of answers to prompts (used by PPO and by serving)."""
        return self.reward.score(prompts, answers)

    def implicit_rewards(self, prompts: list[str], answers: list[str]) -> list[float]:
        """beta * log(pi(answer | prompt) / pi_ref(answer | prompt)): the reward by which dpo and
        listwise, which train no reward model, teach the policy to order answers."""
        rows = list(zip(prompts, answers))
        self.policy.module.eval()
        policy = self.models.sequence_logprobs(self.policy, rows)
        reference = self.models.sequence_logprobs(self.models.reference, rows)
        return [self.config.policy.beta * (policy[row] - reference[row]) for row in rows]

    def answer_logprobs(self, prompts: list[str], answers: list[str]) -> list[float]:
        """Mean per-token log pi(answer | prompt) under the policy as it is now (teacher forcing, the
        run's dtype): the evaluation's ref_logprob, for human reference answers (cut at
        eval.max_new_tokens tokens)."""
        from crowdless.models.likelihood import answer_logprobs

        mc = self.config.model
        self.policy.module.eval()
        return answer_logprobs(self.policy.module, self.tokenizer, prompts, answers,
                               use_chat_template=mc.use_chat_template, max_prompt_tokens=mc.max_prompt_tokens,
                               max_answer_tokens=self.config.eval.max_new_tokens,
                               batch_size=self.config.policy.minibatch_size)

    # ---- training phases ----------------------------------------------------------------------
    def train_reward(self, pairs: list[PreferencePair], iteration: int) -> dict[str, float]:
        """The reward model's phase (crowdless/learner/reward_model.py); nothing to do (and no
        metrics) when the objective needs no reward model."""
        if self.reward is None:
            return {}
        return self.reward.train(pairs, self._rng(iteration, phase=1), self.models.device,
                                 self._reporter("reward_model", iteration))

    def _ensure_value_model(self) -> None:
        if self.models.value is not None:
            return
        cfg = self.config.ppo
        if cfg.value_init == "reward_model" and self.reward is not None:  # its weights as they are now
            model = self._scalar_model(self.reward_path)
            model.load_state_dict(full_state_dict(self.reward.engine, self.config.learner))  # into fp32 params
        else:
            model = self._scalar_model(self.policy_path)
        self.models.value = self._engine(model, cfg.value_lr, self.config.policy.minibatch_size)

    def train_policy(self, rollouts: list[Rollout], iteration: int,
                     groups: list[RankedGroup]) -> dict[str, float]:
        """One policy phase with the configured objective. rollouts: every sampled answer, in the
        order of `groups` (the ranker's output for the same prompts, answers in sampling order)."""
        rng, report = self._rng(iteration, phase=2), self._reporter("policy", iteration)
        if self.objective.kind == "preference":
            metrics = train_preference(self.models, self.objective, groups, rollouts, rng, report)
        else:
            if self.objective.uses_value_model:
                self._ensure_value_model()
            scored = self.reward.score([r.prompt for r in rollouts], [r.response_text for r in rollouts]) \
                if self.reward is not None else None
            rewards = sequence_rewards(self.config.reward, rollouts, groups, scored)
            metrics = train_policy_gradient(self.models, self.objective, rollouts, groups, rewards, rng, report)
        return {**metrics, **self.models.weights_moved()}

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
            ("policy", self.policy, self.tokenizer),
            ("reward_model", self.reward and self.reward.engine, self.reward and self.reward.tokenizer),
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
        self.models.policy_is_reference = self.models.policy_is_reference and "policy" not in restored
        return restored
