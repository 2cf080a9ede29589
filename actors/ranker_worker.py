"""RankerWorker: embeds each prompt's answers and ranks them without labels (crowdless.ranking)."""

from __future__ import annotations

import numpy as np

from actors import node_id, start_worker_process
from configs.schema import RankingConfig
from crowdless.ranking import embed, load_embedder, rank_group
from crowdless.data.records import RankedGroup


class RankerWorker:
    def __init__(self, embedding_model: str, ranking: RankingConfig, seed: int):
        self.config, self.seed = ranking, seed
        start_worker_process("ranker")
        self.embedder = load_embedder(embedding_model)

    def ready(self) -> str:
        return node_id()

    def rank(self, groups: list[tuple[int, str, list[str], list[bool]]], iteration: int) -> list[RankedGroup]:
        """groups: (prompt's position in the iteration, prompt, answers, whether each ended with EOS).
        One embedding call for all; each group's randomness is seeded by (seed, iteration,
        position), so any worker gives the same result."""
        vectors = embed(self.embedder, [a for _, _, answers, _ in groups for a in answers])
        ranked, offset = [], 0
        for position, prompt, answers, finished in groups:
            rng = np.random.default_rng([self.seed, iteration, position])
            ranked.append(rank_group(prompt, answers, vectors[offset : offset + len(answers)], self.config, rng,
                                     finished))
            offset += len(answers)
        return ranked
