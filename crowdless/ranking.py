"""Label-free ranking of one prompt's answers: embed, then algos/ (TextRank, ISODATA, pairs, noise).

The one place that turns answers into a RankedGroup; the RankerWorker, the
`crowdless-rank` command and the Serve app's /v1/rank all call `rank_group`.
"""

from __future__ import annotations

import numpy as np

from algos.pairs import build_pairs, demote_answers, echoes_prompt, rank_answers
from configs.schema import RankingConfig
from crowdless.models.loading import resolve_model
from crowdless.data.records import RankedGroup


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
    finished: list[bool] | None = None,
) -> RankedGroup:
    """Rank answers [N] with their embeddings [N, D]; build preference pairs with noise.
    finished: whether each answer ended with EOS (ranking.cut_answers places the others);
    None, as for answers from outside a rollout: all finished. Answers that echo the prompt
    (ranking.echo_share) are placed by ranking.prompt_echoes; cut answers go below them."""
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
    echoes = [echoes_prompt(answer, prompt, config.echo_share) for answer in answers]
    kept = demote_answers(ranking.kept, [not echo for echo in echoes], config.prompt_echoes)
    kept = demote_answers(kept, finished or [True] * len(answers), config.cut_answers)
    pairs = build_pairs(
        [answers[i] for i in kept],
        config.interval,
        prompt=prompt,
        noise_share=config.noise_share,
        rng=rng,
        noise_kinds=tuple(config.noise_kinds),
    )
    return RankedGroup(
        prompt=prompt,
        answers=list(answers),
        scores=ranking.scores.tolist(),
        clusters=ranking.labels.tolist(),
        ranked=kept,
        pairs=pairs,
        echoes=echoes,
    )


def ranking_statistics(groups: list[RankedGroup]) -> dict[str, float]:
    """Per-iteration health of the label-free ranking, for metrics.jsonl.

    answers_kept            distinct answers per group after de-duplication
    lowest_answer_rejected  share of groups whose lowest-scored answer is the rejected side of a
                            real (not noised) pair: the clearest negative reached the reward model
    noised_pair_share       share of pairs whose rejected side is a noised copy
    pair_score_gap          mean TextRank score of chosen minus rejected, over real pairs
    response_echoes         share of the answers that only repeat their prompt: a label-free sign
                            that the policy is collapsing (docs/experiments.md E25)
    """
    pairs = [pair for group in groups for pair in group.pairs]
    gaps = [
        group.scores[group.ranked[pair.chosen_rank]] - group.scores[group.ranked[pair.rejected_rank]]
        for group in groups for pair in group.pairs if not pair.noised
    ]
    lowest_rejected = [
        any(group.ranked[pair.rejected_rank] == int(np.argmin(group.scores))
            for pair in group.pairs if not pair.noised)
        for group in groups if group.answers
    ]
    echoes = [echo for group in groups for echo in group.echoes]
    return {
        "pairs": len(pairs),
        "answers_kept": float(np.mean([len(group.ranked) for group in groups])) if groups else 0.0,
        "lowest_answer_rejected": float(np.mean(lowest_rejected)) if lowest_rejected else 0.0,
        "noised_pair_share": sum(pair.noised for pair in pairs) / len(pairs) if pairs else 0.0,
        "pair_score_gap": float(np.mean(gaps)) if gaps else 0.0,
        "response_echoes": float(np.mean(echoes)) if echoes else 0.0,
    }
