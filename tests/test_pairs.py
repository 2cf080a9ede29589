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


@pytest.mark.parametrize("share", [0.2, 0.25, 0.5])
def test_noised_twins_are_the_configured_share(share):
    real = build_pairs(RANKED, 1)
    pairs = build_pairs(RANKED, 1, noise_share=share, rng=np.random.default_rng(0))
    plain = [p for p in pairs if not p.noised]
    noised = [p for p in pairs if p.noised]
    assert plain == real  # twins come on top of the real pairs, never instead of them
    assert len(noised) / len(pairs) == pytest.approx(share, abs=0.03)
    for pair in noised:
        assert pair.rejected not in RANKED
        assert pair.rejected_rank >= pair.chosen_rank + 1
        assert pair.chosen == RANKED[pair.chosen_rank]
    # one noised copy per rejected answer, shared by every pair it is rejected in
    copies = {p.rejected_rank: set() for p in noised}
    for p in noised:
        copies[p.rejected_rank].add(p.rejected)
    assert all(len(c) == 1 for c in copies.values())


def test_every_answer_in_the_bottom_part_is_rejected_at_least_once():
    for n in range(2, 12):
        ranked = [f"answer number {i}" for i in range(n)]
        interval = default_interval(n)
        rejected = {p.rejected_rank for p in build_pairs(ranked)}
        assert rejected == set(range(interval, n))


def test_noise_needs_rng_and_zero_share_adds_nothing():
    with pytest.raises(ValueError, match="needs an rng"):
        build_pairs(RANKED, 1, noise_share=0.5)
    with pytest.raises(ValueError, match="noise_share"):
        build_pairs(RANKED, 1, noise_share=1.0, rng=np.random.default_rng(0))
    assert not any(p.noised for p in build_pairs(RANKED, 1, noise_share=0.0, rng=np.random.default_rng(0)))


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


# Sampled by SmolLM2 in a default run (seed 0, iteration 1): every answer repeats the question.
METAL_STEM = "The only metal that is a liquid at normal atmospheric pressure and temperature is "
METAL_ANSWERS = [
    ("The only metal that is liquid at normal atmospheric pressure and temperature is hydrogen, which "
     "is a noble gas and is a very light substance."),
    METAL_STEM + "liquid mercury. This precious metal is also known as levitra.",
    METAL_STEM + "mercury. This is not to be confused with the liquid form of a metal, which is hydrogen.",
    METAL_STEM + "water.",
    METAL_STEM + "lithium. It's a member of the alkali metals and is a highly unreactive metal.",
    ("No, there is no metal that is a liquid at normal atmospheric pressure and temperature. The only "
     "metal that is a liquid is mercury, which is a liquid element in its own right."),
    METAL_STEM + "water.",
    METAL_STEM + ("helium. The Earth's atmosphere is mostly composed of hydrogen and helium, with a "
                  "negligible amount of helium-3 (helic-3) and helium-4 (he"),
]


def test_answers_that_repeat_the_question_stay_distinct(embedder):
    """Their cosines are 0.83-0.93 (distances 0.37-0.58), and at the old merge threshold
    (min_dist 0.5, cosine 0.875) ISODATA chained all eight into one cluster: the group gave no
    pair, although "mercury" and "water" are the clearest right and wrong. Only the copy merges."""
    from algos.pairs import DEFAULT_ISODATA
    from crowdless.ranking import embed

    vectors = embed(embedder, METAL_ANSWERS)
    distance = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    copy = (3, 6)
    distinct = [distance[i, j] for i in range(8) for j in range(i + 1, 8) if (i, j) != copy]
    assert min(distinct) > DEFAULT_ISODATA["min_dist"] > distance[copy]
    assert min(distinct) < 0.5

    ranking = rank_answers(vectors, np.random.default_rng(0))
    assert len(ranking.kept) == 7 and not {3, 6} <= set(ranking.kept)
    assert int(np.argmin(ranking.scores)) in ranking.kept
    old = rank_answers(vectors, np.random.default_rng(0), isodata_params={"min_dist": 0.5})
    assert len(old.kept) == 1  # the measured collapse, for the record


OFF_TOPIC_GROUPS = [
    ("How do I boil an egg?",
     ["Put the egg in boiling water for about ten minutes.",
      "Boil water, add the egg, and cook it for 8 to 10 minutes.",
      "Place the eggs in a pot of boiling water and cook them for nine minutes.",
      "Simmer the egg in hot water for around ten minutes, then cool it in cold water."],
     ["My favourite football team won yesterday.", "The stock market closed higher today.",
      "Penguins live in Antarctica."]),
    ("What should I wear when it rains?",
     ["Wear a raincoat and waterproof boots.", "A waterproof jacket and an umbrella will keep you dry.",
      "Put on a rain jacket and take an umbrella.", "Rain boots and a hooded raincoat are best."],
     ["The square root of nine is three.", "I enjoy baking bread on Sundays."]),
    ("Can you recommend a good book?",
     ["I recommend To Kill a Mockingbird by Harper Lee.", "Try Pride and Prejudice, a classic novel.",
      "You might enjoy the novel 1984 by George Orwell.", "A good book to read is The Hobbit by Tolkien."],
     ["Turn left at the next traffic light.", "The boiling point of water is 100 degrees Celsius."]),
]


def _readme_example():
    import json
    from pathlib import Path

    group = json.loads((Path(__file__).resolve().parent.parent / "examples" / "answers.jsonl")
                       .read_text().splitlines()[0])
    off_topic = ["I like turtles.", "Bananas are yellow fruit.", "It is Berlin. Germany is big."]
    return group["prompt"], [a for a in group["answers"] if a not in off_topic], off_topic


@pytest.mark.parametrize("group", [_readme_example(), *OFF_TOPIC_GROUPS], ids=lambda g: g[0])
def test_off_topic_answers_are_rejected_and_never_chosen_over_sensible_ones(embedder, group):
    from configs.schema import RankingConfig
    from crowdless.ranking import embed, rank_group, ranking_statistics

    prompt, sensible, off_topic = group
    answers = [a for pair in zip(sensible, off_topic + [None] * len(sensible)) for a in pair if a]
    ranked = rank_group(prompt, answers, embed(embedder, answers), RankingConfig(noise_share=0.0),
                        np.random.default_rng(0))
    rejected = {pair.rejected for pair in ranked.pairs}
    assert set(off_topic) <= rejected
    assert not [p for p in ranked.pairs if p.chosen in off_topic and p.rejected in sensible]
    stats = ranking_statistics([ranked])
    assert stats["lowest_answer_rejected"] == 1.0 and stats["noised_pair_share"] == 0.0
    assert stats["pair_score_gap"] > 0 and stats["answers_kept"] >= len(off_topic) + 1


def test_why_the_old_isodata_defaults_dropped_the_negatives(embedder):
    """k_init=4 on 8 answers put "I like turtles." in a "Paris" answer's initial cluster. ISODATA
    never undid that: the split step needs more than 2 (theta_N + 1) = 4 members (or k <= k_init/2),
    and merging only brings clusters together. Measured in the 384-d unit-vector space: distinct
    answers lie about 1.1-1.5 apart (cosine below 0.4), so a merge threshold theta_C = 0.3 (cosine
    0.955) only joins near-copies, which is what one initial cluster per answer relies on."""
    from algos.pairs import DEFAULT_ISODATA
    from crowdless.ranking import embed

    prompt, sensible, off_topic = _readme_example()
    answers = sensible + off_topic
    vectors = embed(embedder, answers)
    assert vectors.shape == (len(answers), 384)
    distance = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    turtles, bananas = answers.index("I like turtles."), answers.index("Bananas are yellow fruit.")
    assert distance[turtles, :len(sensible)].min() > 1.0 > DEFAULT_ISODATA["min_dist"]
    assert distance[turtles, bananas] > DEFAULT_ISODATA["min_dist"]

    old = rank_answers(vectors, np.random.default_rng(0), isodata_params={"k_init": 4})
    members = np.flatnonzero(old.labels == old.labels[turtles])
    assert any(m < len(sensible) for m in members)  # an off-topic answer shares a Paris cluster
    assert vectors[members].std(axis=0).max() > DEFAULT_ISODATA["max_std"]  # wide enough to split...
    assert len(members) <= 2 * (DEFAULT_ISODATA["min_size"] + 1)  # ...but too small to be allowed
    assert turtles not in old.kept

    new = rank_answers(vectors, np.random.default_rng(0))
    assert {turtles, bananas} <= set(new.kept)


def test_ranking_statistics_by_hand():
    from algos.pairs import PreferencePair
    from crowdless.ranking import ranking_statistics
    from crowdless.data.records import RankedGroup

    # group 1: answers 0..3, answer 2 scored lowest; kept [1, 0, 2] (3 merged into 1)
    reached = RankedGroup("p", ["a", "b", "c", "d"], [0.3, 0.4, 0.1, 0.2], [0, 1, 2, 1], [1, 0, 2], [
        PreferencePair("p", "b", "c", 0, 2), PreferencePair("p", "b", "c!", 0, 2, noised=True)])
    # group 2: the lowest-scored answer (1) was merged away, so it is never rejected
    missed = RankedGroup("q", ["x", "y", "z"], [0.5, 0.1, 0.4], [0, 1, 1], [0, 2], [
        PreferencePair("q", "x", "z", 0, 1)], echoes=[True, False, False])
    stats = ranking_statistics([reached, missed])
    assert stats == {"pairs": 3, "answers_kept": 2.5, "lowest_answer_rejected": 0.5,
                     "noised_pair_share": pytest.approx(1 / 3),
                     "pair_score_gap": pytest.approx(((0.4 - 0.1) + (0.5 - 0.4)) / 2),
                     "response_echoes": pytest.approx(1 / 3)}  # of the answers checked for echoes
    assert ranking_statistics([])["pairs"] == 0


def test_unsound_answers_keep_their_place_go_last_or_are_dropped():
    from algos.pairs import demote_answers

    kept, sound = [3, 0, 2, 1], [True, False, True, False]  # answers 1 and 3 hit the token cap
    assert demote_answers(kept, sound, "keep") == [3, 0, 2, 1]
    assert demote_answers(kept, sound, "last") == [0, 2, 3, 1]  # sound first, each in TextRank order
    assert demote_answers(kept, sound, "drop") == [0, 2]
    with pytest.raises(ValueError, match="expected keep, last or drop"):
        demote_answers(kept, sound, "first")


@pytest.mark.parametrize("answer, echoes", [
    ("My printer is not printing.", True),
    ("my PRINTER is not printing!!", True),  # case and punctuation do not matter
    ("The printer is not printing.", True),  # 4 of 5 words are the prompt's: at the 0.8 share
    ("Your printer is not printing.", True),
    ("The printer in your computer is not printing.", False),  # 5 of 8
    ("Check that the printer has paper and ink.", False),
    ("", False),
])
def test_an_answer_echoes_the_prompt_when_most_of_its_words_are_the_prompts(answer, echoes):
    from algos.pairs import echoes_prompt

    assert echoes_prompt(answer, "My printer is not printing.", share=0.8) is echoes


def test_an_echo_is_never_chosen_over_an_answer_that_says_more_when_echoes_go_last():
    """Samples from E24's run at iteration 3: TextRank put the echo first (it is near every answer)."""
    from configs.schema import RankingConfig
    from crowdless.ranking import rank_group

    prompt = "My printer is not printing."
    answers = ["My printer is not printing.", "I'm not able to print on your printer.",
               "Check the paper tray and the cable.", "The printer is not printing."]
    vectors = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.6, 0.0, 0.8], [0.95, 0.1, 0.1]])
    config = RankingConfig(noise_share=0.0, deduplicate=False)
    kept = rank_group(prompt, answers, vectors, config, np.random.default_rng(0))
    assert kept.echoes == [True, False, False, True]
    assert kept.ranked[0] in (0, 3)  # the echoes are the most central
    group = rank_group(prompt, answers, vectors, config.model_copy(update={"prompt_echoes": "last"}),
                       np.random.default_rng(0))
    assert sorted(group.ranked[:2]) == [1, 2] and sorted(group.ranked[2:]) == [0, 3]
    assert group.pairs and not any(p.chosen in (answers[0], answers[3]) and p.rejected in answers[1:3]
                                   for p in group.pairs)
    cut = rank_group(prompt, answers, vectors, config.model_copy(update={"prompt_echoes": "last",
                                                                       "cut_answers": "last"}),
                     np.random.default_rng(0), finished=[True, False, True, True])
    assert cut.ranked[0] == 2 and cut.ranked[-1] == 1  # a cut answer goes below the echoes
    dropped = rank_group(prompt, answers, vectors, config.model_copy(update={"prompt_echoes": "drop"}),
                         np.random.default_rng(0))
    assert sorted(dropped.ranked) == [1, 2]


def test_a_cut_answer_is_never_chosen_over_a_finished_one_when_ranked_last():
    from configs.schema import RankingConfig
    from crowdless.ranking import rank_group

    answers = ["The sky is blue.", "The sky is blue because of scattering.", "The sky is", "Blue, the sky is"]
    # the two cut answers sit between the others: TextRank ranks them first
    vectors = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.7, 0.7, 0.1], [0.6, 0.6, 0.5]])
    finished = [True, True, False, False]
    kept = rank_group("Why is the sky blue?", answers, vectors, RankingConfig(noise_share=0.0, deduplicate=False),
                      np.random.default_rng(0), finished)
    assert [finished[i] for i in kept.ranked][:2] == [False, False]
    group = rank_group("Why is the sky blue?", answers, vectors, RankingConfig(noise_share=0.0, cut_answers="last",
                                                                              deduplicate=False),
                       np.random.default_rng(0), finished)
    assert [finished[i] for i in group.ranked] == [True, True, False, False]
    ranks = {answer: position for position, answer in enumerate(answers[i] for i in group.ranked)}
    assert all(ranks[p.chosen] < ranks[p.rejected] for p in group.pairs) and group.pairs
    assert not any(p.chosen in answers[2:] and p.rejected in answers[:2] for p in group.pairs)
    dropped = rank_group("Why is the sky blue?", answers, vectors, RankingConfig(noise_share=0.0, cut_answers="drop",
                                                                                deduplicate=False),
                         np.random.default_rng(0), finished)
    assert sorted(dropped.ranked) == [0, 1] and all(p.rejected in answers[:2] for p in dropped.pairs)


def test_pairs_report_counts_words_and_echoes_of_answers_and_of_real_pairs_only():
    from jobs.pairs_report import iteration_report

    group = {"prompt": "My printer is not printing.",
             "answers": ["My printer is not printing.", "Check the paper tray and the cable now."],
             "pairs": [{"chosen": "My printer is not printing.", "rejected": "Check the paper tray and the cable now.",
                        "noised": False},
                       {"chosen": "My printer is not printing.", "rejected": "paper the Check tray", "noised": True}]}
    report = iteration_report([group], echo_share=0.8)
    assert report == {"answer_words": 6.5, "answer_echoes": 0.5, "chosen_words": 5.0, "chosen_echoes": 1.0,
                      "rejected_words": 8.0, "rejected_echoes": 0.0}
