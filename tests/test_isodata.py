import numpy as np
import pytest

from algos import isodata as isodata_module
from algos.isodata import isodata

pytestmark = pytest.mark.unit

PARAMS = dict(min_size=3, max_std=0.5, min_dist=2.0, max_merges=4, max_iter=20)


def _blobs(k, per_blob, rng, spread=0.1):
    angles = np.linspace(0, 2 * np.pi, k, endpoint=False)
    centres = 10 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    points = np.concatenate([c + spread * rng.normal(size=(per_blob, 2)) for c in centres])
    truth = np.repeat(np.arange(k), per_blob)
    return points, truth


def _same_partition(labels, truth):
    pairs = {(int(a), int(b)) for a, b in zip(labels, truth)}
    return len(pairs) == len(set(labels)) == len(set(truth))


@pytest.mark.parametrize("true_k,k_init", [(2, 5), (3, 8), (4, 2), (5, 2), (6, 3)])
def test_recovers_true_cluster_count(true_k, k_init):
    x, truth = _blobs(true_k, 20, np.random.default_rng(true_k))
    labels, centroids = isodata(x, k_init=k_init, rng=np.random.default_rng(0), **PARAMS)
    assert len(centroids) == true_k
    assert _same_partition(labels, truth)


def _count_calls(monkeypatch, name):
    calls = []
    original = getattr(isodata_module, name)

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(result)
        return result

    monkeypatch.setattr(isodata_module, name, spy)
    return calls


def test_split_step_runs_when_starting_with_too_few(monkeypatch):
    splits = _count_calls(monkeypatch, "_split")
    x, _ = _blobs(4, 20, np.random.default_rng(1))
    _, centroids = isodata(x, k_init=2, rng=np.random.default_rng(0), **PARAMS)
    assert any(split_any for _, split_any in splits)
    assert len(centroids) == 4


def test_merge_step_runs_when_starting_with_too_many(monkeypatch):
    merges = []
    original = isodata_module._merge

    def spy(centroids, counts, min_dist, max_merges):
        result = original(centroids, counts, min_dist, max_merges)
        merges.append(len(centroids) - len(result))
        return result

    monkeypatch.setattr(isodata_module, "_merge", spy)
    x, _ = _blobs(2, 20, np.random.default_rng(2))
    _, centroids = isodata(x, k_init=8, rng=np.random.default_rng(0), **PARAMS)
    assert sum(merges) > 0
    assert len(centroids) == 2


def test_reproducible_from_seed():
    x, _ = _blobs(4, 15, np.random.default_rng(3), spread=2.0)
    a = isodata(x, k_init=3, rng=np.random.default_rng(7), **PARAMS)
    b = isodata(x, k_init=3, rng=np.random.default_rng(7), **PARAMS)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_single_point():
    labels, centroids = isodata(np.array([[1.0, 2.0]]), k_init=4, rng=np.random.default_rng(0), **PARAMS)
    assert labels.tolist() == [0]
    np.testing.assert_array_equal(centroids, [[1.0, 2.0]])


def test_identical_points_form_one_cluster():
    x = np.ones((6, 3))
    labels, centroids = isodata(x, k_init=3, rng=np.random.default_rng(0), **PARAMS)
    assert labels.tolist() == [0] * 6
    np.testing.assert_array_equal(centroids, np.ones((1, 3)))


def test_fewer_points_than_min_size_keeps_one_cluster():
    x = np.array([[0.0, 0.0], [5.0, 5.0]])
    labels, centroids = isodata(x, k_init=2, rng=np.random.default_rng(0), **{**PARAMS, "min_size": 5})
    assert len(centroids) == 1 and labels.tolist() == [0, 0]
    np.testing.assert_allclose(centroids[0], [2.5, 2.5])


def test_small_clusters_are_discarded():
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(size=(30, 2)) * 0.1, [[10.0, 10.0]]])  # one outlier
    labels, centroids = isodata(x, k_init=2, rng=np.random.default_rng(0), **PARAMS)
    assert len(centroids) == 1  # the outlier's cluster (1 < min_size) was dropped
    assert labels[-1] == 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        isodata(np.zeros((0, 2)), k_init=2, rng=np.random.default_rng(0), **PARAMS)
    with pytest.raises(ValueError):
        isodata(np.zeros((3, 2)), k_init=0, rng=np.random.default_rng(0), **PARAMS)
