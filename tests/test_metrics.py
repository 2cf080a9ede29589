"""Answer metrics against hand-computed tiny cases, and the paired bootstrap."""

import numpy as np
import pytest

from algos.metrics import (answer_scores, bleu, chrf, distinct_n, exact_match, gleu, load_wordnet, meteor,
                           meteor_name, normalize_answer, paired_bootstrap, token_f1)

pytestmark = pytest.mark.unit


def test_identical_answer_scores_full_marks():
    text = "The capital of France is Paris."
    assert bleu(text, text) == pytest.approx(100.0)
    assert chrf(text, text) == pytest.approx(100.0)
    assert gleu(text, text) == pytest.approx(100.0)
    assert token_f1(text, text) == 1.0 and exact_match(text, text) == 1.0
    # one-word answers: BLEU's effective order still gives full marks
    assert bleu("Paris", "Paris") == pytest.approx(100.0) and chrf("Paris", "Paris") == pytest.approx(100.0)


def test_disjoint_answer_scores_zero():
    assert token_f1("bananas are yellow", "Paris") == 0.0
    assert exact_match("bananas", "Paris") == 0.0
    assert bleu("bananas are yellow", "Paris is lovely") == pytest.approx(0.0, abs=1e-9)


def test_token_f1_by_hand():
    # normalised: "cat sat on mat" vs "cat sat" -> common 2, precision 2/4, recall 2/2, F1 = 2/3
    assert token_f1("The cat sat on the mat.", "a cat sat") == pytest.approx(2 / 3)
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert exact_match("The Paris!", "paris") == 1.0


def test_gleu_by_hand():
    # 1..4-grams: 4 + 3 + 2 + 1 = 10 on each side; shared: (a)(b)(c), (a b)(b c), (a b c) = 6
    # GLEU = min(6 / 10, 6 / 10) = 0.6 -> 60 on the percent scale
    assert gleu("a b c d", "a b c e") == pytest.approx(60.0)


def test_distinct_n_by_hand():
    # unigrams: a b a | a c -> 5 total, distinct {a, b, c} = 3
    assert distinct_n(["a b a", "a c"], 1) == pytest.approx(3 / 5)
    # bigrams: (a b) (b a) | (a c) -> 3 total, all distinct
    assert distinct_n(["a b a", "a c"], 2) == 1.0
    assert distinct_n(["", "x"], 2) == 0.0
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


def test_meteor_uses_synonyms_only_with_wordnet():
    wordnet = load_wordnet()
    reference, synonym = "the dog runs fast", "the hound runs fast"
    without = meteor(synonym, reference, None)
    assert meteor_name(None) == "meteor_nosyn"
    assert "meteor_nosyn" in answer_scores(synonym, reference, None)
    if wordnet is None:
        pytest.skip("no WordNet database (make setup unpacks Debian's wordnet-base into .venv/wordnet)")
    assert meteor_name(wordnet) == "meteor" and "meteor" in answer_scores(synonym, reference, wordnet)
    assert meteor(synonym, reference, wordnet) > without
    assert meteor(reference, reference, wordnet) > 90


def test_paired_bootstrap_constant_shift():
    # quarters are exact in floating point, so every per-prompt difference is exactly 0.5
    baseline = np.random.default_rng(0).integers(0, 400, size=100) / 4
    diff, low, high = paired_bootstrap(baseline, baseline + 0.5, np.random.default_rng(1))
    assert diff == 0.5 and low <= 0.5 <= high and low > 0
    assert paired_bootstrap(baseline, baseline, np.random.default_rng(1)) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_is_paired_and_seeded():
    rng = np.random.default_rng(2)
    baseline = rng.normal(scale=10, size=200)  # large spread across prompts...
    system = baseline + 0.2 + rng.normal(scale=0.1, size=200)  # ...but a consistent small gain
    diff, low, high = paired_bootstrap(baseline, system, np.random.default_rng(3))
    assert low > 0.15 and high < 0.25  # pairing removes the between-prompt spread
    assert paired_bootstrap(baseline, system, np.random.default_rng(3)) == (diff, low, high)
    with pytest.raises(ValueError):
        paired_bootstrap(baseline, system[:10], np.random.default_rng(0))
    with pytest.raises(ValueError):  # one score must not broadcast against N
        paired_bootstrap(baseline, system[:1], np.random.default_rng(0))


def test_several_references_score_against_the_best_match():
    from algos.metrics import answer_scores

    hypothesis = "Restart the printer and check the cable."
    alone = answer_scores(hypothesis, "Buy a new computer.", None)
    both = answer_scores(hypothesis, ["Buy a new computer.", "Restart the printer and check the cable."], None)
    assert both["chrf"] == pytest.approx(100.0) and both["token_f1"] == 1.0 and both["exact_match"] == 1.0
    for key in ("bleu", "chrf", "gleu", "meteor_nosyn", "token_f1"):
        assert both[key] > alone[key]
    assert answer_scores(hypothesis, [hypothesis], None) == answer_scores(hypothesis, hypothesis, None)


def test_loop_flags_a_word_trigram_three_times():
    from algos.metrics import has_loop

    assert has_loop("I'm a waste, a waste, a waste, a waste of time")
    assert not has_loop("I'm a waste, a waste, a waste.")  # (a, waste, a) twice only
    assert not has_loop("The cat sat on the mat and the dog sat on the rug.")
    assert has_loop("no no no no no")
