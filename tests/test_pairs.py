import numpy as np
import pytest

from algos.pairs import build_pairs, default_interval, rank_answers

pytestmark = pytest.mark.unit

RANKED = ["best answer here", "good answer", "fine answer", "weak answer", "bad answer", "worst answer"]


@pytest.mark.parametrize("interval", [1, 2, 3, 5])
def test_pairs_respect_interval(interval):
    pairs = build_pairs(RANKED, interval, prompt="q")
    assert pairs
    for pair in pairs:
        assert pair.rejected_rank >= pair.chosen_rank + interval
        assert pair.chosen == RANKED[pair.chosen_rank] and pair.rejected == RANKED[pair.rejected_rank]
        assert pair.chosen != pair.rejected and pair.prompt == "q"
    n = len(RANKED)
    assert len(pairs) == sum(max(0, n - w - interval) for w in range(n))


def test_default_interval_is_half_the_list():
    assert default_interval(6) == 3 and default_interval(1) == 1 and default_interval(9) == 4
    assert {(p.chosen_rank, p.rejected_rank) for p in build_pairs(RANKED)} == {
        (0, 3), (0, 4), (0, 5), (1, 4), (1, 5), (2, 5)
    }


def test_no_pair_of_an_answer_with_itself():
    assert build_pairs(["same", "same", "same"], 1) == []
    assert build_pairs(["only"]) == []


def test_noise_adds_clearly_worse_twins():
    pairs = build_pairs(RANKED, 3, noise_prob=1.0, rng=np.random.default_rng(0))
    plain = [p for p in pairs if not p.noised]
    noised = [p for p in pairs if p.noised]
    assert len(noised) == len(plain)
    for pair in noised:
        assert pair.rejected not in RANKED
        assert pair.rejected_rank >= pair.chosen_rank + 3
    # one noised copy per rejected answer, shared by every pair it is rejected in
    copies = {p.rejected_rank: set() for p in noised}
    for p in noised:
        copies[p.rejected_rank].add(p.rejected)
    assert all(len(c) == 1 for c in copies.values())


def test_noise_needs_rng_and_zero_probability_adds_nothing():
    with pytest.raises(ValueError):
        build_pairs(RANKED, 1, noise_prob=0.5)
    assert not any(p.noised for p in build_pairs(RANKED, 1, noise_prob=0.0, rng=np.random.default_rng(0)))


def test_rank_answers_keeps_one_per_cluster_highest_score_first():
    rng = np.random.default_rng(0)
    direction = np.eye(8)
    # four near-identical answers along axis 0 (the consensus), three along axis 1, one outlier
    emb = np.concatenate([
        direction[0] + 0.01 * rng.normal(size=(4, 8)),
        direction[1] + 0.3 * direction[0] + 0.01 * rng.normal(size=(3, 8)),
        direction[2:3],
    ])
    ranking = rank_answers(emb, np.random.default_rng(0),
                           isodata_params=dict(k_init=3, min_size=1, max_std=0.05, min_dist=0.5))
    assert len(set(ranking.labels.tolist())) == 3
    assert len(ranking.kept) == 3
    assert ranking.kept[0] in range(4)  # the consensus cluster ranks first
    assert ranking.kept[-1] == 7  # the outlier ranks last
    for kept in ranking.kept:
        members = np.flatnonzero(ranking.labels == ranking.labels[kept])
        assert ranking.scores[kept] == ranking.scores[members].max()
    scores = [ranking.scores[i] for i in ranking.kept]
    assert scores == sorted(scores, reverse=True)


def test_ranking_order_controls():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(6, 8))
    base = rank_answers(embeddings, np.random.default_rng(1), deduplicate=False)
    assert sorted(base.kept) == list(range(6))
    assert base.scores[base.kept[0]] == base.scores.max()
    reverse = rank_answers(embeddings, np.random.default_rng(1), deduplicate=False, order="reverse")
    assert reverse.kept == base.kept[::-1]
    random_a = rank_answers(embeddings, np.random.default_rng(2), deduplicate=False, order="random")
    random_b = rank_answers(embeddings, np.random.default_rng(2), deduplicate=False, order="random")
    assert random_a.kept == random_b.kept and abs(random_a.scores.sum() - 1) < 1e-9
    orders = {tuple(rank_answers(embeddings, np.random.default_rng(s), deduplicate=False,
                                 order="random").kept) for s in range(5)}
    assert len(orders) > 1  # seeds give different orders
    with pytest.raises(ValueError, match="unknown ranking order"):
        rank_answers(embeddings, rng, order="best")


def test_default_deduplication_keeps_the_clearest_negatives(embedder):
    """DESIGN.md section 1: with k_init=4 the three off-topic answers shared "Paris."'s cluster and
    were dropped; one initial cluster per answer merges only the near-copies."""
    import json
    from pathlib import Path

    from crowdless.ranking import embed

    group = json.loads((Path(__file__).resolve().parent.parent / "examples" / "answers.jsonl")
                       .read_text().splitlines()[0])
    answers = group["answers"]
    vectors = embed(embedder, answers)
    ranking = rank_answers(vectors, np.random.default_rng(0))
    kept = [answers[i] for i in ranking.kept]
    for negative in ("I like turtles.", "Bananas are yellow fruit.", "It is Berlin. Germany is big."):
        assert negative in kept
    assert len(kept) < len(answers)  # the Paris paraphrases still collapse
    assert int(np.argmin(ranking.scores)) in ranking.kept
    old = rank_answers(vectors, np.random.default_rng(0), isodata_params={"k_init": 4})
    assert "I like turtles." not in [answers[i] for i in old.kept]  # the measured flaw, for the record
