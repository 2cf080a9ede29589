"""jobs/compare.py: one table from variants that trained for different numbers of iterations."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jobs"))
from compare import comparison_rows, format_markdown, last_iteration, main, parse_variant, seed_list  # noqa: E402

from configs.schema import EvalConfig  # noqa: E402
from crowdless.data.prompt_sets import DistinctPrompt  # noqa: E402
from crowdless.evaluation.judge import SystemAnswers, write_answers  # noqa: E402


def _write(run: Path, iteration: int, cosine: list[float], set_name: str = "unseen") -> None:
    n = len(cosine)
    system = SystemAnswers(f"iter-{iteration}", ["a"] * n, [3] * n, [False] * n)
    scores = {"cosine": np.array(cosine), "chrf": np.zeros(n), "bleu": np.zeros(n)}
    write_answers(run / "eval" / "answers" / set_name / f"iter-{iteration}.jsonl", [DistinctPrompt("p", ["r"])] * n,
                  system, scores)


def test_each_variant_is_read_at_its_own_last_iteration(tmp_path):
    base = [0.2, 0.3, 0.4, 0.5]
    for name in ("short", "long"):
        _write(tmp_path / name, 0, base)
    _write(tmp_path / "short", 2, [c + 0.1 for c in base])
    _write(tmp_path / "long", 6, [c + 0.3 for c in base])
    judged = {tmp_path / "short": 2, tmp_path / "long": 6}
    rows = comparison_rows({"short": [tmp_path / "short"], "long": [tmp_path / "long"]}, judged,
                           EvalConfig(bootstrap_resamples=200), seed=0)
    (_, short, own_short, _), (_, long, own_long, paired_long) = rows
    assert (short, long) == ("short", "long")
    assert np.isclose(own_short["cosine"]["difference"], 0.1)
    assert np.isclose(own_long["cosine"]["difference"], 0.3)
    assert np.isclose(paired_long["cosine"]["difference"], 0.2)  # long minus short, same prompts


def test_a_run_is_measured_against_its_own_later_checkpoint_with_base_iteration(tmp_path):
    base = [0.2, 0.3, 0.4, 0.5]
    for iteration, shift in ((0, 0.0), (2, 0.25), (6, 0.1)):  # gained by iteration 2, lost some by 6
        _write(tmp_path / "long", iteration, [c + shift for c in base])
    rows = comparison_rows({"long": [tmp_path / "long"]}, {tmp_path / "long": 6}, EvalConfig(bootstrap_resamples=200),
                           seed=0, base_iteration=2)
    (_, _, own, _), = rows
    assert np.isclose(own["cosine"]["difference"], -0.15)
    assert "cosine: vs its iter-2" in format_markdown(rows, "long", "its iter-2")


def test_variant_syntax():
    assert parse_variant("random:ranking.order=random,run.iterations=6") == (
        "random", ["ranking.order=random", "run.iterations=6"])
    assert parse_variant("textrank") == ("textrank", [])


def test_several_seeds_give_a_row_each_and_a_row_on_their_means(tmp_path):
    base = [0.2, 0.3, 0.4, 0.5]
    for name, gains in (("textrank", (0.1, 0.3)), ("random", (0.0, 0.1))):
        for seed, gain in enumerate(gains):
            run = tmp_path / name / f"seed-{seed}"
            _write(run, 0, base)
            _write(run, 2, [c + gain for c in base])
    runs = {name: [tmp_path / name / "seed-0", tmp_path / name / "seed-1"] for name in ("textrank", "random")}
    judged = {run: 2 for seeds in runs.values() for run in seeds}
    rows = comparison_rows(runs, judged, EvalConfig(bootstrap_resamples=200), seed=0)
    labels = [label for _, label, _, _ in rows]
    assert labels == ["textrank (seed-0)", "textrank (seed-1)", "textrank (2 seeds pooled)",
                      "random (seed-0)", "random (seed-1)", "random (2 seeds pooled)"]
    by_label = {label: (own, paired) for _, label, own, paired in rows}
    assert np.isclose(by_label["textrank (2 seeds pooled)"][0]["cosine"]["difference"], 0.2)
    assert np.isclose(by_label["random (seed-1)"][1]["cosine"]["difference"], 0.1 - 0.3)  # against textrank seed 1
    assert np.isclose(by_label["random (2 seeds pooled)"][1]["cosine"]["difference"], 0.05 - 0.2)


def test_each_set_gets_its_rows_and_a_variant_on_other_prompts_is_not_paired(tmp_path):
    for name, n in (("textrank", 4), ("wider", 6)):
        for set_name in ("trained", "unseen"):
            size = n if set_name == "trained" else 4  # more prompts per iteration: a larger trained set
            _write(tmp_path / name, 0, [0.2] * size, set_name)
            _write(tmp_path / name, 2, [0.3] * size, set_name)
    rows = comparison_rows({"textrank": [tmp_path / "textrank"], "wider": [tmp_path / "wider"]},
                           {tmp_path / "textrank": 2, tmp_path / "wider": 2}, EvalConfig(bootstrap_resamples=200),
                           seed=0)
    assert [(s, label) for s, label, _, _ in rows] == [("trained", "textrank"), ("trained", "wider"),
                                                         ("unseen", "textrank"), ("unseen", "wider")]
    assert rows[1][3] is None and np.isclose(rows[3][3]["cosine"]["difference"], 0.0)
    table = format_markdown(rows, "textrank")
    assert "### trained" in table and "(other prompts)" in table
    assert seed_list("0,1,2") == [0, 1, 2]


def test_a_set_some_runs_never_judged_is_left_out_of_the_table(tmp_path):
    """A run from before the dev set existed is compared on the sets every run has."""
    for seed, sets in ((0, ("unseen", "dev")), (1, ("unseen",))):
        for set_name in sets:
            _write(tmp_path / f"seed-{seed}", 0, [0.2] * 4, set_name)
            _write(tmp_path / f"seed-{seed}", 2, [0.3] * 4, set_name)
    rows = comparison_rows({"textrank": [tmp_path / "seed-0", tmp_path / "seed-1"]},
                           {tmp_path / "seed-0": 2, tmp_path / "seed-1": 2}, EvalConfig(bootstrap_resamples=200), seed=0)
    assert {set_name for set_name, *_ in rows} == {"unseen"}


def test_an_iteration_a_variant_never_reaches_is_refused_before_anything_trains(tmp_path, capsys):
    code = main(["--config", "tiny", "--out", str(tmp_path), "--iteration", "4",
                 "short", "long:run.iterations=6"])
    assert code == 2
    assert "--iteration 4: short train(s) fewer iterations" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before any variant trained
    assert main(["--config", "tiny", "--out", str(tmp_path), "--iteration", "0", "short"]) == 2
    assert "a trained checkpoint is 1 or more" in capsys.readouterr().err


def test_a_run_stopped_by_its_drift_budget_is_judged_at_its_last_policy(tmp_path):
    """run.stop_at_drift ended one seed before iteration 3 trained: that seed is read at iteration 2,
    the other at its configured 6, and both pool into one row."""
    base = [0.2, 0.3, 0.4, 0.5]
    stopped, full = tmp_path / "seed-0", tmp_path / "seed-1"
    for run, last, gain in ((stopped, 2, 0.1), (full, 6, 0.3)):
        _write(run, 0, base)
        _write(run, last, [c + gain for c in base])
    (stopped / "stopped.json").write_text('{"iteration": 3, "policy_drift": 6.1, "stop_at_drift": 4.0}')
    assert (last_iteration(stopped, 6), last_iteration(full, 6)) == (2, 6)
    judged = {run: last_iteration(run, 6) for run in (stopped, full)}
    rows = comparison_rows({"guarded": [stopped, full]}, judged, EvalConfig(bootstrap_resamples=200), seed=0)
    by_label = {label: own for _, label, own, _ in rows}
    assert np.isclose(by_label["guarded (seed-0)"]["cosine"]["difference"], 0.1)
    assert np.isclose(by_label["guarded (2 seeds pooled)"]["cosine"]["difference"], 0.2)
