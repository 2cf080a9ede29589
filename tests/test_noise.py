import numpy as np
import pytest

from algos.noise import FILLER_WORDS, add_noise, noisy_negative, split_sentences

pytestmark = pytest.mark.unit

TEXT = "The cat sat on the mat and looked at the bird outside"


def test_ngram_edit_changes_at_most_three_words():
    for seed in range(50):
        words, noised = TEXT.split(), add_noise(TEXT, "ngram", np.random.default_rng(seed)).split()
        assert noised != words
        assert abs(len(noised) - len(words)) <= 3
        added = [w for w in noised if w not in words]
        assert all(w in FILLER_WORDS for w in added)


def test_ngram_edit_uses_all_three_operations():
    lengths = {len(add_noise(TEXT, "ngram", np.random.default_rng(s)).split()) for s in range(60)}
    n = len(TEXT.split())
    assert any(length < n for length in lengths)  # delete
    assert any(length > n for length in lengths)  # insert
    # replace keeps the length but changes words
    same = [add_noise(TEXT, "ngram", np.random.default_rng(s)) for s in range(60)]
    assert any(len(t.split()) == n and t != TEXT for t in same)


def test_ngram_on_a_single_word_inserts():
    noised = add_noise("hello", "ngram", np.random.default_rng(0))
    assert "hello" in noised.split() and len(noised.split()) > 1


def test_negation_removes_existing_negations():
    assert add_noise("I do not like it and never will", "negation", np.random.default_rng(0)) == "I do like it and will"
    assert add_noise("It isn't raining", "negation", np.random.default_rng(0)) == "It is raining"


def test_negation_adds_not_after_an_auxiliary():
    assert add_noise("The sky is blue", "negation", np.random.default_rng(0)) == "The sky is not blue"
    assert add_noise("You can swim", "negation", np.random.default_rng(0)) == "You can not swim"


def test_negation_without_auxiliary_inserts_not():
    noised = add_noise("Birds fly south", "negation", np.random.default_rng(0))
    assert noised.split().count("not") == 1 and noised.replace(" not", "").replace("not ", "") == "Birds fly south"


def test_shuffle_reorders_sentences():
    text = "First one. Second one! Third one?"
    for seed in range(10):
        noised = add_noise(text, "shuffle", np.random.default_rng(seed))
        assert noised != text
        assert sorted(split_sentences(noised)) == sorted(split_sentences(text))


@pytest.mark.parametrize("text", ["Only one sentence here.", "Same. Same."])
def test_shuffle_is_a_no_op_where_it_cannot_apply(text):
    assert add_noise(text, "shuffle", np.random.default_rng(0)) == text


@pytest.mark.parametrize("kind", ["ngram", "negation", "shuffle"])
def test_empty_text_is_left_alone(kind):
    assert add_noise("", kind, np.random.default_rng(0)) == ""
    assert noisy_negative("   ", np.random.default_rng(0)) == "   "


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown noise kind"):
        add_noise(TEXT, "typo", np.random.default_rng(0))


def test_noisy_negative_is_seeded_and_changes_text():
    a = [noisy_negative(TEXT, np.random.default_rng(s)) for s in range(20)]
    b = [noisy_negative(TEXT, np.random.default_rng(s)) for s in range(20)]
    assert a == b
    assert all(t != TEXT for t in a)


def test_noisy_negative_never_picks_shuffle_for_one_sentence():
    for seed in range(30):
        assert noisy_negative("One sentence only", np.random.default_rng(seed), kinds=("shuffle",)) == "One sentence only"
