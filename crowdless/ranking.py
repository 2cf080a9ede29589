"""Label-free ranking of one prompt's answers: embed, then algos/ (TextRank, ISODATA, pairs, noise).

The one place that turns answers into a RankedGroup; the RankerWorker, the
`crowdless-rank` command and the Serve app's /v1/rank all call `rank_group`.
"""

from __future__ import annotations

import numpy as np

from algos.pairs import build_pairs, rank_answers
from configs.schema import RankingConfig
from crowdless.models import resolve_model
from crowdless.records import RankedGroup


def load_embedder(ref: str = "embedded:all-minilm-l6-v2", device: str = "cpu"):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model(ref), device=device)


def embed(embedder, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-norm sentence embeddings [N, D]."""
    return embedder.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
    )


def rank_group(
    prompt: str,
    answers: list[str],
    embeddings: np.ndarray,
    config: RankingConfig,
    rng: np.random.Generator,
) -> RankedGroup:
    """Rank answers [N] with their embeddings [N, D]; build preference pairs with noise."""
    if len(answers) != len(embeddings):
        raise ValueError(f"{len(answers)} answers but {len(embeddings)} embeddings")
    if not answers:
        return RankedGroup(prompt, [], [], [], [], [])
    ranking = rank_answers(
        embeddings,
        rng,
        damping=config.damping,
        tol=config.tol,
        max_iter=config.max_iter,
        isodata_params=config.isodata.model_dump(),
        deduplicate=config.deduplicate,
        order=config.order,
    )
    pairs = build_pairs(
        [answers[i] for i in ranking.kept],
        config.interval,
        prompt=prompt,
        noise_prob=config.noise_prob,
        rng=rng,
        noise_kinds=tuple(config.noise_kinds),
    )
    return RankedGroup(
        prompt=prompt,
        answers=list(answers),
        scores=ranking.scores.tolist(),
        clusters=ranking.labels.tolist(),
        ranked=ranking.kept,
        pairs=pairs,
    )
