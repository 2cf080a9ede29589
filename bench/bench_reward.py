"""Reward-model training pairs/s: crowdless's DeepSpeed learner vs TRL's RewardTrainer.

    pip install trl   # benchmark only; not a runtime dependency
    python bench/bench_reward.py [--model embedded:smollm2-135m-instruct] [--pairs 64] [--batch 8]
        [--set learner.zero_stage=0] [--only crowdless|trl] [--repeats 3] [--out NAME]

Same model, same pairs (chatterbot reference answers vs noised copies), same batch
size and max length; only optimiser steps are timed (after one warm-up step each). The sides
run in turn --repeats times; each side's figure is its fastest run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import write_results  # noqa: E402


def make_pairs(count: int):
    import numpy as np

    from algos.noise import noisy_negative
    from algos.pairs import PreferencePair
    from crowdless.data.prompt_sets import load_prompts

    rng = np.random.default_rng(0)
    examples = [e for e in load_prompts("embedded:chatterbot")[0] if e.reference][:count]
    return [PreferencePair(e.prompt, e.reference, noisy_negative(e.reference, rng), 0, 1, True) for e in examples]


def bench_crowdless(model: str, pairs, batch: int, max_length: int, dtype: str, overrides: list[str]) -> float:
    from actors.learner_worker import LearnerWorker
    from configs.schema import load_config
    from crowdless.models.loading import resolve_model

    config = load_config("default", [f"reward.batch_size={batch}", f"reward.max_length={max_length}",
                                      "reward.eval_fraction=0", "reward.replay_pairs=0", f"model.dtype={dtype}",
                                      "reward.source=reward_model", *overrides])  # the default trains no reward model
    path = resolve_model(model)
    learner = LearnerWorker(config, path, path, path)
    learner.train_reward(pairs[:batch], iteration=0)  # warm-up
    return learner.train_reward(pairs, iteration=1)["rm_pairs_per_second"]


def bench_trl(model: str, pairs, batch: int, max_length: int, dtype: str) -> float:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    from crowdless.models.loading import resolve_model

    path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    network = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32,
                                                                 pad_token_id=tokenizer.pad_token_id)
    rows = [{"prompt": [{"role": "user", "content": p.prompt}],
             "chosen": [{"role": "assistant", "content": p.chosen}],
             "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs]

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.starts = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.starts.append(time.perf_counter())

    timer = StepTimer()
    args = RewardConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch, max_length=max_length,
                        num_train_epochs=1, learning_rate=1e-5, bf16=dtype == "bfloat16", use_cpu=True,
                        report_to=[], logging_steps=10**6, save_strategy="no", dataloader_num_workers=0)
    trainer = RewardTrainer(model=network, args=args, train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer, callbacks=[timer])
    trainer.train()
    end = time.perf_counter()
    timed_pairs = len(pairs) - batch  # the first step is the warm-up
    return timed_pairs / (end - timer.starts[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                        help="auto: bfloat16 where the machine multiplies it natively, else float32")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for crowdless's side, e.g. learner.zero_stage=0")
    parser.add_argument("--only", choices=["crowdless", "trl"], help="run one side")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating between the sides")
    parser.add_argument("--out", default=None, help="results file name under bench/results/ (default reward-DTYPE)")
    args = parser.parse_args()
    from crowdless.models.loading import resolve_dtype

    args.dtype = resolve_dtype(args.dtype)
    pairs = make_pairs(args.pairs)
    figures = {"workload": vars(args)}
    benches = {"crowdless": lambda: bench_crowdless(args.model, pairs, args.batch, args.max_length, args.dtype,
                                                    args.set),
               "trl": lambda: bench_trl(args.model, pairs, args.batch, args.max_length, args.dtype)}
    runs = {side: [] for side in benches if args.only in (None, side)}
    # The sides alternate, so a stretch of load from elsewhere (a VM's stolen CPU time) slows
    # both alike, and each side's figure is its fastest run: the least disturbed.
    for repeat in range(args.repeats):
        for side in list(runs):
            try:
                runs[side].append(benches[side]())
            except ImportError:
                print("TRL is not installed (pip install trl): skipped", flush=True)
                del runs[side]
                continue
            print(f"{side} run {repeat + 1}/{args.repeats}: {runs[side][-1]:.2f} pairs/s", flush=True)
    for side, figures_of_side in runs.items():
        figures[f"{side}_pairs_per_second"] = max(figures_of_side)
        figures[f"{side}_runs"] = figures_of_side
        print(f"{side}: {max(figures_of_side):.2f} pairs/s (fastest of {len(figures_of_side)})", flush=True)
    if len(runs) == 2:
        print(f"crowdless / TRL: {figures['crowdless_pairs_per_second'] / figures['trl_pairs_per_second']:.2f}x")
    write_results(args.out or f"reward-{args.dtype}", figures)


if __name__ == "__main__":
    main()
