"""Held-out evaluation glue: order agreement, paired comparison, verdicts, report files."""

import json
import math

import numpy as np
import pytest

from crowdless.evaluation import (SystemAnswers, agreement, compare, order_agreement, read_answers,
                                  verdict, write_answers)

pytestmark = pytest.mark.unit


def test_order_agreement_full_and_pairwise():
    target = np.array([0.9, 0.5, 0.1, 0.3])
    assert order_agreement(target * 2 + 1, target) == (1.0, 1.0)  # same order, other scale
    assert order_agreement(-target, target) == (0.0, 0.0)
    swapped = np.array([0.5, 0.9, 0.1, 0.3])  # one of the 6 pairs flipped
    full, pairwise = order_agreement(swapped, target)
    assert full == 0.0 and pairwise == pytest.approx(5 / 6)


def test_agreement_rates_and_random_baseline():
    targets = [np.array([3.0, 2.0, 1.0, 0.0]), np.array([0.0, 1.0, 2.0, 3.0])]
    perfect = [t.copy() for t in targets]
    result = agreement({"reward_model": perfect, "ranker": [targets[0], -targets[1]]}, targets)
    assert result["agreement_random_full"] == pytest.approx(1 / 24)
    assert result["reward_model_full_order"] == 1.0 and result["reward_model_pairwise"] == 1.0
    assert result["ranker_full_order"] == 0.5 and result["ranker_pairwise"] == 0.5


def test_random_scores_agree_about_one_in_24_times():
    rng = np.random.default_rng(0)
    targets = [rng.normal(size=4) for _ in range(4000)]
    guesses = [rng.normal(size=4) for _ in range(4000)]
    result = agreement({"random": guesses}, targets)
    assert abs(result["random_full_order"] - 1 / 24) < 0.012
    assert abs(result["random_pairwise"] - 0.5) < 0.02


def test_compare_detects_a_shift_and_verdict_reads_it():
    rng = np.random.default_rng(1)
    base = {m: rng.normal(size=200) for m in ("cosine", "chrf", "bleu")}
    better = {m: v + 0.5 for m, v in base.items()}
    table = compare(base, better, seed=0, resamples=500)
    for row in table.values():
        assert row["difference"] == pytest.approx(0.5) and row["low"] > 0
    assert verdict(table).startswith("better")
    worse = compare(base, {m: v - 0.5 for m, v in base.items()}, seed=0, resamples=500)
    assert verdict(worse).startswith("worse")
    same = compare(base, base, seed=0, resamples=500)
    assert verdict(same) == "no significant difference"


def test_compare_leaves_out_a_meteor_scored_without_synonyms_on_one_side():
    scores = np.arange(10, dtype=float)
    table = compare({"bleu": scores, "meteor": scores}, {"bleu": scores + 1, "meteor_nosyn": scores},
                    seed=0, resamples=100)
    assert list(table) == ["bleu"] and table["bleu"]["difference"] == pytest.approx(1.0)


def test_answers_round_trip(tmp_path):
    system = SystemAnswers("iter-1", ["Paris.", "It is blue."], [3, 5], [False, True])
    scores = {"bleu": np.array([100.0, 0.0]), "cosine": np.array([1.0, 0.2])}
    path = tmp_path / "answers" / "iter-1.jsonl"
    write_answers(path, ["Capital?", "Sky?"], ["Paris.", "Blue."], system, scores)
    back, back_scores = read_answers(path)
    assert back.answers == system.answers and back.lengths == [3, 5] and back.truncated == [False, True]
    assert set(back_scores) == {"bleu", "cosine"} and back_scores["bleu"].tolist() == [100.0, 0.0]
    assert json.loads(path.read_text().splitlines()[0])["reference"] == "Paris."


def test_report_writes_tables_and_plots(tmp_path):
    from crowdless.report import write_report

    answers = tmp_path / "answers"
    for name, lengths in (("iter-0", [10, 12]), ("iter-2", [5, 7])):
        write_answers(answers / f"{name}.jsonl", ["a", "b"], ["x", "y"],
                      SystemAnswers(name, ["p", "q"], lengths, [False, False]),
                      {"cosine": np.array([0.1, 0.2])})
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps(row) for row in (
        {"iteration": 0, "eval_cosine": 0.1, "eval_chrf": 10.0, "eval_bleu": 1.0},
        {"iteration": 1, "reward_mean": 0.3},
        {"iteration": 2, "reward_mean": 0.5, "eval_cosine": 0.2, "eval_chrf": 11.0, "eval_bleu": 1.5})))
    table = {"cosine": {"baseline": 0.1, "system": 0.2, "difference": 0.1, "low": 0.05, "high": 0.15}}
    agreement_figures = {"agreement_prompts": 2, "agreement_answers": 4, "agreement_random_full": 1 / 24,
                         "reward_model_full_order": 0.5, "reward_model_pairwise": 0.75,
                         "ranker_full_order": 0.0, "ranker_pairwise": 0.5}
    report = write_report(tmp_path, {"iter-2": table}, agreement_figures, metrics)
    text = report.read_text()
    assert "| cosine | 0.1000 | 0.2000 | +0.1000 | (+0.0500, +0.1500) **above 0** |" in text
    assert "| reward_model | 0.5000 | 0.7500 |" in text
    for png in ("metrics_over_iterations.png", "answer_lengths.png"):
        assert (tmp_path / png).stat().st_size > 1000 and png in text
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["comparisons"]["iter-2"]["cosine"]["low"] == 0.05
    assert math.isclose(saved["agreement"]["agreement_random_full"], 1 / 24)
