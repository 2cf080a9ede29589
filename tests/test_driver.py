"""The driver's terminal lines (jobs/train.py), without Ray."""

import json

import pytest

from jobs.train import iteration_line, precision_hint, print_summary

pytestmark = pytest.mark.unit

BASE = {"kl": 0.0123, "pairs": 92, "response_length": 44.3, "seconds_rollout": 19.0, "seconds_policy": 53.0}


def test_iteration_line_with_a_reward_model():
    line = iteration_line(2, 5, {**BASE, "reward_mean": 0.25, "rm_accuracy": 0.6, "eval_unseen_chrf": 14.2,
                                 "eval_unseen_ref_logprob": -4.71})
    assert line == ("[iter 2/5] reward +0.250  rm_acc 0.60  kl 0.0123  pairs 92  len 44.3  "
                    "unseen chrF 14.20 ref_logprob -4.71  72s (rollout 19 policy 53)")


def test_iteration_line_without_a_reward_model_hides_the_centred_ranker_reward():
    line = iteration_line(1, 2, {**BASE, "reward_mean": 0.0})
    assert line == "[iter 1/2] kl 0.0123  pairs 92  len 44.3  72s (rollout 19 policy 53)"


def test_iteration_line_of_dpo_shows_its_pair_accuracy_and_margin_not_a_kl():
    metrics = {"pairs": 208, "response_length": 45.8, "seconds_policy": 368.0, "dpo_loss": 0.33,
               "reward_accuracy": 0.9279, "reward_margin": 1.3637}
    assert iteration_line(2, 2, metrics) == ("[iter 2/2] pair_acc 0.93  margin 1.364  pairs 208  len 45.8  "
                                             "368s (policy 368)")


def test_iteration_line_shows_the_share_of_weights_moved():
    line = iteration_line(1, 2, {**BASE, "policy_weights_moved": 0.144})
    assert line == "[iter 1/2] kl 0.0123  moved 0.14  pairs 92  len 44.3  72s (rollout 19 policy 53)"


def test_precision_hint_only_for_bf16_runs_that_left_most_weights_unmoved():
    hint = precision_hint({"policy_weights_moved": 0.144}, "bfloat16")
    assert "14% of the policy's weights" in hint and "model.dtype=float32" in hint
    assert precision_hint({"policy_weights_moved": 0.144}, "float32") is None  # float32: a real result
    assert precision_hint({"policy_weights_moved": 0.9}, "bfloat16") is None
    assert precision_hint({}, "bfloat16") is None  # not measured (ZeRO-3, LoRA)


def test_summary_lists_only_the_signals_the_objective_reported(tmp_path, capsys):
    rows = [{"iteration": 0, "eval_unseen_chrf": 14.3},
            {"iteration": 1, "pairs": 208, "response_length": 45.1, "reward_accuracy": 0.80, "reward_margin": 0.5},
            {"iteration": 2, "pairs": 208, "response_length": 45.8, "reward_accuracy": 0.93, "reward_margin": 1.4}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    print_summary(tmp_path, 2)
    out = capsys.readouterr().out
    assert "reward_accuracy  iteration 1: 0.800  ->  iteration 2: 0.930" in out
    assert "reward_margin    iteration 1: 0.500  ->  iteration 2: 1.400" in out
    assert "None" not in out and " kl " not in out and "rm_accuracy" not in out
