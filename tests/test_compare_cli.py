"""jobs/compare.py: one table from variants that trained for different numbers of iterations."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jobs"))
from compare import comparison_rows, parse_variant, seed_list  # noqa: E402

from configs.schema import EvalConfig  # noqa: E402
from crowdless.evaluation import SystemAnswers, write_answers  # noqa: E402


def _write(run: Path, iteration: int, cosine: list[float]) -> None:
    n = len(cosine)
    system = SystemAnswers(f"iter-{iteration}", ["a"] * n, [3] * n, [False] * n)
    scores = {"cosine": np.array(cosine), "chrf": np.zeros(n), "bleu": np.zeros(n)}
    write_answers(run / "eval" / "answers" / f"iter-{iteration}.jsonl", ["p"] * n, ["r"] * n, system, scores)


def test_each_variant_is_read_at_its_own_last_iteration(tmp_path):
    base = [0.2, 0.3, 0.4, 0.5]
    for name in ("short", "long"):
        _write(tmp_path / name, 0, base)
    _write(tmp_path / "short", 2, [c + 0.1 for c in base])
    _write(tmp_path / "long", 6, [c + 0.3 for c in base])
    rows = comparison_rows({"short": [tmp_path / "short"], "long": [tmp_path / "long"]}, {"short": 2, "long": 6},
                           EvalConfig(bootstrap_resamples=200), seed=0)
    (short, own_short, _), (long, own_long, paired_long) = rows
    assert (short, long) == ("short", "long")
    assert np.isclose(own_short["cosine"]["difference"], 0.1)
    assert np.isclose(own_long["cosine"]["difference"], 0.3)
    assert np.isclose(paired_long["cosine"]["difference"], 0.2)  # long minus short, same prompts


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
    rows = comparison_rows(runs, {"textrank": 2, "random": 2}, EvalConfig(bootstrap_resamples=200), seed=0)
    labels = [label for label, _, _ in rows]
    assert labels == ["textrank (seed-0)", "textrank (seed-1)", "textrank (mean of 2 seeds)",
                      "random (seed-0)", "random (seed-1)", "random (mean of 2 seeds)"]
    by_label = {label: (own, paired) for label, own, paired in rows}
    assert np.isclose(by_label["textrank (mean of 2 seeds)"][0]["cosine"]["difference"], 0.2)
    assert np.isclose(by_label["random (seed-1)"][1]["cosine"]["difference"], 0.1 - 0.3)  # against textrank seed 1
    assert np.isclose(by_label["random (mean of 2 seeds)"][1]["cosine"]["difference"], 0.05 - 0.2)
    assert seed_list("0,1,2") == [0, 1, 2]
