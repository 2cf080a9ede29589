"""The driver's terminal lines (jobs/train.py), without Ray."""

import pytest

from jobs.train import iteration_line

pytestmark = pytest.mark.unit

BASE = {"kl": 0.0123, "pairs": 92, "response_length": 44.3, "seconds_rollout": 19.0, "seconds_policy": 53.0}


def test_iteration_line_with_a_reward_model():
    line = iteration_line(2, 5, {**BASE, "reward_mean": 0.25, "rm_accuracy": 0.6, "eval_cosine": 0.3})
    assert line == ("[iter 2/5] reward +0.250  rm_acc 0.60  kl 0.0123  pairs 92  len 44.3  "
                    "held-out cosine 0.300  72s (rollout 19 policy 53)")


def test_iteration_line_without_a_reward_model_hides_the_centred_ranker_reward():
    line = iteration_line(1, 2, {**BASE, "reward_mean": 0.0})
    assert line == "[iter 1/2] kl 0.0123  pairs 92  len 44.3  72s (rollout 19 policy 53)"
