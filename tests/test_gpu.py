"""The gpu tier: the learner on CUDA (DeepSpeed ZeRO-2, bf16, NCCL). Runs wherever CUDA is present
(`python -m pytest -m gpu`, or bench/gpu_tier.sh on a machine with neither Ray nor vLLM); skipped
elsewhere (tests/conftest.py)."""

import zlib

import numpy as np
import pytest
import torch

from configs.schema import load_config

pytestmark = pytest.mark.gpu


class SeededEmbedder:
    """Stands in for the sentence embedder, whose weights need not be on a GPU machine: these
    tests check the learner on CUDA, and any ranking of the answers gives it groups to train on."""

    def encode(self, texts, **_):
        vectors = np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=32) for t in texts])
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _batch(config, model_dir):
    from test_workers import _rollouts_and_groups

    return _rollouts_and_groups(config, model_dir, SeededEmbedder())


def _changed(before, after):
    return max((after[n].float() - before[n].float()).abs().max().item() for n in before)


def test_full_method_trains_in_bf16_on_cuda_and_resumes(tmp_path, tiny_model_dir):
    """Reward model, then PPO with its value model, all three DeepSpeed engines in bf16 on the
    GPU; the rollout workers' weights come back on the CPU; a checkpoint written on CUDA
    restores every engine's optimizer state into a new learner, which trains on."""
    from test_workers import iteration_pairs

    from actors.learner_worker import LearnerWorker
    from crowdless.learner.replay import load_replay

    config = load_config("tiny", [f"run.dir={tmp_path / 'run'}", "model.dtype=bfloat16",
                                  "learner.zero_stage=2"])  # ZeRO-2 in bf16: one rank alone would take stage 0
    rollouts, groups = _batch(config, tiny_model_dir)
    learner = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
    assert learner.models.device.type == "cuda"
    for _, engine, _ in learner._engines():
        assert next(engine.module.parameters()).is_cuda and engine.bfloat16_enabled()
    start = learner.policy_state()
    reward = learner.train_reward(iteration_pairs(1), 1)
    metrics = learner.train_policy(rollouts, 1, groups)
    after = learner.policy_state()
    assert np.isfinite(reward["rm_loss"]) and np.isfinite(metrics["policy_loss"])
    assert metrics["policy_tokens_per_second"] > 0 and all(t.device.type == "cpu" for t in after.values())
    assert _changed(start, after) > 0

    learner.save_checkpoint(str(tmp_path))
    resumed = LearnerWorker(config, str(tmp_path / "policy"), tiny_model_dir, str(tmp_path / "reward_model"),
                            str(tmp_path / "value_model"), load_replay(tmp_path / "replay.jsonl"))
    assert resumed.load_training_state(str(tmp_path)) == ["policy", "reward_model", "value_model"]
    restored = resumed.policy_state()
    assert _changed(after, restored) == 0
    resumed.train_reward(iteration_pairs(2), 2)
    resumed.train_policy(rollouts, 2, groups)
    assert _changed(restored, resumed.policy_state()) > 0


def test_grpo_with_lora_on_cuda(tmp_path, tiny_model_dir):
    """The critic-free path with the ranker's scores and LoRA adapters: no reward or value model,
    and the merged weights the rollout workers get differ from the start."""
    from actors.learner_worker import LearnerWorker

    config = load_config("tiny", [f"run.dir={tmp_path}", "model.dtype=bfloat16", "policy.objective=grpo",
                                  "reward.source=ranker", "learner.lora_rank=4"])
    rollouts, groups = _batch(config, tiny_model_dir)
    learner = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
    assert learner.reward is None and learner.value is None
    start = learner.policy_state()
    learner.train_policy(rollouts, 1, groups)
    assert start.keys() == learner.policy_state().keys()
    assert _changed(start, learner.policy_state()) > 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_ranks_over_nccl_match_one(ray_local, tmp_path, tiny_model_dir):
    from actors.learner_worker import LearnerWorker
    from cluster.learner_group import LearnerGroup

    overrides = [f"run.dir={tmp_path}", "policy.objective=grpo", "reward.source=ranker",
                 "resources.learner_gpus=1", "resources.learner_cpus=0.5"]
    config = load_config("tiny", overrides)
    rollouts, groups = _batch(config, tiny_model_dir)
    single = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
    expected = single.train_policy(rollouts, 1, groups)
    group_config = load_config("tiny", overrides + ["resources.learner_workers=2"])
    group = LearnerGroup(group_config, LearnerWorker,
                         (group_config, tiny_model_dir, tiny_model_dir, tiny_model_dir, None, None), env={})
    try:
        got = group.run("train_policy", rollouts, 1, groups)
    finally:
        group.shutdown()
    assert got["policy_loss"] == pytest.approx(expected["policy_loss"], rel=1e-3, abs=1e-6)
