"""Policy-phase throughput of the learner: response tokens/s per objective, on a fixed batch.

    python bench/bench_learner.py [--config default] [--objectives grpo,ppo] [--old-logprobs engine,recompute]
        [--prompts N --answers N --tokens N] [--set learner.lora_rank=16 --out learner-lora]

The config's iteration batch (default: 16 prompts x 8 answers of up to 48 tokens, SmolLM2-135M,
the machine's auto dtype): the same rollouts and ranker groups for every objective, one warm-up
phase, then the fastest of --repeats phases, beside the phase's arithmetic floor (its
unavoidable FLOPs over this machine's measured matrix-product rate). ppo trains its value model
too and scores with a reward model; the other policy-gradient objectives take the ranker's scores
(reward.source=ranker). Each of those runs with policy.old_logprobs=engine (the rollouts carry the
sampling policy's log-probs, computed once here as the engine would return them) and =recompute
(the learner repeats that forward pass). dpo trains on the config's pairs of the ranked answers
(every answer kept: 8 answers, interval 4 and 25% noised twins give 13 pairs per prompt, about
what a default iteration makes) and listwise on the ranked lists; they read no sampling
log-probs, so each runs once, and its tokens/s counts every (prompt, answer) row it trains on.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import best_seconds, write_results  # noqa: E402


def make_batch(tokenizer, prompts: int, answers: int, tokens: int, config):
    """Rollouts with random answer tokens (lengths tokens/2..tokens) and ranker groups for them,
    every answer kept, with the config's pairs (interval and noise share) for dpo."""
    import numpy as np

    from algos.pairs import build_pairs
    from crowdless.data.prompt_sets import load_prompts
    from crowdless.models.prompts import encode_prompt
    from crowdless.data.records import RankedGroup, Rollout

    rng = np.random.default_rng(0)
    texts = [e.prompt for e in load_prompts("embedded:chatterbot")[0][:prompts]]
    rollouts, groups = [], []
    for text in texts:
        prompt_ids = encode_prompt(tokenizer, text, config.model.use_chat_template, config.model.max_prompt_tokens)
        for _ in range(answers):
            length = int(rng.integers(tokens // 2, tokens + 1))
            response = rng.integers(100, tokenizer.vocab_size, size=length).tolist()
            rollouts.append(Rollout(text, prompt_ids, response, tokenizer.decode(response), [0.0] * length,
                                    length < tokens))
        scores = rng.dirichlet(np.ones(answers)).tolist()
        texts_sampled = [r.response_text for r in rollouts[-answers:]]
        ranked = sorted(range(answers), key=lambda i: -scores[i])
        pairs = build_pairs([texts_sampled[i] for i in ranked], config.ranking.interval, prompt=text,
                            noise_share=config.ranking.noise_share, rng=rng)
        groups.append(RankedGroup(text, texts_sampled, scores, list(range(answers)), ranked, pairs))
    return rollouts, groups


def with_sampling_logprobs(learner, rollouts):
    """The rollouts with the policy's own log-probs of their answers, as the engine returns them."""
    import dataclasses

    import torch

    from crowdless.learner.policy_gradient import rollout_statistics
    from crowdless.learner.tokens import token_batch

    batch = token_batch(rollouts, learner.pad_id)
    with torch.no_grad():  # in the learner's minibatches: [rows, T, vocab] logits at once can fill a GPU
        logprobs = rollout_statistics(learner.models, batch, None)["old_logprobs"]
    return [dataclasses.replace(r, logprobs=logprobs[i, :len(r.response_ids)].tolist())
            for i, r in enumerate(rollouts)]


@functools.cache
def matmul_flops_per_second(dtype, size: int = 2048) -> float:
    """This machine's dense matrix-product rate in `dtype` (GPU if present): the ceiling under
    which the learner's arithmetic runs. Measured once per dtype, so every objective's floor
    divides by the same rate."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))

    def product():
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()

    product()
    return 2 * size**3 / best_seconds(product, repeats=5)


def trained_rows(learner, rollouts, groups):
    """The token rows the policy phase trains on: the rollouts for a policy-gradient objective,
    each pair's or list's (prompt, answer) rows for a preference objective."""
    from crowdless.learner.preference import preference_items

    if learner.objective.kind == "preference":
        items = preference_items(groups, learner.objective.preference_input)
        return learner.models.text_rows([row for item in items for row in item])
    return rollouts


def floor_flops(learner, rows, config) -> float:
    """The arithmetic a policy phase cannot avoid: per prompt+answer token of the trained rows,
    2 x parameters for the reference forward and, per epoch, 6 x parameters for the policy's
    forward and backward (4 with LoRA, whose frozen weights get no gradient). Padding, the value
    model, the reward model and everything else come on top, so measured time over this floor is
    the overhead."""
    parameters = sum(p.numel() for p in learner.policy.module.parameters())
    tokens = sum(len(r.prompt_ids) + len(r.response_ids) for r in rows)
    per_epoch = 4 if config.learner.lora_rank else 6
    return tokens * parameters * (2 + per_epoch * config.policy.epochs)


def bench_objective(objective: str, old_logprobs: str, args) -> dict:
    from actors.learner_worker import LearnerWorker
    from configs.schema import load_config
    from crowdless.models.loading import resolve_model

    source = "reward_model" if objective == "ppo" else "ranker"
    workload = {"rollout.prompts_per_iteration": args.prompts, "rollout.samples_per_prompt": args.answers,
                "rollout.max_new_tokens": args.tokens}
    config = load_config(args.config, [f"policy.objective={objective}", f"reward.source={source}",
                                       f"policy.old_logprobs={old_logprobs}", *args.set,
                                       *(f"{key}={value}" for key, value in workload.items() if value)])
    path = resolve_model(config.model.policy)
    learner = LearnerWorker(config, path, path, path)
    rollout = config.rollout
    rollouts, groups = make_batch(learner.tokenizer, rollout.prompts_per_iteration, rollout.samples_per_prompt,
                                  rollout.max_new_tokens, config)
    rollouts = with_sampling_logprobs(learner, rollouts)
    rows = trained_rows(learner, rollouts, groups)
    tokens = sum(len(r.response_ids) for r in rows)
    learner.train_policy(rollouts, 0, groups)  # warm-up (and the value model's construction)
    best = float("inf")
    for repeat in range(args.repeats):
        start = time.perf_counter()
        learner.train_policy(rollouts, repeat + 1, groups)
        best = min(best, time.perf_counter() - start)
    floor = floor_flops(learner, rows, config) / matmul_flops_per_second(learner.dtype)
    return {"seconds": best, "response_tokens": tokens, "tokens_per_second": tokens / best,
            "dtype": str(learner.dtype), "floor_seconds": floor, "floor_share": floor / best}


def release_memory() -> None:
    """Frees the last objective's learner (its engines hold reference cycles) before the next
    builds its own: on a GPU, three learners of a 1.5B model do not fit beside each other."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="default", help="a name under configs/ or a YAML path")
    parser.add_argument("--objectives", default="grpo,ppo")
    parser.add_argument("--old-logprobs", default="engine,recompute")
    parser.add_argument("--prompts", type=int, help="default: the config's rollout.prompts_per_iteration")
    parser.add_argument("--answers", type=int, help="default: the config's rollout.samples_per_prompt")
    parser.add_argument("--tokens", type=int, help="default: the config's rollout.max_new_tokens")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for every objective, e.g. learner.lora_rank=16")
    parser.add_argument("--out", default="learner", help="results file name under bench/results/")
    args = parser.parse_args()
    from algos.objectives import get_objective

    figures = {"workload": vars(args)}
    for objective in args.objectives.split(","):
        # dpo and listwise read no sampling log-probs: one run, under the first setting
        preference = get_objective(objective).kind == "preference"
        for old_logprobs in args.old_logprobs.split(",")[:1 if preference else None]:
            name = objective if preference else f"{objective}/{old_logprobs}"
            figures[name] = row = bench_objective(objective, old_logprobs, args)
            release_memory()
            print(f"{name:<20} {row['seconds']:7.1f} s per policy phase  "
                  f"{row['tokens_per_second']:7.1f} response tokens/s  ({row['dtype']})  "
                  f"arithmetic floor {row['floor_seconds']:.1f} s ({100 * row['floor_share']:.0f}%)", flush=True)
    write_results(args.out, figures)


if __name__ == "__main__":
    main()
