"""ISODATA clustering (Ball & Hall 1965), steps as in Memarsadeghi et al. 2007.

Parameters keep the literature's names in the docstrings:
    k_init      desired number of clusters (k_init; also the initial count)
    min_size    theta_N: clusters with fewer members are discarded
    max_std     theta_S: a cluster whose largest per-dimension std exceeds it may split
    min_dist    theta_C: clusters whose centres are closer than this may merge
    max_merges  P (L): at most this many pairs merged per iteration
    max_iter    I: number of iterations

Each iteration: (2) assign points to the nearest centre, (3) discard small
clusters and reassign their points, (4) recompute centres, (5) average
distances, (6) choose split or merge, (7-8) split along the dimension of
largest spread, (9) merge the closest pairs. A final assignment labels the points.
"""

from __future__ import annotations

import numpy as np


def _assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    distances = ((x[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return distances.argmin(axis=1)


def _drop_small(
    x: np.ndarray, centroids: np.ndarray, labels: np.ndarray, min_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Step 3. Never drops every cluster: with too few points the largest one stays (choice)."""
    counts = np.bincount(labels, minlength=len(centroids))
    keep = counts >= min_size
    if not keep.any():
        keep = counts == counts.max()
        keep[np.argmax(keep) + 1 :] = False
    centroids = centroids[keep]
    return centroids, _assign(x, centroids)


def _centroids_of(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    return np.stack([x[labels == j].mean(axis=0) for j in range(k)])


def _relabel_nonempty(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used = np.unique(labels)
    remap = np.full(labels.max() + 1, -1)
    remap[used] = np.arange(len(used))
    labels = remap[labels]
    return labels, _centroids_of(x, labels, len(used))


def _split(
    x: np.ndarray,
    centroids: np.ndarray,
    labels: np.ndarray,
    k_init: int,
    min_size: int,
    max_std: float,
) -> tuple[np.ndarray, bool]:
    """Steps 7-8: split clusters whose largest per-dimension std exceeds theta_S."""
    k = len(centroids)
    mean_dist = np.array([np.linalg.norm(x[labels == j] - centroids[j], axis=1).mean() for j in range(k)])
    counts = np.bincount(labels, minlength=k)
    overall = (mean_dist * counts).sum() / counts.sum()
    new_centroids = []
    split_any = False
    for j in range(k):
        std = x[labels == j].std(axis=0)
        dim = int(std.argmax())
        wide = std[dim] > max_std
        large_and_loose = mean_dist[j] > overall and counts[j] > 2 * (min_size + 1)
        if wide and (large_and_loose or k <= k_init / 2):
            offset = np.zeros_like(centroids[j])
            offset[dim] = std[dim]
            new_centroids += [centroids[j] + offset, centroids[j] - offset]
            split_any = True
        else:
            new_centroids.append(centroids[j])
    return np.stack(new_centroids), split_any


def _merge(
    centroids: np.ndarray, counts: np.ndarray, min_dist: float, max_merges: int
) -> np.ndarray:
    """Step 9: merge up to P closest pairs closer than theta_C, each centre at most once."""
    k = len(centroids)
    candidates = sorted(
        (float(np.linalg.norm(centroids[a] - centroids[b])), a, b)
        for a in range(k)
        for b in range(a + 1, k)
    )
    used: set[int] = set()
    merged = []
    for distance, a, b in candidates:
        if distance >= min_dist or len(merged) >= max_merges:
            break
        if a in used or b in used:
            continue
        used |= {a, b}
        merged.append((counts[a] * centroids[a] + counts[b] * centroids[b]) / (counts[a] + counts[b]))
    untouched = [centroids[j] for j in range(k) if j not in used]
    return np.stack(untouched + merged)


def isodata(
    x: np.ndarray,
    k_init: int,
    min_size: int,
    max_std: float,
    min_dist: float,
    max_merges: int,
    max_iter: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster points x [N, D]. Returns (labels [N] in 0..K-1, centroids [K, D]).

    Initial centres are k_init distinct points drawn with `rng`, so a seed gives
    the same clustering every time.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty [N, D] array, got shape {x.shape}")
    if k_init < 1 or min_size < 1 or max_iter < 1 or max_merges < 0:
        raise ValueError("k_init, min_size and max_iter must be >= 1 and max_merges >= 0")
    distinct = np.unique(x, axis=0)
    k = min(k_init, len(distinct))
    centroids = distinct[rng.choice(len(distinct), size=k, replace=False)]

    for iteration in range(1, max_iter + 1):
        labels = _assign(x, centroids)  # step 2
        centroids, labels = _drop_small(x, centroids, labels, min_size)  # step 3
        labels, centroids = _relabel_nonempty(x, labels)  # step 4
        last = iteration == max_iter
        k = len(centroids)
        if not last and (k <= k_init / 2 or (iteration % 2 == 1 and k < 2 * k_init)):  # step 6
            centroids, split_any = _split(x, centroids, labels, k_init, min_size, max_std)
            if split_any:
                continue  # back to step 2 with the new centres
        if not last:  # on the last iteration theta_C is 0: nothing merges
            counts = np.bincount(labels, minlength=k)
            centroids = _merge(centroids, counts, min_dist, max_merges)  # step 9

    labels = _assign(x, centroids)
    return _relabel_nonempty(x, labels)
