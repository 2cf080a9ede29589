"""Does a policy answer prompts closer to their human references? Three sets, one judge.

Sets, each a list of distinct prompts with every reference the data gives them (`DistinctPrompt`):
    trained  the distinct prompts the run trains on: what a user gets on their own prompts
    unseen   distinct prompts of the run's held-out split (split by prompt: never trained on)
    ood      first turns of another source (eval.ood_source; default embedded:chitchat, or
             embedded:chatterbot for a run on chitchat), none of them a prompt of the run's data

The judge is outside the training loop. Greedy answers are scored against the references with
surface metrics (BLEU, chrF, GLEU, METEOR, token F1, exact match; algos/metrics.py), the best
embedding cosine over the references (eval.judge_embedding), and a loop flag. `ref_logprob` needs no
generation and shares nothing with the ranker: the mean per-token log-probability of each human
reference under the policy (teacher forcing, the run's dtype), averaged over a prompt's first
eval.logprob_references references. Two systems are compared per prompt with a paired bootstrap.
Where the judge embedding is the ranker's own (model.embedding), the cosine partly grades the
ranker's taste: the verdict never counts it alone.

Reward-model agreement (the paper's manual check made automatic): for unseen prompts, K sampled
answers are ordered by their judge similarity to the references; we report how often the reward
model's order (or, for dpo / listwise, which train no reward model, the policy's implicit reward
beta * log(pi / pi_ref)) and the label-free ranker's TextRank order equal that order in full
(random: 1/K!), and their pairwise accuracy.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from algos.metrics import answer_scores, distinct_n, load_wordnet, paired_bootstrap
from crowdless.data.prompt_sets import DistinctPrompt, PromptExample, distinct_prompts, first_turns, normalize_prompt

# dev: held-out prompts past the unseen set's, never trained on and never reported as the
# result: the set a setting is chosen on, so that unseen and ood stay untouched by that choice.
SETS = ("trained", "unseen", "ood", "dev")
# Metrics the verdict reads, in report order (METEOR as meteor_nosyn where WordNet is missing).
HEADLINE = ("chrf", "bleu", "meteor", "ref_logprob", "cosine")
# Per-answer figures that describe the answers themselves rather than their closeness.
DEGENERATION = ("loop", "truncated", "length")
# Who orders sampled answers in the agreement check, in report order.
ORDERERS = ("reward_model", "implicit_reward", "ranker")
CIRCULAR_NOTE = "the ranker's own embedding"


@dataclass
class SystemAnswers:
    """One system's greedy answers to one set's prompts."""

    name: str  # "iter-0", "iter-2", "baseline", ...
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

    def cosine(self, answers: list[str], references: list[list[str]]) -> np.ndarray:
        """[N]: each answer's best cosine over its own references."""
        flat = [r for refs in references for r in refs]
        a, r = self.embed(answers), self.embed(flat)
        bounds = np.cumsum([0] + [len(refs) for refs in references])
        return np.array([float(np.max(r[lo:hi] @ a[i])) for i, (lo, hi) in enumerate(zip(bounds, bounds[1:]))])

    def score(self, answers: list[str], references: list[list[str]]) -> dict[str, np.ndarray]:
        """Per-answer metrics [N] by name; references[i] holds answer i's references."""
        rows = [answer_scores(a, refs, self.wordnet) for a, refs in zip(answers, references)]
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


def verdict(table: dict[str, dict[str, float]], circular: bool = False) -> str:
    """'better' when some headline interval is above zero and none below; 'worse' the other way.
    circular: the cosine is the ranker's own embedding, so a cosine above zero alone is no gain."""
    metrics = [m for m in HEADLINE if m in table] + (["meteor_nosyn"] if "meteor_nosyn" in table else [])
    above = [m for m in metrics if table[m]["low"] > 0]
    below = [m for m in metrics if table[m]["high"] < 0]
    counted_above = [m for m in above if not (circular and m == "cosine")]
    named = ", ".join(above) + (f" ({CIRCULAR_NOTE}: not counted alone)"
                                if circular and above == ["cosine"] else "")
    if below and not counted_above:
        return f"worse ({', '.join(below)} below zero" + (f"; above: {named}" if above else "") + ")"
    if counted_above and not below:
        return f"better ({', '.join(above)} above zero)"
    if counted_above and below:
        return f"mixed (above: {', '.join(above)}; below: {', '.join(below)})"
    return "no change" + (f" (above: {named})" if above else "")


def verdict_line(tables: dict[str, dict[str, dict[str, float]]], circular: bool = False) -> str:
    """One verdict per set: 'unseen: better (chrf, bleu above zero); ood: no change'."""
    return "; ".join(f"{name}: {verdict(table, circular)}" for name, table in tables.items())


# ---- the three sets -----------------------------------------------------------------------------

def default_ood_source(data_source: str) -> str:
    """Another corpus than the run's: chatterbot for a run on chitchat, chitchat for any other."""
    return "embedded:chatterbot" if data_source.startswith("embedded:chitchat") else "embedded:chitchat"


def trained_set(trained_prompts: list[str], train: list[PromptExample], limit: int | None) -> list[DistinctPrompt]:
    """The distinct prompts trained on, in the order first trained on, each with every reference
    its rows in the training split carry (a repeated prompt has several)."""
    wanted = list(dict.fromkeys(normalize_prompt(p) for p in trained_prompts))[:limit]
    by_key = {normalize_prompt(d.prompt): d for d in distinct_prompts(train)}
    return [by_key[key] for key in wanted if key in by_key]


def ood_set(source: str, run_examples: list[PromptExample], limit: int | None, seed: int) -> list[DistinctPrompt]:
    """First turns of another source, without any prompt the run's data holds, in a seeded order."""
    from crowdless.data.prompt_sets import load_prompts

    examples, _ = load_prompts(source, on_bad_row="skip")
    taken = {normalize_prompt(e.prompt) for e in run_examples}
    candidates = [d for d in distinct_prompts(first_turns(examples)) if normalize_prompt(d.prompt) not in taken]
    order = np.random.default_rng([seed, 29]).permutation(len(candidates))
    return [candidates[i] for i in order[:limit]]


def build_sets(eval_config, data_source: str, train: list[PromptExample], held_out: list[PromptExample],
               trained_prompts: list[str], seed: int) -> dict[str, list[DistinctPrompt]]:
    """{set name: distinct prompts} for the sets this config asks for, each at most
    eval.max_prompts; dev takes up to eval.dev_prompts of the held-out prompts after unseen's
    (none when unseen takes them all); a set with no prompt is left out."""
    limit = eval_config.max_prompts
    held_out_prompts = distinct_prompts(held_out)
    sets = {"trained": trained_set(trained_prompts, train, limit), "unseen": held_out_prompts[:limit]}
    source = default_ood_source(data_source) if eval_config.ood_source == "auto" else eval_config.ood_source
    if source is not None:
        sets["ood"] = ood_set(source, train + held_out, limit, seed)
    if limit is not None:
        sets["dev"] = held_out_prompts[limit:limit + eval_config.dev_prompts]
    return {name: prompts for name, prompts in sets.items() if prompts}


def save_sets(path: Path, sets: dict[str, list[DistinctPrompt]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: [d.to_json() for d in prompts] for name, prompts in sets.items()}, indent=1))


def load_sets(path: Path) -> dict[str, list[DistinctPrompt]]:
    return {name: [DistinctPrompt(d["prompt"], d["references"]) for d in prompts]
            for name, prompts in json.loads(path.read_text()).items()}


def mean_reference_logprobs(prompts: list[DistinctPrompt], answer_logprobs, per_prompt: int) -> np.ndarray:
    """[N]: per prompt, the mean over its first `per_prompt` references of their mean per-token
    log-probability. answer_logprobs(prompts, answers) -> per-token means, one call for all rows."""
    rows = [(d.prompt, r) for d in prompts for r in d.references[:per_prompt]]
    values = np.asarray(answer_logprobs([p for p, _ in rows], [a for _, a in rows]), dtype=float)
    bounds = np.cumsum([0] + [len(d.references[:per_prompt]) for d in prompts])
    return np.array([values[lo:hi].mean() for lo, hi in zip(bounds, bounds[1:])])


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

def write_answers(path: Path, prompts: list[DistinctPrompt], system: SystemAnswers,
                  scores: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for i, prompt in enumerate(prompts):
            row = {"prompt": prompt.prompt, "references": prompt.references, "answer": system.answers[i],
                   "length": system.lengths[i], "truncated": system.truncated[i],
                   **{key: float(values[i]) for key, values in scores.items()}}
            out.write(json.dumps(row) + "\n")


def read_answers(path: Path) -> tuple[SystemAnswers, dict[str, np.ndarray]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    fixed = {"prompt", "references", "answer", "length", "truncated"}
    system = SystemAnswers(path.stem, [r["answer"] for r in rows], [r["length"] for r in rows],
                           [r["truncated"] for r in rows])
    scores = {key: np.array([r[key] for r in rows], dtype=float) for key in rows[0] if key not in fixed}
    return system, scores


def format_sets_table(tables: dict[str, dict[str, dict[str, float]]], circular: bool = False) -> str:
    """The console's view of every set at once: per metric and set, the difference from the
    baseline and its interval, marked >0 / <0 where the interval excludes zero."""
    def cell(row):
        mark = " >0" if row["low"] > 0 else " <0" if row["high"] < 0 else ""
        return f"{row['difference']:+.3f} ({row['low']:+.3f}, {row['high']:+.3f}){mark}"

    names = list(tables)
    metrics = list(dict.fromkeys(key for table in tables.values() for key in table))
    lines = [f"  {'metric':<13}" + "".join(f"{name:<31}" for name in names)]
    for key in metrics:
        label = f"{key}*" if circular and key == "cosine" else key
        lines.append(f"  {label:<13}" + "".join(f"{cell(tables[n][key]) if key in tables[n] else '':<31}"
                                               for n in names).rstrip())
    if circular and "cosine" in metrics:
        lines.append(f"  * {CIRCULAR_NOTE}: never counted alone")
    return "\n".join(lines)


# ---- one run's evaluation ---------------------------------------------------------------------

class HeldOutEvaluation:
    """Fixed evaluation sets and their judge. `generate(prompts, n, greedy, max_new_tokens)` is a
    RolloutWorker's (in process) or a worker pool's; `answer_logprobs(prompts, answers)` gives the
    per-token mean log-probability of each answer under the system being judged. Answers and
    per-answer scores go to OUT/answers/SET/NAME.jsonl, so a resumed run or a later report compares
    with them."""

    def __init__(self, eval_config, sets: dict[str, list[DistinctPrompt]], out_dir: Path, seed: int,
                 circular: bool = False):
        from crowdless.data.prompt_sets import DataError

        if not sets:
            raise DataError("evaluation needs prompts with reference answers: set data.reference_field "
                            "and data.eval_fraction > 0, or eval.ood_source")
        self.config, self.sets, self.out_dir, self.seed = eval_config, sets, out_dir, seed
        self.circular = circular  # the judge embedding is the ranker's
        self._judge: Judge | None = None

    @property
    def judge(self) -> Judge:
        if self._judge is None:
            self._judge = Judge(self.config.judge_embedding)
        return self._judge

    def answers_path(self, set_name: str, name: str) -> Path:
        return self.out_dir / "answers" / set_name / f"{name}.jsonl"

    def evaluate(self, name: str, generate, answer_logprobs) -> dict[str, float]:
        """Greedy answers of one system to every set (one generate call), scored and written, and
        the references' log-probability; returns the metric means as {SET_METRIC: value}."""
        everything = [d for prompts in self.sets.values() for d in prompts]
        rollouts = [per_prompt[0] for per_prompt in
                    generate([d.prompt for d in everything], 1, True, self.config.max_new_tokens)]
        logprobs = mean_reference_logprobs(everything, answer_logprobs, self.config.logprob_references)
        summary, start = {}, 0
        for set_name, prompts in self.sets.items():
            mine = rollouts[start:start + len(prompts)]
            system = SystemAnswers(name, [r.response_text.strip() for r in mine],
                                   [len(r.response_ids) for r in mine], [not r.finished for r in mine])
            scores = self.judge.score(system.answers, [d.references for d in prompts])
            scores["ref_logprob"] = logprobs[start:start + len(prompts)]
            write_answers(self.answers_path(set_name, name), prompts, system, scores)
            summary.update({f"{set_name}_{key}": value for key, value in summarize(system, scores).items()})
            start += len(prompts)
        return summary

    def compare(self, baseline: str, name: str) -> dict[str, dict[str, dict[str, float]]]:
        """{set: paired comparison of two evaluated systems}, from their answer files."""
        return {set_name: compare_answer_files(self.answers_path(set_name, baseline),
                                               self.answers_path(set_name, name), self.seed,
                                               self.config.bootstrap_resamples)
                for set_name in self.sets}

    def agreement(self, generate, scorers: dict, ranker_embedder=None, answers: int = 4) -> dict[str, float]:
        """Sample `answers` per unseen prompt; the reference order is their best judge cosine to the
        references. Reports full-order agreement and pairwise accuracy of each scorer in `scorers`
        ({name in ORDERERS: score(prompts, answers) -> floats}, empty where the run has none) and
        of TextRank over the ranker's embeddings."""
        from algos.textrank import similarity_graph, textrank
        from crowdless.ranking import embed

        held_out = self.sets.get("unseen") or next(iter(self.sets.values()))
        chosen = held_out[:self.config.agreement_prompts]
        samples = generate([d.prompt for d in chosen], answers, False, self.config.max_new_tokens)
        targets = []
        orderers: dict[str, list[np.ndarray]] = {name: [] for name in [*scorers, "ranker"]}
        for prompt, rollouts in zip(chosen, samples):
            texts = [r.response_text.strip() for r in rollouts]
            targets.append(self.judge.cosine(texts, [prompt.references] * len(texts)))
            for name, score in scorers.items():
                orderers[name].append(np.array(score([prompt.prompt] * len(texts), texts)))
            vectors = embed(ranker_embedder, texts) if ranker_embedder is not None else self.judge.embed(texts)
            orderers["ranker"].append(textrank(similarity_graph(vectors)))
        return agreement(orderers, targets)


def compare_answer_files(baseline_path: Path, system_path: Path, seed: int,
                         resamples: int = 1000) -> dict[str, dict[str, float]]:
    """Paired comparison of two answer files of one set: every scored metric, then length and
    the cut-at-cap share."""
    base_system, base_scores = read_answers(baseline_path)
    system, scores = read_answers(system_path)
    if len(base_system.answers) != len(system.answers):
        raise ValueError(f"{baseline_path} and {system_path} answered different prompt sets")
    table = compare(base_scores, scores, seed, resamples)
    for key, values in (("length", "lengths"), ("truncated", "truncated")):
        b = np.array(getattr(base_system, values), dtype=float)
        s = np.array(getattr(system, values), dtype=float)
        table[key] = compare({key: b}, {key: s}, seed, resamples)[key]
    return table


def cut_to_words(answer: str, words: int) -> str:
    """The answer's first `words` whitespace-separated words (all of it when it is shorter)."""
    return " ".join(answer.split()[:words])


def length_matched_scores(baseline_rows: list[dict], system_rows: list[dict], wordnet,
                          metrics: tuple[str, ...] = ("chrf", "bleu", "meteor", "meteor_nosyn")
                          ) -> dict[str, np.ndarray]:
    """Per prompt, the baseline's answer cut to the system's answer's word count, scored against
    the references: the baseline as long as the system. A policy that only learned to stop earlier
    scores no better than it (docs/experiments.md E24). Rows are read_answers' file rows, one
    prompt each, in the same order. Metrics keep answer_scores' names: METEOR scored without
    WordNet is meteor_nosyn, a different metric from meteor."""
    if [r["prompt"] for r in baseline_rows] != [r["prompt"] for r in system_rows]:
        raise ValueError("the baseline and the system answered different prompts")
    rows = [answer_scores(cut_to_words(b["answer"], len(s["answer"].split())), b["references"], wordnet)
            for b, s in zip(baseline_rows, system_rows)]
    return {m: np.array([row[m] for row in rows], dtype=float) for m in metrics if m in rows[0]}
