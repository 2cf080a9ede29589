"""From sampled answers to preference pairs, with no human labels (DESIGN.md section 1, steps 2-6).

rank_answers: embeddings -> TextRank scores, ISODATA clusters, one representative
              per cluster (the member with the highest score), best first.
build_pairs:  ranked distinct answers -> (chosen, rejected) pairs with
              rank(rejected) >= rank(chosen) + interval, so the bottom of the
              ranking is always rejected; plus a configured share of twins whose
              rejected side is a noise-injected copy (a clearly-worse negative).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from algos.isodata import isodata
from algos.noise import NOISE_KINDS, noisy_negative
from algos.textrank import similarity_graph, textrank

DEFAULT_ISODATA = {
    "k_init": None,  # one initial cluster per answer: only near-copies merge
    "min_size": 1,
    "max_std": 0.05,  # the paper's split threshold
    # unit vectors closer than this (cosine > 0.955) are near-copies; at 0.5 (cosine 0.875) answers
    # that repeat a long question and differ in the one word that matters ("... is mercury." /
    # "... is water.", cosine 0.89-0.93) collapsed into one, and the group gave no pair
    "min_dist": 0.3,
    "max_merges": 4,
    "max_iter": 10,
}


@dataclass(frozen=True)
class Ranking:
    """Result of rank_answers for one prompt's N answers."""

    scores: np.ndarray  # [N] TextRank scores, summing to 1
    labels: np.ndarray  # [N] ISODATA cluster of each answer
    kept: list[int]  # indices of cluster representatives, highest score first


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    chosen_rank: int  # position in the ranked, de-duplicated list (0 = best)
    rejected_rank: int
    noised: bool = False  # rejected is a noise-injected copy of the answer at rejected_rank


def rank_answers(
    embeddings: np.ndarray,
    rng: np.random.Generator,
    *,
    damping: float = 0.85,
    tol: float = 1e-6,
    max_iter: int = 1000,
    isodata_params: Mapping[str, float] | None = None,
    deduplicate: bool = True,
    order: str = "textrank",
) -> Ranking:
    """Rank answers by embeddings [N, D]; keep one answer per semantic cluster.

    order: "textrank" (the method), "random" (seeded random scores: the control the method
    must beat) or "reverse" (negated TextRank). deduplicate=False keeps every answer."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    scores = textrank(similarity_graph(embeddings), damping=damping, tol=tol, max_iter=max_iter)
    if order == "random":
        scores = rng.dirichlet(np.ones(len(scores)))  # sums to 1 like TextRank's
    elif order == "reverse":
        scores = scores.max() + scores.min() - scores
    elif order != "textrank":
        raise ValueError(f"unknown ranking order {order!r}; expected textrank, random or reverse")
    if not deduplicate:
        kept = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        return Ranking(scores=scores, labels=np.arange(len(scores)), kept=kept)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.where(norms > 0, norms, 1.0)
    params = {**DEFAULT_ISODATA, **(isodata_params or {})}
    if params["k_init"] is None:
        params["k_init"] = len(unit)
    labels, _ = isodata(unit, rng=rng, **params)
    representatives = [
        int(members[np.argmax(scores[members])])
        for members in (np.flatnonzero(labels == c) for c in np.unique(labels))
    ]
    kept = sorted(representatives, key=lambda i: (-scores[i], i))
    return Ranking(scores=scores, labels=labels, kept=kept)


def demote_answers(kept: Sequence[int], sound: Sequence[bool], mode: str) -> list[int]:
    """The ranked answers (indices, best first) with the unsound ones (sound False: cut at the
    token cap, or echoing the prompt) kept in place ("keep"), moved below every sound one, in
    their own order ("last": never chosen over a sound answer), or left out ("drop")."""
    if mode == "keep":
        return list(kept)
    complete = [i for i in kept if sound[i]]
    if mode == "last":
        return complete + [i for i in kept if not sound[i]]
    if mode == "drop":
        return complete
    raise ValueError(f"unknown mode {mode!r} for unsound answers; expected keep, last or drop")


def echoes_prompt(answer: str, prompt: str, share: float) -> bool:
    """Whether at least `share` of the answer's words (case-folded) are words of the prompt.

    An echo ("My screen is flickering." to "My screen is flickering.") says nothing new, yet it is
    similar to every answer about the prompt, so TextRank ranks it first; trained on, echoes took
    over the policy's answers from the third iteration (docs/experiments.md E25)."""
    words = re.findall(r"\w+", answer.lower())
    if not words:
        return False
    prompt_words = set(re.findall(r"\w+", prompt.lower()))
    return sum(word in prompt_words for word in words) >= share * len(words)


def default_interval(num_ranked: int) -> int:
    """Half the list length, as in the authors' code; at least 1."""
    return max(1, num_ranked // 2)


def build_pairs(
    ranked: Sequence[str],
    interval: int | None = None,
    *,
    prompt: str = "",
    noise_share: float = 0.0,
    rng: np.random.Generator | None = None,
    noise_kinds: tuple[str, ...] = NOISE_KINDS,
) -> list[PreferencePair]:
    """Pairs (ranked[w], ranked[l]) for all l >= w + interval, texts distinct, plus noised twins.

    Every answer at rank interval or below is rejected at least once (against ranked[0]), so the
    bottom of the ranking always reaches the reward model. noise_share is the share of the
    returned pairs that are twins of a real pair with a noise-injected copy of its rejected answer
    (one copy per rejected answer); 0.25 gives one noised pair per three real ones.
    """
    if not 0.0 <= noise_share < 1.0:
        raise ValueError(f"noise_share must be in [0, 1), got {noise_share}")
    if noise_share > 0 and rng is None:
        raise ValueError("noise_share > 0 needs an rng")
    interval = default_interval(len(ranked)) if interval is None else interval
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    pairs = [
        PreferencePair(prompt, ranked[w], ranked[lose], w, lose)
        for w in range(len(ranked))
        for lose in range(w + interval, len(ranked))
        if ranked[w] != ranked[lose]
    ]
    twins = min(len(pairs), round(len(pairs) * noise_share / (1.0 - noise_share)))
    if twins == 0:
        return pairs
    copies: dict[int, str] = {}
    noised = []
    for index in sorted(rng.choice(len(pairs), size=twins, replace=False)):
        pair = pairs[index]
        if pair.rejected_rank not in copies:
            copies[pair.rejected_rank] = noisy_negative(pair.rejected, rng, noise_kinds)
        copy = copies[pair.rejected_rank]
        if copy not in (pair.chosen, pair.rejected):
            noised.append(PreferencePair(prompt, pair.chosen, copy, pair.chosen_rank,
                                         pair.rejected_rank, noised=True))
    return pairs + noised
