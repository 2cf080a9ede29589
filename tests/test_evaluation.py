"""Held-out evaluation glue: order agreement, paired comparison, verdicts, report files."""

import json
import math

import numpy as np
import pytest

from configs.schema import EvalConfig
from crowdless.data.prompt_sets import DistinctPrompt, PromptExample, normalize_prompt
from crowdless.evaluation.judge import (SystemAnswers, agreement, build_sets, compare, mean_reference_logprobs,
                                  order_agreement, read_answers, verdict, verdict_line, write_answers)

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
    assert verdict(same) == "no change"


def test_a_cosine_by_the_rankers_own_embedding_is_no_gain_alone():
    rng = np.random.default_rng(2)
    base = {m: rng.normal(size=200) for m in ("cosine", "chrf", "bleu", "ref_logprob")}
    only_cosine = dict(base, cosine=base["cosine"] + 0.5)
    table = compare(base, only_cosine, seed=0, resamples=500)
    assert verdict(table).startswith("better (cosine")
    assert verdict(table, circular=True).startswith("no change (above: cosine (the ranker's own embedding")
    chrf_too = dict(only_cosine, chrf=base["chrf"] + 0.5)
    with_chrf = compare(base, chrf_too, seed=0, resamples=500)
    assert verdict(with_chrf, circular=True) == "better (chrf, cosine above zero)"
    # the references' likelihood counts like any other judge
    drifted = compare(base, dict(chrf_too, ref_logprob=base["ref_logprob"] - 1), seed=0, resamples=500)
    assert verdict(drifted, circular=True) == "mixed (above: chrf, cosine; below: ref_logprob)"
    line = verdict_line({"unseen": with_chrf, "ood": compare(base, base, seed=0, resamples=500)}, circular=True)
    assert line == "unseen: better (chrf, cosine above zero); ood: no change"


def test_compare_leaves_out_a_meteor_scored_without_synonyms_on_one_side():
    scores = np.arange(10, dtype=float)
    table = compare({"bleu": scores, "meteor": scores}, {"bleu": scores + 1, "meteor_nosyn": scores},
                    seed=0, resamples=100)
    assert list(table) == ["bleu"] and table["bleu"]["difference"] == pytest.approx(1.0)


def test_answers_round_trip(tmp_path):
    system = SystemAnswers("iter-1", ["Paris.", "It is blue."], [3, 5], [False, True])
    scores = {"bleu": np.array([100.0, 0.0]), "cosine": np.array([1.0, 0.2])}
    path = tmp_path / "answers" / "unseen" / "iter-1.jsonl"
    write_answers(path, [DistinctPrompt("Capital?", ["Paris.", "Paris, France."]), DistinctPrompt("Sky?", ["Blue."])],
                  system, scores)
    back, back_scores = read_answers(path)
    assert back.answers == system.answers and back.lengths == [3, 5] and back.truncated == [False, True]
    assert set(back_scores) == {"bleu", "cosine"} and back_scores["bleu"].tolist() == [100.0, 0.0]
    assert json.loads(path.read_text().splitlines()[0])["references"] == ["Paris.", "Paris, France."]


def test_three_sets_trained_unseen_and_out_of_domain():
    train = [PromptExample("How are you?", "fine"), PromptExample("how are  YOU?", "good"),
             PromptExample("Tell me a joke.", "no"), PromptExample("Never drawn.", "x")]
    held_out = [PromptExample("What is AI?", "a field"), PromptExample("what is ai?", "computers thinking"),
                PromptExample("Hello", None)]
    trained = ["how are you?", "Tell me a joke.", "How are you?"]
    sets = build_sets(EvalConfig(max_prompts=20), "embedded:chatterbot", train, held_out, trained, seed=0)
    assert list(sets) == ["trained", "unseen", "ood"]
    assert [(d.prompt, d.references) for d in sets["trained"]] == [
        ("How are you?", ["fine", "good"]), ("Tell me a joke.", ["no"])]
    assert [(d.prompt, d.references) for d in sets["unseen"]] == [("What is AI?", ["a field", "computers thinking"])]
    ood = sets["ood"]  # chitchat's opening turns, none a prompt of the run's data
    assert len(ood) == 20 and all(d.references and "\n" not in d.prompt for d in ood)
    run_prompts = {normalize_prompt(e.prompt) for e in train + held_out}
    assert not run_prompts & {normalize_prompt(d.prompt) for d in ood}
    assert build_sets(EvalConfig(max_prompts=20), "embedded:chatterbot", train, held_out, trained, 0) == sets
    # dev: the held-out prompts after unseen's, for choosing settings; none where unseen takes all
    more = held_out + [PromptExample("Why?", "because")]
    wider = build_sets(EvalConfig(max_prompts=1, dev_prompts=5), "x.jsonl", train, more, trained, 0)
    assert [d.prompt for d in wider["unseen"]] == ["What is AI?"] and [d.prompt for d in wider["dev"]] == ["Why?"]
    assert "dev" not in build_sets(EvalConfig(max_prompts=1, dev_prompts=0), "x.jsonl", train, more, trained, 0)
    assert "dev" not in build_sets(EvalConfig(max_prompts=None), "x.jsonl", train, more, trained, 0)
    assert "ood" not in build_sets(EvalConfig(ood_source=None), "x.jsonl", train, held_out, trained, 0)


def test_reference_logprob_is_the_mean_over_a_prompts_first_references():
    prompts = [DistinctPrompt("a", ["r1", "r2", "r3"]), DistinctPrompt("b", ["s1"])]
    calls = []

    def answer_logprobs(ps, answers):
        calls.append(list(zip(ps, answers)))
        return [-float(answer[1]) for answer in answers]

    values = mean_reference_logprobs(prompts, answer_logprobs, per_prompt=2)
    assert calls == [[("a", "r1"), ("a", "r2"), ("b", "s1")]]  # one call, capped per prompt
    assert values.tolist() == [-1.5, -1.0]


def test_report_writes_tables_and_plots(tmp_path):
    from crowdless.evaluation.report import write_report

    answers = tmp_path / "answers" / "unseen"
    for name, lengths in (("iter-0", [10, 12]), ("iter-2", [5, 7])):
        write_answers(answers / f"{name}.jsonl", [DistinctPrompt("a", ["x"]), DistinctPrompt("b", ["y"])],
                      SystemAnswers(name, ["p", "q"], lengths, [False, False]),
                      {"cosine": np.array([0.1, 0.2])})
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps(row) for row in (
        {"iteration": 0, "eval_unseen_cosine": 0.1, "eval_unseen_chrf": 10.0, "eval_ood_chrf": 9.0,
         "eval_ood_cosine": 0.3, "eval_unseen_distinct_1": 0.5, "eval_unseen_distinct_2": 0.75},
        {"iteration": 1, "reward_mean": 0.3},
        {"iteration": 2, "reward_mean": 0.5, "eval_unseen_cosine": 0.2, "eval_unseen_chrf": 11.0,
         "eval_ood_chrf": 9.5, "eval_ood_cosine": 0.3, "eval_unseen_distinct_1": 0.25, "eval_unseen_distinct_2": 0.5})))
    row = {"baseline": 0.1, "system": 0.2, "difference": 0.1, "low": 0.05, "high": 0.15}
    tables = {"iter-2": {"unseen": {"cosine": row}, "ood": {"cosine": dict(row, low=-0.01)}}}
    agreement_figures = {"agreement_prompts": 2, "agreement_answers": 4, "agreement_random_full": 1 / 24,
                         "reward_model_full_order": 0.5, "reward_model_pairwise": 0.75,
                         "ranker_full_order": 0.0, "ranker_pairwise": 0.5}
    report = write_report(tmp_path, tables, agreement_figures, metrics, circular=True)
    text = report.read_text()
    assert ("| cosine (the ranker's own embedding) | 0.1000 | 0.2000 | +0.1000 | (+0.0500, +0.1500) **above 0** |"
            in text)
    assert "### unseen: no change (above: cosine (the ranker's own embedding: not counted alone))" in text
    assert "### ood: no change" in text
    assert "iteration 0 0.500 / 0.750, iteration 2 0.250 / 0.500." in text
    assert "| reward_model | 0.5000 | 0.7500 |" in text
    for png in ("metrics_over_iterations.png", "answer_lengths.png"):
        assert (tmp_path / png).stat().st_size > 1000 and png in text
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["comparisons"]["iter-2"]["unseen"]["cosine"]["low"] == 0.05
    assert saved["cosine_is_ranker_embedding"] is True
    assert math.isclose(saved["agreement"]["agreement_random_full"], 1 / 24)


def test_console_table_puts_the_sets_side_by_side():
    from crowdless.evaluation.judge import format_sets_table

    up = {"difference": 0.5, "low": 0.1, "high": 0.9, "baseline": 1.0, "system": 1.5}
    flat = dict(up, low=-0.2)
    text = format_sets_table({"unseen": {"chrf": up, "cosine": up}, "ood": {"chrf": flat, "cosine": flat}},
                             circular=True)
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "unseen", "ood"]
    assert lines[1].split() == ["chrf", "+0.500", "(+0.100,", "+0.900)", ">0", "+0.500", "(-0.200,", "+0.900)"]
    assert lines[2].startswith("  cosine*") and lines[-1] == "  * the ranker's own embedding: never counted alone"


def test_a_length_matched_baseline_is_cut_to_the_systems_word_count():
    from algos.metrics import load_wordnet
    from crowdless.evaluation.judge import cut_to_words, length_matched_scores

    assert cut_to_words("one two  three four", 2) == "one two" and cut_to_words("one", 5) == "one"
    references = ["the cat sat on the mat"]
    baseline = [{"prompt": "p", "references": references, "answer": "the cat sat on the mat and then it ran far away"}]
    system = [{"prompt": "p", "references": references, "answer": "a cat sat on a mat"}]
    matched = length_matched_scores(baseline, system, load_wordnet())
    # cut to six words the baseline is the reference itself
    assert matched["chrf"][0] == pytest.approx(100.0) and matched["bleu"][0] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="different prompts"):
        length_matched_scores(baseline, [{**system[0], "prompt": "q"}], None)


def test_length_control_job_pools_runs_and_writes_its_table(tmp_path):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jobs"))
    from length_control import main

    references = ["the cat sat on the mat"]
    for seed in (0, 1):
        folder = tmp_path / f"seed-{seed}" / "eval" / "answers" / "unseen"
        folder.mkdir(parents=True)
        for iteration, answer in ((0, "the cat sat on the mat and ran off"), (2, "a cat sat on the mat")):
            row = {"prompt": f"p{seed}", "references": references, "answer": answer, "chrf": 50.0, "bleu": 10.0,
                   "meteor": 40.0}
            (folder / f"iter-{iteration}.jsonl").write_text(json.dumps(row) + "\n")
    runs = [str(tmp_path / "seed-0"), str(tmp_path / "seed-1")]
    assert main([*runs, "--sets", "unseen"]) == 0
    saved = json.loads((tmp_path / "seed-0" / "eval" / "length_control.json").read_text())["unseen"]
    assert saved["prompts"] == 2
    # the start cut to six words is the reference: the final answers' recorded 50 is below it
    assert saved["beyond_length"]["chrf"]["difference"] < 0 < saved["length_alone"]["chrf"]["difference"]
    assert main([*runs, "--sets", "unseen", "--iteration", "4"]) == 2
