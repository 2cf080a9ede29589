"""Does a run make the model better? Three sets of prompts, greedy answers, scored against references.

    python jobs/evaluate.py --run-dir runs/default [--checkpoints latest|all|N,M] [--baseline MODEL]
                            [--data SOURCE] [--max-prompts N] [--no-agreement] [key.sub=value ...]

The baseline is the run's starting model (model.policy) unless --baseline names another. The sets
(crowdless/evaluation/judge.py): trained (the distinct prompts in the run's samples/), unseen (its
held-out split, never trained on) and ood (eval.ood_source); with --data, one set "data" of every
distinct prompt of that source (any spelling data.source accepts, with a reference field). For
each checkpoint and set: the mean difference from the baseline per metric, ref_logprob (the
references' per-token log-probability) included, with a paired bootstrap 95% interval; then the
reward model's and the ranker's agreement with the reference order of sampled answers. Writes
RUN/eval/metrics.json, report.md, PNG plots and every answer under RUN/eval/answers/SET/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout

from configs.schema import ConfigError, load_config  # noqa: E402
from crowdless.data.prompt_sets import DataError, distinct_prompts, load_prompt_split, load_prompts  # noqa: E402
from crowdless.models.loading import ModelError, resolve_dtype, resolve_model  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Held-out evaluation of a run's checkpoints against its base model.")
    parser.add_argument("--run-dir", required=True, help="the run directory to evaluate")
    parser.add_argument("--checkpoints", default="latest", help="latest, all, or iterations like 2,4")
    parser.add_argument("--baseline", help="model to compare with (default: the run's model.policy)")
    parser.add_argument("--data", help="held-out data source with references (default: the run's eval split)")
    parser.add_argument("--max-prompts", type=int, help="held-out prompts to use (default: eval.max_prompts)")
    parser.add_argument("--no-agreement", action="store_true", help="skip the answer-order agreement")
    parser.add_argument("overrides", nargs="*", help="key.sub=value on top of the run's config")
    return parser.parse_intermixed_args(argv)


def select_checkpoints(run_dir: Path, spec: str) -> list[tuple[int, Path]]:
    """(iteration, folder) of complete checkpoints: 'latest', 'all' or 'N,M'."""
    from cluster.run_dir import latest_checkpoint

    complete = sorted((int(folder.name[5:]), folder) for folder in (run_dir / "checkpoints").glob("iter-*")
                      if (folder / "state.json").exists())
    if not complete:
        raise ConfigError(f"{run_dir} holds no complete checkpoint (checkpoints/iter-N/state.json)")
    if spec == "all":
        return complete
    if spec == "latest":
        return [latest_checkpoint(run_dir)]
    try:
        wanted = [int(part) for part in spec.split(",")]
    except ValueError:
        raise ConfigError(f"--checkpoints {spec!r}: expected latest, all, or iterations like 2,4") from None
    known = dict(complete)
    missing = [n for n in wanted if n not in known]
    if missing:
        raise ConfigError(f"--checkpoints: no complete checkpoint for iterations {missing}; have {sorted(known)}")
    return [(n, known[n]) for n in wanted]


def sampled_prompts(run_dir: Path) -> list[str]:
    """The prompts the run trained on, iteration by iteration, from RUN/samples/iter-N.jsonl."""
    from cluster.run_dir import read_samples

    return [group["prompt"] for groups in read_samples(run_dir).values() for group in groups]


def evaluation_sets(config, run_dir: Path, data: str | None) -> dict:
    from crowdless.evaluation.judge import build_sets

    if data is not None:
        examples = load_prompts(data, prompt_field=config.data.prompt_field,
                                reference_field=config.data.reference_field, on_bad_row=config.data.on_bad_row)[0]
        return {"data": distinct_prompts(examples)[:config.eval.max_prompts]}
    train, held_out, _ = load_prompt_split(config.data, config.run.seed)
    return build_sets(config.eval, config.data.source, train, held_out, sampled_prompts(run_dir), config.run.seed)


class PolicyLikelihood:
    """answer_logprobs(prompts, answers) under one model at a time, loaded from disk in the run's dtype."""

    def __init__(self, config):
        self.config, self.model, self.tokenizer = config, None, None

    def load(self, path: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = getattr(torch, resolve_dtype(self.config.model.dtype))
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)

    def __call__(self, prompts: list[str], answers: list[str]) -> list[float]:
        from crowdless.models.likelihood import answer_logprobs

        return answer_logprobs(self.model, self.tokenizer, prompts, answers, **self._options())

    def tokens(self, prompts: list[str], answers: list[str]) -> list[tuple[list[int], list[float]]]:
        """Each answer's token ids and log-probs (jobs/reference_tokens.py)."""
        from crowdless.models.likelihood import answer_token_logprobs

        return answer_token_logprobs(self.model, self.tokenizer, prompts, answers, **self._options())

    def _options(self) -> dict:
        mc = self.config.model
        return dict(use_chat_template=mc.use_chat_template, max_prompt_tokens=mc.max_prompt_tokens,
                    max_answer_tokens=self.config.eval.max_new_tokens)


def evaluate_run(args: argparse.Namespace) -> Path:
    from safetensors.torch import load_file

    from actors.rollout_worker import RolloutWorker
    from crowdless.evaluation.judge import HeldOutEvaluation, format_sets_table, verdict_line
    from crowdless.models.reward import RewardScorer
    from crowdless.evaluation.report import write_report

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").exists():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
    overrides = list(args.overrides) + ([f"eval.max_prompts={args.max_prompts}"] if args.max_prompts else [])
    config = load_config(run_dir / "config.yaml", overrides)
    checkpoints = select_checkpoints(run_dir, args.checkpoints)
    circular = config.eval.judge_embedding == config.model.embedding
    evaluation = HeldOutEvaluation(config.eval, evaluation_sets(config, run_dir, args.data), run_dir / "eval",
                                   config.run.seed, circular=circular)
    baseline = args.baseline or config.model.policy
    sizes = ", ".join(f"{name} {len(prompts)}" for name, prompts in evaluation.sets.items())
    print(f"[crowdless] evaluating {run_dir}: distinct prompts {sizes}, baseline {baseline}, "
          f"checkpoints {[n for n, _ in checkpoints]}", flush=True)

    worker = RolloutWorker(resolve_model(baseline), config.model, config.rollout, config.run.seed)
    likelihood = PolicyLikelihood(config)
    likelihood.load(resolve_model(baseline))
    summaries = {"baseline": evaluation.evaluate("baseline", worker.generate, likelihood)}
    tables = {}
    for iteration, folder in checkpoints:
        name = f"iter-{iteration}"
        worker.load_weights(load_file(str(folder / "policy" / "model.safetensors")))
        likelihood.load(str(folder / "policy"))
        summaries[name] = evaluation.evaluate(name, worker.generate, likelihood)
        tables[name] = evaluation.compare("baseline", name)
        print(f"{name} vs baseline: {verdict_line(tables[name], circular)}\n"
              f"{format_sets_table(tables[name], circular)}", flush=True)

    agreement = {}
    last_folder = checkpoints[-1][1]
    if not args.no_agreement and config.eval.agreement_prompts and (last_folder / "reward_model").exists():
        reward = RewardScorer(str(last_folder / "reward_model"), config.reward.max_length,
                              config.model.use_chat_template, config.model.max_prompt_tokens)
        ranker_embedder = None
        if config.model.embedding != config.eval.judge_embedding:
            from crowdless.ranking import load_embedder

            ranker_embedder = load_embedder(config.model.embedding)
        agreement = evaluation.agreement(worker.generate, {"reward_model": reward.score}, ranker_embedder)
        print(f"answer order agreement (iteration {checkpoints[-1][0]}): "
              + ", ".join(f"{k} {v:.4f}" for k, v in agreement.items() if isinstance(v, float)), flush=True)
    notes = [f"Run `{run_dir}`, baseline `{baseline}`, distinct prompts per set: {sizes} "
             f"({'--data ' + args.data if args.data else 'trained, unseen and ood sets'}), greedy answers capped at "
             f"{config.eval.max_new_tokens} tokens, judge embedding `{config.eval.judge_embedding}`, "
             f"paired bootstrap with {config.eval.bootstrap_resamples} resamples.",
             "", "Means per system: " + "; ".join(
                 f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items())
                 for name, summary in summaries.items())]
    report = write_report(run_dir / "eval", tables, agreement, run_dir / "metrics.jsonl", notes=notes,
                          circular=circular)
    print(f"[crowdless] report: {report}", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        evaluate_run(args)
    except (ConfigError, DataError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
