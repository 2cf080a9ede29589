"""The gpu tier: the learner on CUDA (DeepSpeed, bf16, NCCL). Runs wherever CUDA is present
(`python -m pytest -m gpu`); skipped elsewhere (tests/conftest.py). Not yet run: the machines
this project was built on have no GPU."""

import pytest
import torch

from configs.schema import load_config

pytestmark = pytest.mark.gpu


def _batch(config, model_dir, embedder):
    from test_workers import _rollouts_and_groups

    return _rollouts_and_groups(config, model_dir, embedder)


def test_learner_trains_in_bf16_on_cuda(tmp_path, tiny_model_dir, embedder):
    from actors.learner_worker import LearnerWorker

    config = load_config("tiny", [f"run.dir={tmp_path}", "model.dtype=bfloat16", "policy.objective=grpo",
                                  "reward.source=ranker"])
    rollouts, groups = _batch(config, tiny_model_dir, embedder)
    learner = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
    assert learner.device.type == "cuda" and next(learner.policy.module.parameters()).is_cuda
    start = learner.policy_state()
    metrics = learner.train_policy(rollouts, 1, groups)
    after = learner.policy_state()
    assert metrics["policy_tokens_per_second"] > 0 and all(t.device.type == "cpu" for t in after.values())
    assert max((after[n].float() - start[n].float()).abs().max().item() for n in start) > 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_ranks_over_nccl_match_one(ray_local, tmp_path, tiny_model_dir, embedder):
    from actors.learner_worker import LearnerWorker
    from cluster.learner_group import LearnerGroup

    overrides = [f"run.dir={tmp_path}", "policy.objective=grpo", "reward.source=ranker",
                 "resources.learner_gpus=1", "resources.learner_cpus=0.5"]
    config = load_config("tiny", overrides)
    rollouts, groups = _batch(config, tiny_model_dir, embedder)
    single = LearnerWorker(config, tiny_model_dir, tiny_model_dir, tiny_model_dir)
    expected = single.train_policy(rollouts, 1, groups)
    group_config = load_config("tiny", overrides + ["resources.learner_workers=2"])
    group = LearnerGroup(group_config, (group_config, tiny_model_dir, tiny_model_dir, tiny_model_dir, None, None),
                         env={})
    try:
        got = group.run("train_policy", rollouts, 1, groups)
    finally:
        group.shutdown()
    assert got["policy_loss"] == pytest.approx(expected["policy_loss"], rel=1e-3, abs=1e-6)
