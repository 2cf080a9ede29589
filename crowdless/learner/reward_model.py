"""The reward model of the objectives scored by one (reward.source=reward_model): trained on the
ranker's preference pairs with a replay of earlier ones, then scoring the policy's answers."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from algos.losses import pairwise_reward_loss
from configs.schema import CrowdlessConfig
from crowdless.learner.ranks import RankShare
from crowdless.learner.replay import remember
from crowdless.learner.steps import StepLosses, train_steps
from crowdless.learner.tokens import chunks
from crowdless.data.records import PreferencePair
from crowdless.models.reward import encode_for_reward, sequence_scores


class RewardModel:
    """engine: a DeepSpeed engine of a scalar-head model (crowdless/learner/engines.py)."""

    def __init__(self, engine, tokenizer, config: CrowdlessConfig, ranks: RankShare, share_prefix: bool,
                 replay: list[PreferencePair]):
        self.engine, self.tokenizer, self.config = engine, tokenizer, config
        self.ranks, self.share_prefix = ranks, share_prefix
        self.replay = replay

    def _encode(self, prompts: list[str], answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_for_reward(self.tokenizer, prompts, answers, self.config.reward.max_length,
                                 self.config.model.use_chat_template, self.config.model.max_prompt_tokens)

    @torch.no_grad()
    def score(self, prompts: list[str], answers: list[str]) -> list[float]:
        """Scores of answers to prompts (PPO's rewards, and serving's /v1/rewards)."""
        module = self.engine.module
        module.eval()
        scores = []
        for index in chunks(len(prompts), self.config.reward.batch_size * 4):
            ids, attention = self._encode([prompts[i] for i in index], [answers[i] for i in index])
            scores += sequence_scores(module, ids, attention, self.share_prefix).tolist()
        return scores

    def _pair_losses(self, pairs: list[PreferencePair]):
        ids, attention = self._encode([p.prompt for p in pairs] * 2,
                                      [p.chosen for p in pairs] + [p.rejected for p in pairs])
        scores = sequence_scores(self.engine.module, ids, attention, self.share_prefix)
        return pairwise_reward_loss(scores[: len(pairs)], scores[len(pairs) :])

    @torch.no_grad()
    def evaluate_pairs(self, pairs: list[PreferencePair]) -> dict[str, float]:
        """Mean loss and accuracy on pairs, without training on them."""
        if not pairs:
            return {"rm_loss": float("nan"), "rm_accuracy": float("nan")}
        self.engine.module.eval()
        totals = {"rm_loss": 0.0, "rm_accuracy": 0.0}
        for index in chunks(len(pairs), self.config.reward.batch_size * 2):
            _, metrics = self._pair_losses([pairs[i] for i in index])
            for key in totals:
                totals[key] += metrics[key] * len(index)
        return {key: value / len(pairs) for key, value in totals.items()}

    def train(self, pairs: list[PreferencePair], rng: np.random.Generator, device: torch.device,
              report: Callable[[int, int], None]) -> dict[str, float]:
        """Hold out reward.eval_fraction of the pairs, train on the rest plus a replay of earlier
        pairs, and report the training loss and accuracy (each batch's, before its step, as TRL
        logs them: no extra pass over the pairs) and the held-out pairs' accuracy."""
        cfg = self.config.reward
        order = rng.permutation(len(pairs))
        n_eval = int(round(cfg.eval_fraction * len(pairs))) if len(pairs) > 1 else 0
        held_out = [pairs[i] for i in order[:n_eval]]
        fresh = [pairs[i] for i in order[n_eval:]]
        replayed = [self.replay[i] for i in rng.permutation(len(self.replay))[: cfg.replay_pairs]]
        train = fresh + replayed
        start = time.perf_counter()
        trained = {"rm_loss": float("nan"), "rm_train_accuracy": float("nan")}
        if train:
            self.engine.module.train()
            generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
            batches = [index for _ in range(cfg.epochs) for index in
                       chunks(len(train), cfg.batch_size, torch.randperm(len(train), generator=generator))]

            def step(share, whole, real: bool) -> StepLosses:
                loss, metrics = self._pair_losses([train[i] for i in share])
                return StepLosses([(self.engine, loss)], {"rm_loss": metrics["rm_loss"],
                                                          "rm_train_accuracy": metrics["rm_accuracy"]},
                                  len(share), len(whole))

            trained = train_steps(batches, self.ranks, step, device, report)
        train_seconds = time.perf_counter() - start
        held = self.evaluate_pairs(held_out)
        self.replay = remember(self.replay, fresh)
        return {
            **trained,
            "rm_accuracy": held["rm_accuracy"],
            "rm_eval_loss": held["rm_loss"],
            "rm_pairs_trained": len(train) * cfg.epochs,
            "rm_pairs_per_second": len(train) * cfg.epochs / train_seconds if train else 0.0,
        }
