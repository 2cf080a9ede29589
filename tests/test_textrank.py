import numpy as np
import pytest

from algos.textrank import similarity_graph, textrank

pytestmark = pytest.mark.unit


def _random_similarity(n, rng):
    x = rng.normal(size=(n, 6))
    return similarity_graph(x)


def _fixed_point(similarity, damping=0.85):
    """The stationary scores solved directly: S = d * (S @ P + dangling mass / N) + (1 - d) / N."""
    n = len(similarity)
    out = similarity.sum(axis=1)
    transition = np.where(out[:, None] > 0, similarity / np.where(out > 0, out, 1)[:, None], 1.0 / n)
    # S (I - d P) = (1 - d) / N  with dangling rows spread uniformly
    return np.linalg.solve((np.eye(n) - damping * transition).T, np.full(n, (1 - damping) / n))


@pytest.mark.parametrize("n", [2, 5, 16, 40])
def test_scores_are_pagerank_fixed_point(n):
    similarity = _random_similarity(n, np.random.default_rng(n))
    scores = textrank(similarity, tol=1e-12, max_iter=10_000)
    np.testing.assert_allclose(scores, _fixed_point(similarity), atol=1e-9)


def test_dangling_node_spreads_its_score_uniformly():
    similarity = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0.0]])
    scores = textrank(similarity, tol=1e-12)
    np.testing.assert_allclose(scores, _fixed_point(similarity), atol=1e-9)
    assert scores[0] == pytest.approx(scores[1]) and scores[2] < scores[0]


def test_hand_computed_three_nodes():
    # Path graph a - b - c, unit weights. b collects everything a and c send:
    # S_a = S_c = (1-d)/3 + d * S_b / 2,  S_b = (1-d)/3 + d * (S_a + S_c).
    # With d = 0.85: S_b = 0.05 + 0.85 * 2 S_a and S_a = 0.05 + 0.425 S_b
    # => S_a = 0.05 + 0.425 (0.05 + 1.7 S_a) => S_a (1 - 0.7225) = 0.07125
    s_a = 0.07125 / 0.2775
    s_b = 0.05 + 1.7 * s_a
    similarity = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0.0]])
    np.testing.assert_allclose(textrank(similarity, tol=1e-12), [s_a, s_b, s_a], atol=1e-9)
    assert abs(2 * s_a + s_b - 1) < 1e-12


def test_weights_matter_each_share_divided_by_outgoing_weight():
    # Node 0 is strongly tied to 1 and weakly to 2: 1 must outrank 2.
    similarity = np.array([[0, 0.9, 0.1], [0.9, 0, 0.1], [0.1, 0.1, 0.0]])
    scores = textrank(similarity)
    assert scores[1] > scores[2] and scores[0] > scores[2]
    assert scores.sum() == pytest.approx(1.0)


def test_similarity_graph_clips_and_zeroes_diagonal():
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [1.0, 1.0]])
    similarity = similarity_graph(x)
    assert np.all(np.diag(similarity) == 0)
    assert similarity[0, 1] == 0  # cosine -1 clipped
    assert similarity[0, 2] == pytest.approx(1 / np.sqrt(2))
    np.testing.assert_allclose(similarity, similarity.T)


def test_rejects_negative_and_non_square():
    with pytest.raises(ValueError, match="non-negative"):
        textrank(np.array([[0, -1], [-1, 0.0]]))
    with pytest.raises(ValueError, match="square"):
        textrank(np.zeros((2, 3)))
    assert textrank(np.zeros((0, 0))).shape == (0,)
