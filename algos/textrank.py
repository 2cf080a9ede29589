"""TextRank over a similarity graph (Mihalcea & Tarau 2004; the paper's Eq. 4).

    S(i) = (1 - d) / N + d * sum_j  w_ji / (sum_k w_jk) * S(j)

The paper writes the teleport term as (1 - d); dividing by N only rescales the
fixed point (scores here sum to 1, as `networkx.pagerank` gives them), so the
ranking is the same. A node whose similarities are all zero has no outgoing
weight; networkx spreads its score uniformly.
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
    """Weighted PageRank scores [N] (summing to 1) of a symmetric similarity matrix [N, N], by
    `networkx.pagerank` (power iteration until the L1 change falls below N * tol, or max_iter)."""
    import networkx as nx

    w = np.asarray(similarity, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"similarity must be a square matrix, got shape {w.shape}")
    if (w < 0).any():
        raise ValueError("similarity must be non-negative (clip negative cosines to 0)")
    n = w.shape[0]
    if n == 0:
        return np.zeros(0)
    scores = nx.pagerank(nx.from_numpy_array(w), alpha=damping, tol=tol, max_iter=max_iter, weight="weight")
    return np.array([scores[node] for node in range(n)])
