"""From sampled answers to preference pairs, with no human labels (DESIGN.md section 1, steps 2-6).

rank_answers: embeddings -> TextRank scores, ISODATA clusters, one representative
              per cluster (the member with the highest score), best first.
build_pairs:  ranked distinct answers -> (chosen, rejected) pairs with
              rank(rejected) >= rank(chosen) + interval, plus noise-injected
              copies of the rejected answers as extra, clearly-worse negatives.
"""

from __future__ import annotations

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
    "min_dist": 0.5,  # unit vectors closer than this (cosine > 0.875) are near-duplicates
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


def default_interval(num_ranked: int) -> int:
    """Half the list length, as in the authors' code; at least 1."""
    return max(1, num_ranked // 2)


def build_pairs(
    ranked: Sequence[str],
    interval: int | None = None,
    *,
    prompt: str = "",
    noise_prob: float = 0.0,
    rng: np.random.Generator | None = None,
    noise_kinds: tuple[str, ...] = NOISE_KINDS,
) -> list[PreferencePair]:
    """Pairs (ranked[w], ranked[l]) for all l >= w + interval, texts distinct.

    Each answer that appears as rejected gets, with probability noise_prob, one
    noised copy; every pair it is rejected in then gets a twin with that copy.
    """
    if noise_prob > 0 and rng is None:
        raise ValueError("noise_prob > 0 needs an rng")
    interval = default_interval(len(ranked)) if interval is None else interval
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    noised: dict[int, str | None] = {}
    pairs = []
    for w in range(len(ranked)):
        for lose in range(w + interval, len(ranked)):
            if ranked[w] == ranked[lose]:
                continue
            pairs.append(PreferencePair(prompt, ranked[w], ranked[lose], w, lose))
            if lose not in noised:
                flip = noise_prob > 0 and rng.random() < noise_prob
                noised[lose] = noisy_negative(ranked[lose], rng, noise_kinds) if flip else None
            copy = noised.get(lose)
            if copy is not None and copy != ranked[w] and copy != ranked[lose]:
                pairs.append(PreferencePair(prompt, ranked[w], copy, w, lose, noised=True))
    return pairs
