"""Held-out evaluation: does a policy answer unseen prompts closer to their references?

The judge is fixed and outside the training loop: greedy answers to held-out prompts,
scored against the reference answers with surface metrics (BLEU, chrF, GLEU, METEOR,
token F1, exact match; algos/metrics.py) and the cosine between sentence embeddings
of answer and reference (eval.judge_embedding). Two systems are compared per prompt
with a paired bootstrap: the same resampled prompts for both.

Reward-model agreement (the paper's manual check made automatic): for held-out prompts,
K sampled answers are ordered by their judge similarity to the reference; we report how
often the reward model's order (or, for dpo / listwise, which train no reward model, the
policy's implicit reward beta * log(pi / pi_ref)) and the label-free ranker's TextRank order
equal that order in full (random: 1/K!), and their pairwise accuracy.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from algos.metrics import answer_scores, distinct_n, load_wordnet, paired_bootstrap

# Metrics where a difference of systems is reported with an interval, in report order.
HEADLINE = ("cosine", "chrf", "bleu")
# Who orders sampled answers in the agreement check, in report order.
ORDERERS = ("reward_model", "implicit_reward", "ranker")


@dataclass
class SystemAnswers:
    """One system's greedy answers to the held-out prompts."""

    name: str  # "baseline", "iter-2", ...
    answers: list[str]
    lengths: list[int]  # response tokens
    truncated: list[bool]  # hit the token cap


class Judge:
    """Scores answers against references. Loads its embedding model and WordNet once."""

    def __init__(self, embedding_model: str):
        from crowdless.ranking import load_embedder

        self.embedder = load_embedder(embedding_model)
        self.wordnet = load_wordnet()

    def embed(self, texts: list[str]) -> np.ndarray:
        from crowdless.ranking import embed

        return embed(self.embedder, [t if t.strip() else "." for t in texts])

    def cosine(self, answers: list[str], references: list[str]) -> np.ndarray:
        a, r = self.embed(answers), self.embed(references)
        return np.sum(a * r, axis=1)

    def score(self, answers: list[str], references: list[str]) -> dict[str, np.ndarray]:
        """Per-answer metrics [N] by name."""
        rows = [answer_scores(a, r, self.wordnet) for a, r in zip(answers, references)]
        scores = {key: np.array([row[key] for row in rows], dtype=float) for key in rows[0]}
        scores["cosine"] = self.cosine(answers, references)
        return scores


def summarize(system: SystemAnswers, scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Means of the per-answer metrics, plus length, cut-at-cap share and distinct-n."""
    summary = {key: float(values.mean()) for key, values in scores.items()}
    summary["length"] = float(np.mean(system.lengths))
    summary["truncated"] = float(np.mean(system.truncated))
    summary["distinct_1"] = distinct_n(system.answers, 1)
    summary["distinct_2"] = distinct_n(system.answers, 2)
    return summary


def compare(baseline: dict[str, np.ndarray], system: dict[str, np.ndarray], seed: int,
            resamples: int = 1000) -> dict[str, dict[str, float]]:
    """Per metric: baseline mean, system mean, mean difference and its paired-bootstrap 95% interval.
    Only metrics both were scored on: a run judged where WordNet was missing has `meteor_nosyn`
    instead of `meteor`, and the two are different metrics."""
    table = {}
    for key in [key for key in baseline if key in system]:
        rng = np.random.default_rng([seed, 17])  # the same resampled prompts for every metric
        diff, low, high = paired_bootstrap(baseline[key], system[key], rng, resamples=resamples)
        table[key] = {"baseline": float(baseline[key].mean()), "system": float(system[key].mean()),
                      "difference": diff, "low": low, "high": high}
    return table


def verdict(table: dict[str, dict[str, float]], metrics=HEADLINE) -> str:
    """'better' when some headline interval is above zero and none below; 'worse' the other way."""
    above = [m for m in metrics if m in table and table[m]["low"] > 0]
    below = [m for m in metrics if m in table and table[m]["high"] < 0]
    if below and not above:
        return f"worse ({', '.join(below)} below zero)"
    if above and not below:
        return f"better ({', '.join(above)} above zero)"
    if above and below:
        return f"mixed (above: {', '.join(above)}; below: {', '.join(below)})"
    return "no significant difference"


# ---- reward-model and ranker agreement ------------------------------------------------------

def order_agreement(predicted: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Scores [K] of a predictor and of the target for one prompt's K answers ->
    (1.0 if the two orders are equal in full else 0.0, share of the K(K-1)/2 pairs ordered alike)."""
    pairs = list(itertools.combinations(range(len(target)), 2))
    alike = [np.sign(predicted[i] - predicted[j]) == np.sign(target[i] - target[j]) for i, j in pairs]
    return float(all(alike)), float(np.mean(alike))


def agreement(score_sets: dict[str, list[np.ndarray]], targets: list[np.ndarray]) -> dict[str, float]:
    """Mean full-order agreement and pairwise accuracy of each predictor against the targets."""
    k = len(targets[0]) if targets else 0
    out = {"agreement_prompts": len(targets), "agreement_answers": k,
           "agreement_random_full": 1 / math.factorial(k) if k else float("nan")}
    for name, predictions in score_sets.items():
        results = np.array([order_agreement(p, t) for p, t in zip(predictions, targets)])
        out[f"{name}_full_order"] = float(results[:, 0].mean()) if len(results) else float("nan")
        out[f"{name}_pairwise"] = float(results[:, 1].mean()) if len(results) else float("nan")
    return out


# ---- files ------------------------------------------------------------------------------------

def write_answers(path: Path, prompts: list[str], references: list[str], system: SystemAnswers,
                  scores: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for i, (prompt, reference) in enumerate(zip(prompts, references)):
            row = {"prompt": prompt, "reference": reference, "answer": system.answers[i],
                   "length": system.lengths[i], "truncated": system.truncated[i],
                   **{key: float(values[i]) for key, values in scores.items()}}
            out.write(json.dumps(row) + "\n")


def read_answers(path: Path) -> tuple[SystemAnswers, dict[str, np.ndarray]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    fixed = {"prompt", "reference", "answer", "length", "truncated"}
    system = SystemAnswers(path.stem, [r["answer"] for r in rows], [r["length"] for r in rows],
                           [r["truncated"] for r in rows])
    scores = {key: np.array([r[key] for r in rows], dtype=float) for key in rows[0] if key not in fixed}
    return system, scores


def format_table(table: dict[str, dict[str, float]], label: str = "system") -> str:
    lines = [f"  {'metric':<14}{'baseline':>10}{label:>10}{'diff':>10}   95% interval"]
    for key, row in table.items():
        lines.append(f"  {key:<14}{row['baseline']:>10.4f}{row['system']:>10.4f}{row['difference']:>+10.4f}"
                     f"   ({row['low']:+.4f}, {row['high']:+.4f})")
    return "\n".join(lines)


# ---- one run's held-out evaluation ------------------------------------------------------------

class HeldOutEvaluation:
    """A fixed held-out subset and its judge. `generate(prompts, n, greedy, max_new_tokens)` is a
    RolloutWorker's (in process) or a worker pool's; answers and per-answer scores of each system
    go to OUT/answers/NAME.jsonl, so a resumed run or a later report compares with them."""

    def __init__(self, eval_config, examples: list, out_dir: Path, seed: int):
        from crowdless.data import DataError

        examples = [e for e in examples if e.reference][: eval_config.max_prompts]
        if not examples:
            raise DataError("evaluation needs held-out prompts with reference answers: set "
                            "data.reference_field and data.eval_fraction > 0")
        self.config, self.out_dir, self.seed = eval_config, out_dir, seed
        self.prompts = [e.prompt for e in examples]
        self.references = [e.reference for e in examples]
        self._judge: Judge | None = None

    @property
    def judge(self) -> Judge:
        if self._judge is None:
            self._judge = Judge(self.config.judge_embedding)
        return self._judge

    def answers_path(self, name: str) -> Path:
        return self.out_dir / "answers" / f"{name}.jsonl"

    def evaluate(self, name: str, generate) -> dict[str, float]:
        """Greedy answers of one system, scored and written; returns the metric means."""
        rollouts = [per_prompt[0] for per_prompt in generate(self.prompts, 1, True, self.config.max_new_tokens)]
        system = SystemAnswers(name, [r.response_text.strip() for r in rollouts],
                               [len(r.response_ids) for r in rollouts], [not r.finished for r in rollouts])
        scores = self.judge.score(system.answers, self.references)
        write_answers(self.answers_path(name), self.prompts, self.references, system, scores)
        return summarize(system, scores)

    def compare(self, baseline: str, name: str) -> dict[str, dict[str, float]]:
        """Paired comparison of two evaluated systems, from their answer files."""
        base_system, base_scores = read_answers(self.answers_path(baseline))
        system, scores = read_answers(self.answers_path(name))
        if base_system.answers and len(base_system.answers) != len(system.answers):
            raise ValueError(f"{baseline} and {name} answered different prompt sets")
        table = compare(base_scores, scores, self.seed, self.config.bootstrap_resamples)
        for key, values in (("length", "lengths"), ("truncated", "truncated")):
            b = np.array(getattr(base_system, values), dtype=float)
            s = np.array(getattr(system, values), dtype=float)
            table[key] = compare({key: b}, {key: s}, self.seed, self.config.bootstrap_resamples)[key]
        return table

    def agreement(self, generate, scorers: dict, ranker_embedder=None, answers: int = 4) -> dict[str, float]:
        """Sample `answers` per prompt; the reference order is their judge cosine to the reference.
        Reports full-order agreement and pairwise accuracy of each scorer in `scorers` ({name in
        ORDERERS: score(prompts, answers) -> floats}, empty where the run has none) and of
        TextRank over the ranker's embeddings."""
        from algos.textrank import similarity_graph, textrank
        from crowdless.ranking import embed

        count = self.config.agreement_prompts
        prompts, references = self.prompts[:count], self.references[:count]
        samples = generate(prompts, answers, False, self.config.max_new_tokens)
        targets = []
        orderers: dict[str, list[np.ndarray]] = {name: [] for name in [*scorers, "ranker"]}
        for prompt, reference, rollouts in zip(prompts, references, samples):
            texts = [r.response_text.strip() for r in rollouts]
            targets.append(self.judge.cosine(texts, [reference] * len(texts)))
            for name, score in scorers.items():
                orderers[name].append(np.array(score([prompt] * len(texts), texts)))
            vectors = embed(ranker_embedder, texts) if ranker_embedder is not None else self.judge.embed(texts)
            orderers["ranker"].append(textrank(similarity_graph(vectors)))
        return agreement(orderers, targets)
