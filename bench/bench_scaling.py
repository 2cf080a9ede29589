"""Scaling: rollout tokens/s and learner tokens/s at 1 and 2 workers, on a local Ray cluster.

    python bench/bench_scaling.py [--workers 1,2] [--prompts 8] [--answers 8] [--tokens 48]

Rollout: a WorkerPool of N vLLM RolloutWorkers (pulled chunks, resources.rollout_cpus each)
samples the same seeded prompts; the fastest of --repeats calls. Learner: a LearnerGroup of N
ranks (gloo, ZeRO-2, --learner-cpus each and as many torch threads) runs one GRPO policy
phase on the same batch (bench_learner's random answers with the ranker's scores); the fastest of
--repeats phases after a warm-up. Scaling efficiency = (tokens/s at N) / (N x tokens/s at 1).
On a machine with fewer cores than N workers need, the workers share cores and the efficiency
says so. Writes bench/results/scaling.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_learner import make_batch, with_sampling_logprobs  # noqa: E402
from common import best_seconds, write_results  # noqa: E402


def bench_rollout(config, workers: int, prompts: list[str], repeats: int) -> dict:
    from actors.rollout_worker import RolloutWorker
    from cluster.pool import WorkerPool
    from crowdless.models.loading import resolve_model

    res = config.resources
    pool = WorkerPool(RolloutWorker, (resolve_model(config.model.policy), config.model, config.rollout, 0),
                      workers, num_cpus=res.rollout_cpus, num_gpus=res.rollout_gpus, max_replacements=0,
                      name="rollout", chunks_per_worker=config.rollout.chunks_per_worker)
    samples: list = []

    def sample() -> None:  # seeded: every repeat samples the same answers
        samples[:] = pool.map("generate", prompts, None, False, None, 7)

    try:
        seconds = best_seconds(sample, repeats)
    finally:
        pool.shutdown()
    tokens = sum(len(r.response_ids) for group in samples for r in group)
    return {"seconds": seconds, "tokens": tokens, "tokens_per_second": tokens / seconds}


def bench_learner(config, ranks: int, args, repeats: int) -> dict:
    from actors.learner_worker import LearnerWorker
    from cluster.learner_group import LearnerGroup
    from crowdless.models.loading import resolve_model

    path = resolve_model(config.model.policy)
    config = config.model_copy(update={"resources": config.resources.model_copy(update={"learner_workers": ranks})})
    local = LearnerWorker(config, path, path, path)  # for the batch's tokenizer and sampling log-probs
    rollouts, groups = make_batch(local.tokenizer, args.prompts, args.answers, args.tokens, config)
    rollouts = with_sampling_logprobs(local, rollouts)
    del local
    group = LearnerGroup(config, LearnerWorker, (config, path, path, path, None, None), env={})
    try:
        group.run("train_policy", rollouts, 0, groups)  # warm-up
        calls = iter(range(1, repeats + 1))
        seconds = best_seconds(lambda: group.run("train_policy", rollouts, next(calls), groups), repeats)
    finally:
        group.shutdown()
    tokens = sum(len(r.response_ids) for r in rollouts)
    return {"seconds": seconds, "tokens": tokens, "tokens_per_second": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--answers", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--parts", default="rollout,learner")
    parser.add_argument("--learner-cpus", type=float, default=1.0, help="CPUs (and torch threads) per learner rank")
    args = parser.parse_args()

    import ray

    from configs.schema import load_config
    from crowdless.data.prompt_sets import load_prompts

    counts = [int(n) for n in args.workers.split(",")]
    config = load_config(args.config, [
        "policy.objective=grpo", "reward.source=ranker", f"rollout.prompts_per_iteration={args.prompts}",
        f"rollout.samples_per_prompt={args.answers}", f"rollout.max_new_tokens={args.tokens}",
        f"resources.learner_cpus={args.learner_cpus}"])
    prompts = [e.prompt for e in load_prompts(config.data.source)[0][:args.prompts]]
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    figures: dict = {"workload": vars(args), "host_cpus": os.cpu_count(),
                     "learner_cpus_per_rank": config.resources.learner_cpus}
    for part in args.parts.split(","):
        for count in counts:
            row = (bench_rollout(config, count, prompts, args.repeats) if part == "rollout"
                   else bench_learner(config, count, args, args.repeats))
            figures[f"{part}/{count}"] = row
            base = figures[f"{part}/{counts[0]}"]["tokens_per_second"] / counts[0]
            row["efficiency"] = row["tokens_per_second"] / (count * base)
            print(f"{part:<8} {count} worker(s)  {row['seconds']:7.1f} s  {row['tokens_per_second']:8.1f} tokens/s  "
                  f"efficiency {row['efficiency']:.2f}", flush=True)
    write_results("scaling", figures)


if __name__ == "__main__":
    main()
