"""TextRank over a similarity graph (Mihalcea & Tarau 2004; the paper's Eq. 4).

    S(i) = (1 - d) / N + d * sum_j  w_ji / (sum_k w_jk) * S(j)

The paper writes the teleport term as (1 - d); dividing by N only rescales the
fixed point (scores here sum to 1, the convention of `networkx.pagerank`), so
the ranking is the same. A node whose similarities are all zero has no
outgoing weight; its score is spread uniformly, as networkx does (choice).
"""

from __future__ import annotations

import numpy as np


def similarity_graph(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarities [N, N] of embeddings [N, D], negatives clipped to 0, zero diagonal."""
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    similarity = np.clip(x @ x.T, 0.0, None)
    np.fill_diagonal(similarity, 0.0)
    return similarity


def textrank(
    similarity: np.ndarray, damping: float = 0.85, tol: float = 1e-6, max_iter: int = 1000
) -> np.ndarray:
    """Weighted PageRank scores [N] (summing to 1) of a symmetric similarity matrix [N, N].

    Power iteration stops when the L1 change falls below N * tol (networkx's rule)
    or after max_iter sweeps.
    """
    w = np.asarray(similarity, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"similarity must be a square matrix, got shape {w.shape}")
    if (w < 0).any():
        raise ValueError("similarity must be non-negative (clip negative cosines to 0)")
    n = w.shape[0]
    if n == 0:
        return np.zeros(0)
    out_weight = w.sum(axis=1)
    dangling = out_weight == 0
    # transition[j, i]: share of node j's score that flows to node i.
    transition = np.divide(w, out_weight[:, None], out=np.zeros_like(w), where=~dangling[:, None])
    scores = np.full(n, 1.0 / n)
    for _ in range(max_iter):
        previous = scores
        dangling_mass = previous[dangling].sum()
        scores = damping * (previous @ transition + dangling_mass / n) + (1.0 - damping) / n
        if np.abs(scores - previous).sum() < n * tol:
            break
    return scores
