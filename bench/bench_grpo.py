"""A GRPO step, crowdless against TRL's GRPOTrainer on the same CPU workload.

    pip install trl   # benchmark only; not a runtime dependency
    python bench/bench_grpo.py [--steps 3] [--prompts 8] [--answers 8] [--tokens 48] [--dtype auto]
        [--only crowdless|trl] [--out NAME]

Workload (issue 9): SmolLM2-135M-Instruct, 8 chatterbot prompts x 8 answers of at most 48 new
tokens per step, KL weight 0.05, learning rate 3e-6. crowdless: real iterations of jobs/train.py
(critic-free GRPO, the ranker's TextRank scores as rewards: vLLM rollout, ranking, policy
update, weight sync to the engine; checkpoint time reported apart, held-out evaluation off).
TRL: GRPOTrainer with transformers generation and a trivial reward function (answer length),
timed per optimizer step (generation, reward, loss, update). The same dtype for both (auto:
bfloat16 where the CPU multiplies it natively, else float32). Writes bench/results/grpo.json
(grpo-crowdless.json / grpo-trl.json with --only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STEP_PHASES = ("rollout", "rank", "policy", "weight_sync")


def bench_crowdless(args) -> list[dict]:
    run_dir = Path(tempfile.mkdtemp(prefix="crowdless-grpo-")) / "run"
    overrides = [f"run.iterations={args.steps}", "eval.every=0", "policy.objective=grpo", "reward.source=ranker",
                 f"rollout.prompts_per_iteration={args.prompts}", f"rollout.samples_per_prompt={args.answers}",
                 f"rollout.max_new_tokens={args.tokens}", "policy.kl_coef=0.05", "policy.lr=3e-6",
                 f"model.dtype={args.dtype}"]
    subprocess.run([sys.executable, "jobs/train.py", "--config", "default", "--run-dir", str(run_dir), *overrides],
                   cwd=ROOT, check=True)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{"step_seconds": sum(row[f"seconds_{p}"] for p in STEP_PHASES),
             "checkpoint_seconds": row["seconds_checkpoint"],
             **{f"{p}_seconds": row[f"seconds_{p}"] for p in STEP_PHASES}} for row in rows if row["iteration"] >= 1]


def bench_trl(args) -> list[float]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from crowdless.data.prompt_sets import load_prompts
    from crowdless.models.loading import resolve_model

    path = resolve_model("embedded:smollm2-135m-instruct")
    prompts = [e.prompt for e in load_prompts("embedded:chatterbot")[0][:args.prompts * args.steps]]

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []

        def on_step_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.seconds.append(time.perf_counter() - self.start)

    def answer_length(completions, **_):
        return [float(len(c[0]["content"] if isinstance(c, list) else c)) for c in completions]

    timer = StepTimer()
    config = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.prompts * args.answers,
                        num_generations=args.answers, max_completion_length=args.tokens, beta=0.05,
                        learning_rate=3e-6, max_steps=args.steps, use_cpu=True, bf16=args.dtype == "bfloat16",
                        report_to=[], logging_steps=10**6, save_strategy="no", dataloader_num_workers=0,
                        temperature=1.0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype))
    trainer = GRPOTrainer(model=model, reward_funcs=answer_length, args=config,
                          processing_class=AutoTokenizer.from_pretrained(path),
                          train_dataset=Dataset.from_list([{"prompt": [{"role": "user", "content": p}]}
                                                           for p in prompts]),
                          callbacks=[timer])
    trainer.train()
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--answers", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    parser.add_argument("--only", choices=["crowdless", "trl"], help="run one side")
    parser.add_argument("--out", default=None,
                        help="results file name under bench/results/ (default grpo, or grpo-SIDE with --only)")
    args = parser.parse_args()
    from crowdless.models.loading import resolve_dtype

    args.dtype = resolve_dtype(args.dtype)
    figures: dict = {"workload": vars(args)}
    if args.only in (None, "crowdless"):
        figures["crowdless"] = rows = bench_crowdless(args)
        for step, row in enumerate(rows, 1):
            print(f"crowdless step {step}: {row['step_seconds']:.1f} s ("
                  + ", ".join(f"{p} {row[f'{p}_seconds']:.1f}" for p in STEP_PHASES)
                  + f"; checkpoint {row['checkpoint_seconds']:.1f} s apart)", flush=True)
    if args.only in (None, "trl"):
        try:
            figures["trl_step_seconds"] = seconds = bench_trl(args)
            print("TRL GRPOTrainer steps: " + ", ".join(f"{s:.1f} s" for s in seconds), flush=True)
        except ImportError:
            print("TRL is not installed (pip install trl): skipped", flush=True)
    write_results(args.out or ("grpo" if args.only is None else f"grpo-{args.only}"), figures)


if __name__ == "__main__":
    main()
